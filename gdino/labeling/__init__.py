"""Labeling: the resumable run from image sources to a project, shared by `gdino label`, the app's jobs and
the Ray driver.

    settings.py     LabelSettings, parse_class_text: what to look for
    label.py        label_images / detect_objects / store_objects: detect (+ segment) and store, one image whole
    loading.py      load_detector(spec), load_segmenter(spec): the one place models are loaded
    inputs.py       find_images: files, folders, patterns and URIs -> image paths
    prefetch.py     Prefetcher: decodes the next images while the model works
    adding.py       add_sources: the one loop that adds images to a project (copy or reference)
    plan.py         plan_sources: which inputs are new, which are in the project, which are done
    run.py          the plain engine's run: add the plan's files, label them, count what happened
    ray_driver.py   the Ray engine's driver: tasks out, result rows stored in batches
    ray_engine.py   the actors (ray_session.py: the Ray they run on); results.py: result rows and shards
    import_results.py   a folder of result shards into a project

Nothing here imports torch or Ray at import time, nor reads an argparse namespace: the callers turn their
flags or widgets into these typed settings.
"""

from .label import LabelSummary, detect_objects, label_images, makes_masks, store_objects
from .settings import LabelSettings, parse_class_text

__all__ = ["LabelSettings", "LabelSummary", "detect_objects", "label_images", "makes_masks", "parse_class_text",
           "store_objects"]
