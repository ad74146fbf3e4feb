"""Export: the project (or its reviewed images) as a zip in one of gdino.formats.FORMATS, for the page's download.
The message says what was left out and why (skipped images, unmapped phrases, files this server may not read,
YOLO's simplified masks)."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

from gdino.formats import FORMATS, dataset_from_project, export_zip
from gdino.processing import ImageError
from gdino.store import ProjectError

from ..app import App

EXPORT_PREFIX = "gdino-app-export-"  # not the library's own temporary folders (gdino-export-)
EXPORT_KEEP_S = 3600  # an export's zip stays this long for its download (gradio copies it when it sends it)


def export(app: App, state: dict, fmt: str, reviewed_only: bool) -> tuple[str, str]:
    """(the zip's path, a message). The zip's name carries no project id (the id opens the project); zips
    of earlier exports, of anyone, are deleted once they are an hour old."""
    if fmt not in FORMATS:
        raise ProjectError(f"unknown format {fmt!r}")
    project = app.sessions.project(state)
    left_out: dict[str, int] = {}
    not_exported: dict[str, list[str]] = {}
    dataset = dataset_from_project(project, reviewed_only=reviewed_only, left_out=left_out, not_exported=not_exported)
    if not dataset.images:
        what = "reviewed images" if reviewed_only else "images"
        raise ProjectError(f"nothing to export: the project has no {what} yet" + _not_exported(not_exported))
    _remove_old_exports()
    dataset, refused = _readable(app, project, dataset)
    if not dataset.images:
        raise ProjectError("nothing to export: this server may read none of the images' files:\n"
                           + "\n".join(f"- {n}: {why}" for n, why in refused))
    skipped: list[tuple[str, str]] = []
    inexact: list[tuple[str, int | None, float]] = []
    out = Path(tempfile.mkdtemp(prefix=EXPORT_PREFIX)) / f"gdino-{fmt}.zip"
    path = str(export_zip(dataset, out, fmt, skipped=skipped, inexact=inexact))
    message = f"exported {len(dataset.images) - len(skipped)} image(s) as {fmt}" + _not_exported(not_exported)
    if inexact:
        worst = sorted(inexact, key=lambda item: item[2])[:INEXACT_SHOWN]
        named = ", ".join(f"{name} object {i} (IoU {iou:.2f})" for name, i, iou in worst)
        message += (f"; YOLO keeps one polygon per object, so {len(inexact)} mask(s) too detailed for one polygon "
                    f"were simplified and come back approximate, worst: {named}"
                    + (", ..." if len(inexact) > INEXACT_SHOWN else "") + ". Export COCO for exact masks")
    skipped = refused + skipped
    if left_out:
        phrases = ", ".join(f"{phrase!r} ({n})" for phrase, n in left_out.items())
        message += (f"; {sum(left_out.values())} object(s) labeled with free-text phrases not mapped to a class were "
                    f"left out: {phrases}. Map them to classes (Free text: map a found phrase) and export again")
    if skipped:
        message += "; left out, they cannot be exported:\n" + "\n".join(f"- {n}: {why}" for n, why in skipped)
    return path, message


INEXACT_SHOWN = 3  # the worst approximate YOLO-seg masks named in the export's message


def _not_exported(not_exported: dict[str, list[str]]) -> str:
    """"; left out: ..." for the images an export leaves out by their status ("" when none)."""
    parts = []
    if not_exported.get("skipped"):
        parts.append(f"{len(not_exported['skipped'])} image(s) marked skipped (skipped images are never exported: "
                     "mark one reviewed to include it)")
    others = sum(len(names) for status, names in not_exported.items() if status != "skipped")
    if others:
        parts.append(f"{others} image(s) not reviewed yet (you chose reviewed images only)")
    return "; left out: " + " and ".join(parts) if parts else ""


def _readable(app: App, project, dataset):
    """(the dataset with each image's file as this server may read it: `Sessions.image_path`, checked now;
    [(file name, why)] of those it may not read, left out). A project's database alone never makes the
    server read a file outside its folders, or contact a store outside --allow-uri."""
    records = {r.id: r for r in project.images()}
    kept, refused = [], []
    for image in dataset.images:
        try:
            location = app.sessions.image_path(project, records[image.id])
        except ImageError as err:
            why = str(err)
            refused.append((image.file_name, why.removeprefix(f"{records[image.id].name}: ")))
            continue
        uri = location if isinstance(location, str) else None
        kept.append(dataclasses.replace(image, uri=uri, path=None if uri is not None else Path(location)))
    return dataclasses.replace(dataset, images=tuple(kept)), refused


def _remove_old_exports() -> None:
    for folder in Path(tempfile.gettempdir()).glob(EXPORT_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if time.time() - folder.stat().st_mtime > EXPORT_KEEP_S:
                shutil.rmtree(folder)
