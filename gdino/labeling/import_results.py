"""A folder of result shards (`gdino label --engine ray --results DIR`) into a project, a shard per
transaction, each image's objects stored the way `gdino label` stores them. Images the project lacks are
added from their source file first (`add_sources`), or, for object-store images, by their URI with their
row. Images already labeled are left as they are, so importing twice adds nothing; a damaged shard is
reported and the others are imported."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..sources import SourceError, check_uri, is_uri
from ..store import ProjectError, StoreError
from .adding import FAILED, Source, add_sources, held_paths
from .interrupts import sigint_deferred
from .progress import QUIET, Reporter
from .results import NEW_IMAGE, ShardError, read_shards, store_row
from .settings import LabelSettings


@dataclass
class ImportReport:
    counts: dict[str, int] = field(default_factory=lambda: {"labeled": 0, "kept": 0, "gone": 0})  # store_row's outcomes
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (name, why); a later row may succeed
    bad_shards: list[ShardError] = field(default_factory=list)


def import_results(project, folder: str, shards: int, *, copy: bool = True, reporter: Reporter = QUIET) -> ImportReport:
    """Store the rows of every shard in `folder` (a local folder or a URI, `results.shard_paths`; `shards` of
    them, for the progress) into `project`. copy: copy the files the project lacks (else reference them).
    Raises StoreError when the project fails; the shards stored before stay."""
    report = ImportReport()
    classes_added: set[str] = set()
    by_path = held_paths(project)
    with reporter.stage("importing", shards, unit="shard") as stage:
        for rows in read_shards(folder):
            stage.advance()
            if isinstance(rows, ShardError):
                report.bad_shards.append(rows)
                stage.failed(rows.shard, rows.why)
                continue
            _add_missing(project, rows, copy, by_path, report.failed)
            with sigint_deferred(), project.batch():  # a shard's results per transaction
                for row in rows:
                    _import_row(project, row, by_path, report, classes_added)
    return report


def _add_missing(project, rows: list[dict], copy: bool, by_path: dict, failed: dict) -> None:
    """The local files of a shard's rows that the project lacks, added as `gdino label` adds them, each in
    its own transaction, before the shard's batch (a batch does not take back files it placed)."""
    sources = [Source(Path(row["key"]), key=row["key"]) for row in rows if not row["error"] and not is_uri(row["key"])]
    names = {row["key"]: row["name"] for row in rows}
    for outcome in add_sources(project, sources, copy=copy, by_path=by_path).outcomes:
        key = outcome.source.key
        if outcome.status == FAILED:
            failed[key] = (names[key], f"not in the project, and its file cannot be added: {outcome.why}")
        else:
            by_path[str(outcome.record.path)] = outcome.record


def _import_row(project, row: dict, by_path: dict, report: ImportReport, classes_added: set) -> None:
    """One result row into the project; its image is in it already (`_add_missing`), or is an object-store
    image, added by its URI with the size the actor read. A damaged row is listed as failed."""
    failed = report.failed
    if row["error"]:
        failed.setdefault(row["key"], (row["name"], row["error"]))
        return
    if is_uri(row["key"]):  # as add_reference stores it: one spelling per object
        try:
            row = {**row, "key": check_uri(row["key"])}
        except SourceError as err:
            failed[row["key"]] = (row["name"], str(err))
            return
    record = project.image_by_key(row["key"]) or by_path.get(row["key"])
    if record is None and not is_uri(row["key"]):
        return  # its file could not be added: listed by _add_missing
    try:
        if row["run"] not in classes_added:  # as `gdino label`: a run's classes are the dataset's
            project.add_classes(LabelSettings.from_run(json.loads(row["run"])).labels())
            classes_added.add(row["run"])
        report.counts[store_row(project, record.id if record is not None else NEW_IMAGE, row)] += 1
    except StoreError:  # the project failed (busy, disk full): the import stops, this shard's batch is not stored
        raise
    except ProjectError as err:  # the project refuses the row's content (a size, a mask): its own words say why
        failed[row["key"]] = (row["name"], f"a damaged result row: {err}")
        return
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # json, a run or objects of the wrong shape
        failed[row["key"]] = (row["name"], f"a damaged result row ({type(err).__name__}: {err})")
        return
    failed.pop(row["key"], None)
