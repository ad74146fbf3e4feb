"""The plain engine's run over a plan: add its new files (`add_planned`), then label its images in this
process (`label_plain`), counting what happened in a `LabelRun` for the report. Resumable: every image is
stored whole, and a re-run's plan finds what this one did. The Ray engine fills the same `LabelRun`
(`ray_driver.label_on_ray_driver`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..processing import ImageError
from ..sources import read_image
from ..store import ImageRecord, ProjectError
from .adding import ADDED, FAILED, THERE, Outcome, Source, add_sources
from .label import label_images
from .plan import Plan
from .prefetch import Prefetcher
from .progress import QUIET, Reporter, Stage
from .settings import LabelSettings


@dataclass
class LabelRun:
    """What a run did, for its report; image names as the project shows them."""

    added: int = 0
    added_elsewhere: int = 0  # files another run (or the app) added while this one went on: not counted as added
    labeled: int = 0
    objects: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    label_ids: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # image id -> its name, for the report
    uris: list[str] = field(default_factory=list)  # --engine ray: object-store images, added when their result comes
    keys: dict[int, str] = field(default_factory=dict)  # image id -> its source (the input file), where known
    kept: int = 0  # images a person marked (skipped, reviewed) while the run went on: left as they were
    labeled_elsewhere: int = 0  # images another run labeled first while this one went on
    gone: list[str] = field(default_factory=list)  # images removed from the project (gdino rm, the app) meanwhile
    seconds: float = 0.0  # labeling only
    first_result: float | None = None  # --engine ray: seconds to the first result (Ray's and the actors' start)
    aborted: str | None = None  # --engine ray: why the Ray job failed before the end

    def drop_gone(self, project) -> dict[int, ImageRecord]:
        """Leave out of label_ids the images removed from the project already (named in `gone`) -> the
        project's images by id. Both engines start with it."""
        records = {r.id: r for r in project.images(order="added")}
        self.gone = [self.names[image_id] for image_id in self.label_ids if image_id not in records]
        self.label_ids = [image_id for image_id in self.label_ids if image_id in records]
        return records

    def note_kept(self, project, image_id: int) -> None:
        """An image this run did not store because it is not unlabeled any more: labeled by another run
        ("auto"), or decided by a person."""
        if status_of(project, image_id) == "auto":
            self.labeled_elsewhere += 1
        else:
            self.kept += 1

    def fail(self, stage: Stage, name: str, err: object) -> None:
        self.failed.append((name, str(err)))
        stage.failed(name, err)


def add_planned(project, plan: Plan, run: LabelRun, *, copy: bool = True, defer_uris: bool = False,
                reporter: Reporter = QUIET) -> None:
    """Add the plan's new files (a bad one is reported and left out: the next run tries it again) and list
    the ids to label in run.label_ids, in input order. Object-store URIs are referenced, never copied:
    measured here (fetched once), or with defer_uris (Ray) listed in run.uris, to be added by the driver
    when the actor that read them sends their result."""
    new = sum(isinstance(item, (Path, str)) for item in plan.todo)
    with reporter.stage("adding", new, show_empty=False) as stage:
        for item in plan.todo:
            if isinstance(item, ImageRecord):
                _to_label(run, item, plan.sources.get(item.id))
            elif isinstance(item, str) and defer_uris:
                run.uris.append(item)
                stage.advance()
            else:
                add_sources(project, [Source(item, key=str(item))], copy=copy,
                            each=lambda outcome: _count(run, stage, outcome))
                stage.advance()


def _count(run: LabelRun, stage: Stage, outcome: Outcome) -> None:
    if outcome.status == FAILED:
        run.fail(stage, shown(outcome.source.location), outcome.why)
        return
    run.added += outcome.status == ADDED
    run.added_elsewhere += outcome.status == THERE
    _to_label(run, outcome.record, str(outcome.source.location))


def _to_label(run: LabelRun, record: ImageRecord, key: str | None) -> None:
    run.label_ids.append(record.id)
    run.names[record.id] = record.name
    if key is not None:
        run.keys[record.id] = key


def label_plain(project, detector, segmenter, settings: LabelSettings, run: LabelRun, *, batch_size: int = 1,
                reporter: Reporter = QUIET) -> None:
    """Label run.label_ids in this process (`label_images`), decoding ahead in a thread; an image is stored
    only while it is still unlabeled (a person's decision made meanwhile is kept)."""
    records = run.drop_gone(project)
    items = [(image_id, records[image_id].location) for image_id in run.label_ids]
    start = time.perf_counter()
    with (reporter.stage("labeling", len(items)) as stage,
          Prefetcher(items, depth=2 * batch_size + 2, decode=read_image) as prefetch):

        def read(image_id: int):
            try:
                return prefetch(image_id)
            except (ImageError, OSError) as err:  # reported now; label_images records it and goes on
                if not project.has_image(image_id):  # removed meanwhile (gdino rm): not a failure of the file
                    raise ProjectError(f"image {image_id} was removed from the project") from None
                run.fail(stage, records[image_id].name, err)
                raise

        summary = label_images(project, detector, run.label_ids, settings, segmenter=segmenter, batch_size=batch_size,
                               progress=lambda done, _total: stage.reach(done), images=read, if_status=("unlabeled",))
    run.seconds = time.perf_counter() - start
    run.labeled, run.objects = len(summary.labeled), summary.objects
    for image_id in summary.kept:  # not unlabeled any more: another run labeled it, or a person decided
        run.note_kept(project, image_id)
    run.gone += [records[image_id].name for image_id in summary.gone]
    reported = {name for name, _ in run.failed}
    for image_id, why in summary.failed.items():  # failures inside the model call were not seen by `read`
        if not project.has_image(image_id):
            run.gone.append(records[image_id].name)
        elif records[image_id].name not in reported:
            run.failed.append((records[image_id].name, why))


def status_of(project, image_id: int) -> str | None:
    """The image's status now; None when it was removed meanwhile."""
    try:
        return project.image(image_id).status
    except ProjectError:
        return None


def shown(location: Path | str) -> str:
    """A file's name in messages: relative to the working directory where it is under it; a URI as it is."""
    if isinstance(location, str):
        return location
    try:
        return str(location.relative_to(Path.cwd()))
    except ValueError:
        return str(location)
