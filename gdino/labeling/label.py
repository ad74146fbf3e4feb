"""Auto-labeling a project's images: detect (and segment), then store the model's objects.

One code path for the app and the command line:
    settings = LabelSettings(classes=parse_class_text("cat, remote control"), masks=True)
    summary = label_images(project, detector, image_ids, settings, segmenter=seg)
Manual objects are never touched; an image's model objects are replaced in one transaction together
with the settings that produced them, so a crash mid-run leaves every image either before or after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..checks import as_class_name
from ..masks import mask_to_rle
from ..processing import ImageError
from ..sources import read_image
from ..store import ProjectError
from .settings import LabelSettings


@dataclass
class LabelSummary:
    labeled: list[int] = field(default_factory=list)  # image ids
    objects: int = 0  # stored
    decided: int = 0  # found but left out: a person had deleted, changed or drawn that box (Project.replace_model_objects)
    failed: dict[int, str] = field(default_factory=dict)  # image id -> why
    kept: list[int] = field(default_factory=list)  # images left alone: a person decided on them meanwhile
    gone: list[int] = field(default_factory=list)  # images removed from the project while the run went on
    cancelled: bool = False


def label_images(
    project,
    detector,
    image_ids: Iterable[int],
    settings: LabelSettings,
    *,
    segmenter=None,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    images: Callable[[int], object] | None = None,
    if_status: Iterable[str] | None = None,
    add_all_classes: bool = True,
    keep_phrases: bool = False,
) -> LabelSummary:
    """Detect in each image and store the results as its model objects.

    images: optional image_id -> pixels (a PIL image, e.g. decoded ahead in another thread); default
    reads the project's file. A bad image is reported in `failed` and the run goes on; `should_stop`
    is checked between batches (the images done so far stay done).
    if_status: store an image's results only if its status is still one of these (checked in the same
    transaction as the write); a run over "unlabeled" images passes ("unlabeled",) so that an image a
    person marked skipped or reviewed meanwhile keeps that decision (listed in `kept`).
    add_all_classes: add every class of `settings` to the project up front (the command line: the
    classes someone listed are the dataset's categories), or, when False, only the classes that a stored
    detection has (the app: a prompt tried and dropped leaves the project's class list as it was).
    keep_phrases: free text only. True: the phrases found label their objects as phrases, outside the class
    list, until a person maps them to classes (`Project.map_phrase`; the app). False: they become classes
    (the command line, where `--prompt` asks for exactly that dataset).
    """
    if settings.masks and segmenter is None and not makes_masks(detector):
        raise ValueError("masks were asked for but no SAM model is loaded")
    if settings.masks and segmenter is not None and hasattr(segmenter, "using") and not project.read_only:
        from ..sam.store import project_store

        segmenter = segmenter.using(project_store(project.path))  # its embeddings stay, for the clicks of review
    if settings.classes is not None and add_all_classes:
        project.add_classes(settings.labels())  # a no-op for classes the project has
    ids = list(image_ids)
    summary = LabelSummary()
    read = images or (lambda image_id: read_image(project.image(image_id).location))
    for start in range(0, len(ids), batch_size):
        if should_stop is not None and should_stop():
            summary.cancelled = True
            break
        batch = ids[start:start + batch_size]
        pixels, ok = [], []
        for image_id in batch:
            try:
                pixels.append(read(image_id))
                ok.append(image_id)
            except (OSError, ImageError) as err:
                summary.failed[image_id] = str(err)
            except ProjectError:
                if project.has_image(image_id):
                    raise
                summary.gone.append(image_id)
        for image_id, found in zip(ok, detect_objects(detector, pixels, settings, segmenter=segmenter,
                                                      batch_size=batch_size), strict=True):
            if isinstance(found, ImageError):
                summary.failed[image_id] = str(found)
                continue
            try:
                stored = _store(project, image_id, found, settings, if_status=if_status, keep_phrases=keep_phrases)
            except ProjectError:
                if not project.has_image(image_id):  # removed while the model looked at it: nothing to store
                    summary.gone.append(image_id)
                    continue
                raise
            if stored is None:
                summary.kept.append(image_id)
                continue
            summary.labeled.append(image_id)
            summary.objects += len(stored)
            summary.decided += len(found) - len(stored)
        if progress is not None:
            progress(min(start + batch_size, len(ids)), len(ids))
    return summary


def makes_masks(detector) -> bool:
    """Whether the detector's results carry their own masks (SAM 3 does; Grounding DINO does not)."""
    return getattr(detector, "family", None) == "sam3"


def detect_objects(detector, pixels: Sequence, settings: LabelSettings, *, segmenter=None,
                   batch_size: int = 1) -> list[list[dict] | ImageError]:
    """Detect (and segment) in decoded images -> per image, its objects as `store_objects` takes them, or
    the ImageError that image raised (the other images of the batch are kept).

    pixels: upright RGB images (`to_rgb`'s frame). Objects: {"box": [x0, y0, x1, y1] in pixels of that
    image, "class_name", "score", "mask": COCO RLE of the upright image or None}. Both engines (the
    plain command and `--engine ray`) call this, so that they cannot drift."""
    options = dict(box_threshold=settings.box_threshold, text_threshold=settings.text_threshold,
                   nms_iou=settings.nms_iou, agnostic_nms_iou=settings.agnostic_nms_iou)
    if not pixels:
        return []
    try:
        results: list = detector.detect_batch(list(pixels), settings.classes, prompt=settings.prompt,
                                              batch_size=batch_size, **options)
    except ImageError:  # find the one bad image, keep the others
        results = []
        for px in pixels:
            try:
                results.append(detector.detect_batch([px], settings.classes, prompt=settings.prompt, **options)[0])
            except ImageError as err:
                results.append(err)
    out: list[list[dict] | ImageError] = []
    for px, dets in zip(pixels, results, strict=True):
        if isinstance(dets, ImageError):
            out.append(dets)
            continue
        masks = None
        if settings.masks and len(dets):  # a detector that makes masks (SAM 3) gives them; else SAM draws them
            masks = dets.mask if dets.mask is not None else segmenter.segment(px, dets.xyxy).masks
        out.append([{"box": [float(v) for v in dets.xyxy[k]], "class_name": str(dets.data["class_name"][k]),
                     "score": float(dets.confidence[k]), "mask": None if masks is None else mask_to_rle(masks[k])}
                    for k in range(len(dets))])
    return out


def store_objects(project, image_id: int, objects: Sequence[dict], settings: LabelSettings, *,
                  if_status: Iterable[str] | None = None, keep_phrases: bool = False) -> bool:
    """Store one image's model objects (as `detect_objects` makes them) with the run's settings, one
    transaction; the classes (free text: the phrases) they use join the project in it. Returns False when
    `if_status` kept the image as it was. Raises ProjectError (e.g. the image is gone)."""
    return _store(project, image_id, objects, settings, if_status=if_status, keep_phrases=keep_phrases) is not None


def _store(project, image_id: int, objects: Sequence[dict], settings: LabelSettings, *,
           if_status: Iterable[str] | None = None, keep_phrases: bool = False) -> list | None:
    """store_objects -> the objects stored (a box a person decided on is left out), or None."""
    if settings.prompt is not None:  # a found phrase is a piece of the prompt: it may hold a line break or a tab
        objects = [{**o, "class_name": as_class_name(o["class_name"])} for o in objects]
    found = {o["class_name"] for o in objects}
    if settings.prompt is None:
        classes, phrases = [c for c in settings.labels() if c in found], []
    else:
        classes, phrases = ([], sorted(found)) if keep_phrases else (sorted(found), [])
    return project.replace_model_objects(image_id, list(objects), run=settings.to_run(), if_status=if_status,
                                         classes=classes, phrases=phrases)
