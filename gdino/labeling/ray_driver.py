"""The Ray engine's driver: run.label_ids (and the object-store images in run.uris) as tasks to the actors
(`ray_engine.label_on_ray`); this process stays the only writer of the project. The result rows that
stream back are stored a batch per transaction (`Project.batch`; each image still whole and only while it
is still unlabeled, as the plain engine stores it: `results.store_row`), or, with `options.results`, left
in the shards the actors wrote. Object-store images are added by their URI with their result."""

from __future__ import annotations

import json
import time

from ..sources import name_of
from ..store import ProjectError, StoreError
from .interrupts import sigint_deferred
from .loading import DetectorSpec, SegmenterSpec
from .progress import QUIET, Reporter
from .ray_session import RayOptions
from .results import NEW_IMAGE
from .run import LabelRun
from .settings import LabelSettings

STORE_EVERY_S = 1.0  # the driver stores the results that came in, one transaction, at least this often
STORE_AT_MOST = 256  # ... or once this many are waiting


def label_on_ray_driver(project, settings: LabelSettings, detector: DetectorSpec, segmenter: SegmenterSpec | None,
                        options: RayOptions, run: LabelRun, *, reporter: Reporter = QUIET) -> None:
    """Label the run's images on Ray actors that load `detector` (and `segmenter`), counting into `run`. A Ray
    job that fails midway sets run.aborted; what was stored before stays (a re-run resumes)."""
    from .ray_engine import RayRunError, Task, label_on_ray
    from .results import done_keys

    records = run.drop_gone(project)
    tasks = [Task(i, run.keys.get(i, str(records[i].location)), records[i].name, str(records[i].location))
             for i in run.label_ids]
    tasks += [Task(NEW_IMAGE, uri, name_of(uri), uri) for uri in run.uris]
    if options.results is not None:  # resume: what the folder holds is done
        done = done_keys(options.results)
        run.kept = sum(task.key in done for task in tasks)
        tasks = [task for task in tasks if task.key not in done]
    elif settings.classes is not None:
        project.add_classes(settings.labels())  # as label_images does: the listed classes are the dataset's
    start = time.perf_counter()
    store = _Storer(project, run)
    with reporter.stage("labeling on ray", len(tasks)) as stage:

        def on_row(row: dict) -> None:
            if run.first_result is None:
                run.first_result = time.perf_counter() - start
            if row["error"]:
                run.fail(stage, row["name"], row["error"])
            elif options.results is not None:
                run.labeled += 1
            else:
                store.waiting.append(row)
                if len(store.waiting) >= STORE_AT_MOST or time.monotonic() - store.stored_at >= STORE_EVERY_S:
                    store.flush()
            stage.advance()
            stage.count_failed(len(run.failed))

        try:
            label_on_ray(tasks, detector, segmenter, settings.to_run(), options, on_row)
        except RayRunError as err:
            run.aborted = str(err)
        finally:
            store.flush()  # what came in before an error or Ctrl-C is kept
    run.seconds = time.perf_counter() - start


class _Storer:
    """The rows that came in, stored together in one transaction."""

    def __init__(self, project, run: LabelRun):
        self.project, self.run = project, run
        self.waiting: list[dict] = []
        self.stored_at = time.monotonic()

    def flush(self) -> None:
        from .results import store_row

        if not self.waiting:
            return
        run = self.run
        with sigint_deferred(), self.project.batch():
            for row in self.waiting:
                try:
                    outcome = store_row(self.project, int(row["image_id"]), row)
                except StoreError:  # the project failed (disk full): the batch is lost, the run stops
                    raise
                except ProjectError as err:  # this row's own content (a box outside its image): listed, not stored
                    run.failed.append((row["name"], str(err)))
                    continue
                if outcome == "labeled":
                    run.labeled += 1
                    run.objects += len(json.loads(row["objects"]))
                    run.added += int(row["image_id"]) == NEW_IMAGE
                elif outcome == "kept":
                    run.note_kept(self.project, int(row["image_id"]))
                elif outcome == "gone":
                    run.gone.append(row["name"])
        self.waiting.clear()
        self.stored_at = time.monotonic()
