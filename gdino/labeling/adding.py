"""The one loop that adds image files to a project: `gdino label`, `gdino import-results` and the app's
uploads and server folders all call `add_sources`.

Each source is added in its own transaction (Ctrl-C waits for it), so an interrupted loop leaves every
image whole and the next run finds the ones added. A source the project holds already (by its key, or by
its path) is not added again; a bad file is reported with its reason and the loop goes on; a failing
project (busy, disk full: StoreError) stops it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..processing import ImageError
from ..sources import size_of
from ..store import ImageRecord, ProjectError, StoreError
from .interrupts import sigint_deferred

ADDED, THERE, REMOVED, FAILED = "added", "there", "removed", "failed"


@dataclass(frozen=True)
class Source:
    """One image to add. location: a local file (copied, or with copy=False referenced where it lies) or an
    object-store URI (str; always referenced, its size fetched here). key: how the image is found again
    (`Project.image_by_key`; the CLI: the input path; the app: the content's digest), None for none.
    name: its name in the project (None: the file's own; a taken name gets a suffix)."""

    location: Path | str
    key: str | None = None
    name: str | None = None

    @property
    def is_uri(self) -> bool:
        return isinstance(self.location, str)


@dataclass(frozen=True)
class Outcome:
    """What became of one source. status: ADDED (new in the project), THERE (it held the image already, or
    another writer added it while this loop ran), REMOVED (removed from the project earlier: left out, with
    skip_removed) or FAILED (`why` says why: the error's message)."""

    source: Source
    status: str
    record: ImageRecord | None = None  # ADDED and THERE
    why: str = ""


@dataclass
class AddReport:
    """The outcomes, in the order of the sources."""

    outcomes: list[Outcome] = field(default_factory=list)

    def having(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def added(self) -> list[Outcome]:
        return self.having(ADDED)

    @property
    def there(self) -> list[Outcome]:
        return self.having(THERE)

    @property
    def failed(self) -> list[Outcome]:
        return self.having(FAILED)


def held_paths(project) -> dict[str, ImageRecord]:
    """`add_sources`'s by_path for a project: its images that have a path, by that absolute path (str)."""
    return {str(r.path): r for r in project.images() if r.path is not None}


def add_sources(project, sources: Iterable[Source], *, copy: bool = True,
                by_path: Mapping[str, ImageRecord] | None = None, skip_removed: bool = False,
                each: Callable[[Outcome], None] | None = None) -> AddReport:
    """Add `sources` to `project` (a `Project`), one transaction each, in order.

    by_path: images the project holds, by their absolute path (str): a source whose location is among them
    is THERE (images referenced in place, or added without a key). skip_removed: leave out sources whose key
    names an image removed from the project (`Project.removed_keys`). each: called with every outcome as it
    happens (progress, messages). Raises StoreError when the project itself fails; what was added stays."""
    sources = list(sources)
    removed = set() if not skip_removed else project.removed_keys(s.key for s in sources if s.key is not None)
    report = AddReport()
    for source in sources:
        outcome = _add_one(project, source, copy, by_path or {}, removed)
        report.outcomes.append(outcome)
        if each is not None:
            each(outcome)
    return report


def _add_one(project, source: Source, copy: bool, by_path: Mapping[str, ImageRecord], removed: set[str]) -> Outcome:
    try:
        record = project.image_by_key(source.key) if source.key is not None else None
        record = record or by_path.get(str(source.location))
        if record is not None:  # held already, or another run added it since the caller looked
            return Outcome(source, THERE, record)
        if source.key is not None and source.key in removed:
            return Outcome(source, REMOVED)
        size = size_of(source.location) if source.is_uri else None  # fetched (and decoded) outside the deferral
        with sigint_deferred():  # the image and the note of its source: one transaction, both or neither
            if size is not None:
                record = project.add_reference(source.location, *size, name=source.name, key=source.key)
            else:
                record = project.add_image(source.location, copy=copy, name=source.name, key=source.key)
    except StoreError:  # the project failed (busy, disk full): the loop stops
        raise
    except (ImageError, OSError, ProjectError) as err:  # this file (unreadable, a name or size the store refuses)
        return Outcome(source, FAILED, why=str(err))
    return Outcome(source, THERE if record.existed else ADDED, record)  # existed: added by another run meanwhile
