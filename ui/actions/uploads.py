"""Images into the visitor's project: uploads (images, zips of images / COCO / YOLO), the example photos, and
server folders (only under --allow-dir). Messages name files as the visitor chose them, never a server path."""

from __future__ import annotations

import contextlib
import re
import zipfile
from pathlib import Path

from gdino.formats.importing import IMAGE_SUFFIXES, file_digest, import_zip
from gdino.labeling.adding import ADDED, THERE, Source, add_sources, held_paths
from gdino.store import ProjectError

from ..app import App
from ..app_config import AppConfig
from ..files import ASSETS, EXAMPLES


def add_uploads(app: App, state: dict, files: list[str] | None) -> str:
    """Uploaded files (images, or zips of images / COCO / YOLO) into the visitor's project.

    The limits (files per upload, size per file, size in all, archive members across all zips) are
    checked on the whole upload before anything enters the project: over any of them, nothing is added
    and the uploaded copies are deleted. An image whose content is already in the project is reported,
    not added again (the upload box re-sends earlier files). Messages name the files as the visitor
    chose them, never a server path."""
    if not files:
        raise ProjectError("no files were uploaded")
    paths = [Path(f) for f in files]
    try:
        _check_upload_limits(app.config, paths)
    except ProjectError:
        _discard(paths)
        raise
    project = app.sessions.project(state)
    added, already, problems = 0, [], []
    for path in paths:
        shown = _original_name(path)
        if path.suffix.lower() == ".zip":
            try:
                report = import_zip(project, path, key="zip-sha256:" + file_digest(path))
                added += report.images
                problems += [f"{shown}: {p}" for p in report.problems]
            except ValueError as err:
                problems.append(f"{shown}: {err}")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            source = Source(path, key="sha256:" + file_digest(path), name=shown)
            outcome = add_sources(project, [source]).outcomes[0]
            if outcome.status == THERE:
                already.append(f"{shown} (as {outcome.record.name})")
            elif outcome.status == ADDED:
                added += 1
            else:
                problems.append(f"{shown}: {outcome.why.replace(str(path), shown)}")
        else:
            problems.append(f"{shown}: not an image or a zip (accepted: {', '.join(sorted(IMAGE_SUFFIXES))}, .zip)")
    message = f"added {added} image(s)"
    if already:
        message += f"; already in the project, not added again: {', '.join(already)}"
    if problems:
        message += "; not added:\n" + "\n".join(f"- {p}" for p in problems)
    return message


def _check_upload_limits(config: AppConfig, paths: list[Path]) -> None:
    if len(paths) > config.max_upload_files:
        raise ProjectError(f"{len(paths)} files at once; the limit is {config.max_upload_files}: upload fewer, or a "
                           "zip (nothing was added)")
    total = 0
    for path in paths:
        size = path.stat().st_size
        total += size
        if size > config.max_upload_mb * 2**20:
            raise ProjectError(f"{_original_name(path)} is {size / 2**20:.0f} MB, more than the limit of "
                               f"{config.max_upload_mb} MB per file (nothing was added)")
    if total > config.max_upload_total_mb * 2**20:
        raise ProjectError(f"the upload is {total / 2**20:.0f} MB in all, more than the limit of "
                           f"{config.max_upload_total_mb} MB (nothing was added): upload it in parts")
    members = 0
    for path in paths:
        if path.suffix.lower() != ".zip":
            continue
        try:
            with zipfile.ZipFile(path) as archive:
                members += sum(not info.is_dir() for info in archive.infolist())
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            continue  # the import says what is wrong with it
        if members > config.max_upload_members:
            raise ProjectError(f"the zip files hold more than {config.max_upload_members} files in all (reached at "
                               f"{_original_name(path)}), the limit for one upload (nothing was added)")


def _discard(paths: list[Path]) -> None:
    """Delete the server's copies of a refused upload."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def _original_name(path: Path) -> str:
    """The file name the visitor chose (gradio keeps it, in a folder of its own; older versions prefixed a hash)."""
    return re.sub(r"^[0-9a-f]{32,}[_-]", "", Path(path).name)


def add_example(app: App, state: dict, name: str) -> str:
    """One of the app's example photos (by file name, only those shipped in assets/) into the project, once."""
    resolved = (ASSETS / Path(name).name).resolve()
    if resolved not in [path.resolve() for path, _ in EXAMPLES]:
        raise ProjectError(f"{name!r} is not one of the example photos")
    project = app.sessions.project(state)
    existing = project.find_image(resolved.name)
    if existing is None:
        existing = project.add_image(resolved)
    state["image_id"] = existing.id
    return f"added the example {resolved.name}; press Detect"


def open_server_project(app: App, state: dict, directory: str) -> dict:
    """Switch this browser to a project folder on the server (only under --allow-dir)."""
    if app.config.project is not None:
        raise ProjectError("this server serves one project for everyone (--project); it cannot switch")
    resolved = app.sessions.allowed(directory)
    new_state = {**state, "opened": str(resolved), "image_id": None}
    app.sessions.project(new_state)  # opens or creates it, or raises a clear error
    return new_state


def add_server_folder(app: App, state: dict, directory: str) -> str:
    """Reference the images of a server folder (under --allow-dir) without copying them."""
    folder = app.sessions.allowed(directory)
    if not folder.is_dir():
        raise ProjectError(f"{directory} is not a folder")
    project = app.sessions.project(state)
    by_path = held_paths(project)
    files, refused = app.sessions.allowed_files(folder, IMAGE_SUFFIXES)  # resolved, each inside an --allow-dir folder
    problems = [f"{name}: a link to a place outside the allowed folders (not followed)" for name in refused]
    report = add_sources(project, [Source(path) for path in files], copy=False, by_path=by_path)
    added = len(report.added)
    problems += [f"{o.source.location.name}: {o.why}" for o in report.failed]
    return f"added {added} image(s) from {folder}" + ("; not added:\n" + "\n".join(problems) if problems else "")
