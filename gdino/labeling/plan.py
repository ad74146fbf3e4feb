"""A run's plan: which of its inputs are new files, which are images of the project still to label, which
are done, and which a person removed. What makes a re-run resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..store import ImageRecord


@dataclass
class Plan:
    """The images a run works on, in input order: files to add, and images already in the project."""

    todo: list[Path | str | ImageRecord] = field(default_factory=list)  # to add (Path, or a URI: str) or to label
    done: int = 0  # inputs already in the project and no longer unlabeled: skipped
    sources: dict[int, str] = field(default_factory=dict)  # image id -> the input it was found by (todo records)
    removed: int = 0  # inputs whose image a person removed from the project: left out


def plan_sources(project, sources: list[Path | str], *, add_removed: bool = False) -> Plan:
    """Match each input (`find_images`' paths and URIs) to the image it became in an earlier run: through the
    source recorded in the project (copies), or the image's own path (--no-copy, or a file inside the
    project). project: a `Project`, or None when there is none yet (every input is new); no inputs: the
    project's own unlabeled images. add_removed: plan inputs whose image was removed as new files."""
    plan = Plan()
    if project is None:
        plan.todo = list(sources)
        return plan
    records = {r.id: r for r in project.images(order="added")}
    if not sources:  # no inputs: the project's own unlabeled images
        plan.todo = [r for r in records.values() if r.status == "unlabeled"]
        plan.done = len(records) - len(plan.todo)
        return plan
    by_path = {r.path: r for r in records.values()}
    removed = set() if add_removed else project.removed_keys(map(str, sources))
    seen: set[int] = set()
    for source in sources:
        record = project.image_by_key(str(source)) or by_path.get(source)
        if record is None and str(source) in removed:
            plan.removed += 1
        elif record is None:
            plan.todo.append(source)
        elif record.id not in seen:
            seen.add(record.id)
            if record.status == "unlabeled":
                plan.todo.append(record)
                plan.sources[record.id] = str(source)
            else:
                plan.done += 1
    return plan
