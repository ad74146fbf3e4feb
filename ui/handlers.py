"""Every action of the page as a plain function: plain values in, plain values out, the project store
as the only memory. The layout wires these to components; the tests call them directly.

Messages are plain text: the layout shows them literally (ui/text.py), whatever names they quote. The lines
made for a Markdown component (`image_line`, `review_counter`) escape every name they hold."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gdino.formats import FORMATS, dataset_from_project, export_zip
from gdino.formats.importing import IMAGE_SUFFIXES, file_digest, import_zip
from gdino.labeling import LabelSettings, label_images, parse_class_text
from gdino.processing import ImageError
from gdino.project import ProjectError
from gdino.prompts import PromptError
from gdino.sources import read_image
from gdino.weights.checkpoints import describe as describe_model

from . import edits
from .canvas_view import CanvasFiles, canvas_value, next_revision
from .config import AppConfig
from .edit_order import EditOrder
from .jobs import Jobs
from .models import ModelHub
from .render import image_rows
from .session import Sessions
from .text import plain
from .views import Views, parse_order, parse_seen

USER_ERRORS = (ValueError, OSError)  # PromptError, ImageError, ProjectError, WeightsError are ValueErrors


def page_words(app: App, state: dict | None, text: str) -> str:
    """A message for the page without server paths: an image in the project is called by its name, the
    project folder "the project", the workspace "the server"."""
    text = str(text)
    try:
        directory = app.sessions.project_dir(state) if state is not None else None
    except USER_ERRORS:
        directory = None
    if directory is not None:
        text = re.sub(re.escape(str(directory / "images")) + r"/([^'\s]+)", r"\1", text)
        text = text.replace(f"the project {directory}", "the project").replace(str(directory), "the project")
    return text.replace(str(app.config.workspace), "the server")


@dataclass
class App:
    config: AppConfig
    hub: ModelHub
    sessions: Sessions
    jobs: Jobs
    canvas_files: CanvasFiles
    views: Views = dataclasses.field(default_factory=Views)  # what each window's own canvas edits made
    order: EditOrder = dataclasses.field(default_factory=EditOrder)  # each window's canvas edits, in its order


def make_app(config: AppConfig) -> App:
    jobs = Jobs()
    sessions = Sessions(config, in_use=jobs.busy)
    return App(sessions.config, ModelHub(sessions.config), sessions, jobs, CanvasFiles())


# ------------------------------------------------------------------------------------ settings

def settings_from_inputs(mode: str, classes_text: str, prompt_text: str, box_threshold: float, text_threshold: float,
                         masks: bool) -> LabelSettings:
    if mode == "free text":
        if not (prompt_text or "").strip():
            raise PromptError("the prompt is empty: describe what to find, e.g. 'the man in the red shirt . a dog'")
        return LabelSettings(prompt=prompt_text, box_threshold=box_threshold, text_threshold=text_threshold, masks=masks)
    return LabelSettings(classes=parse_class_text(classes_text), box_threshold=box_threshold,
                         text_threshold=text_threshold, masks=masks)


def save_prompt(app: App, state: dict, mode, classes_text, prompt_text, box_threshold, text_threshold, masks) -> None:
    app.sessions.project(state).set_setting("prompt", {
        "mode": mode, "classes_text": classes_text, "prompt_text": prompt_text, "box_threshold": box_threshold,
        "text_threshold": text_threshold, "masks": bool(masks)})


def load_prompt(app: App, state: dict) -> dict:
    saved = app.sessions.project(state).setting("prompt") or {}
    return {"mode": "classes", "classes_text": "", "prompt_text": "", "box_threshold": 0.35, "text_threshold": 0.25,
            "masks": app.hub.masks_available, **saved}


# -------------------------------------------------------------------------------------- images

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
            key = "sha256:" + file_digest(path)
            known = project.image_by_key(key)
            if known is not None:
                already.append(f"{shown} (as {known.name})")
                continue
            try:
                project.add_image(path, name=shown, key=key)
                added += 1
            except ValueError as err:
                problems.append(f"{shown}: {str(err).replace(str(path), shown)}")
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


def add_example(app: App, state: dict, name: str) -> str:
    """One of the app's example photos (by file name, only those shipped in assets/) into the project, once."""
    from .layout import ASSETS, EXAMPLES

    resolved = (ASSETS / Path(name).name).resolve()
    if resolved not in [path.resolve() for path, _ in EXAMPLES]:
        raise ProjectError(f"{name!r} is not one of the example photos")
    project = app.sessions.project(state)
    existing = project.find_image(resolved.name)
    if existing is None:
        existing = project.add_image(resolved)
    state["image_id"] = existing.id
    return f"added the example {resolved.name}; press Detect"


def _original_name(path: Path) -> str:
    """The file name the visitor chose (gradio keeps it, in a folder of its own; older versions prefixed a hash)."""
    return re.sub(r"^[0-9a-f]{32,}[_-]", "", Path(path).name)


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
    known = {r.path for r in project.images()}
    files, refused = app.sessions.allowed_files(folder, IMAGE_SUFFIXES)
    added, problems = 0, [f"{name}: a link to a place outside the allowed folders (not followed)" for name in refused]
    for path in files:  # resolved, each inside an --allow-dir folder
        if path in known:
            continue
        try:
            project.add_image(path, copy=False)
            added += 1
        except ValueError as err:
            problems.append(f"{path.name}: {err}")
    return f"added {added} image(s) from {folder}" + ("; not added:\n" + "\n".join(problems) if problems else "")


def review_counter(app: App, state: dict) -> str:
    """"12 / 49 reviewed" and the other statuses, for beside the list."""
    counts = app.sessions.project(state).stats()["status"]
    total = sum(counts.values())
    if not total:
        return ""
    rest = ", ".join(f"{counts[s]} {s}" for s in ("auto", "unlabeled", "skipped") if counts[s])
    return f"**{counts['reviewed']} / {total} reviewed**" + (f" ({rest})" if rest else "")


def rows(app: App, state: dict, view: str) -> list[list]:
    return image_rows(app.sessions.project(state), view)


def current_image(app: App, state: dict) -> int | None:
    """The image this browser looks at: the remembered one, else the first."""
    project = app.sessions.project(state)
    images = project.images(order="name")
    ids = [r.id for r in images]
    if state.get("image_id") in ids:
        return state["image_id"]
    return ids[0] if ids else None


def step(app: App, state: dict, view: str, delta: int) -> int | None:
    """The next / previous image in the list as it is filtered and ordered now (wrapping around)."""
    ids = [row[0] for row in rows(app, state, view)] or [r.id for r in app.sessions.project(state).images()]
    if not ids:
        return None
    current = state.get("image_id")
    if current not in ids:
        return ids[0]
    return ids[(ids.index(current) + delta) % len(ids)]


def view_image(app: App, state: dict, image_id: int | None, *, message: str | None = None) -> tuple[dict | None, str]:
    """(the canvas' value, a line about the image) for `image_id`."""
    if image_id is None:
        return None, "No images yet: upload some (or a zip) above."
    value = canvas_state(app, state, image_id, message=message)
    return value, image_line(app, state, image_id, value["readable"])


def image_line(app: App, state: dict, image_id: int, readable: bool = True) -> str:
    """The line about the image beside the canvas: name, size, status, objects (and a damaged file)."""
    record = app.sessions.project(state).image(image_id)
    info = (f"**{plain(record.name)}** ({record.width}x{record.height}) - status **{record.status}** - "
            f"{record.num_objects} object(s)")
    if not readable:
        info += (" - **its file cannot be read any more** (missing or damaged): the grey picture stands in for it; "
                 "*Remove image* takes it and its labels out of the project")
    return info


def remove_image(app: App, state: dict, view: str, image_id: int | None) -> tuple[int | None, str]:
    """Remove the image and its labels; returns (the image to show next in the list as filtered, a message)."""
    if image_id is None:
        raise ProjectError("no image selected")
    project = app.sessions.project(state)
    ids = [row[0] for row in rows(app, state, view)]
    following = ids[(ids.index(image_id) + 1) % len(ids)] if image_id in ids and len(ids) > 1 else None
    record = project.image(image_id)
    project.remove_image(image_id)
    remaining = [row[0] for row in rows(app, state, view)]
    nxt = following if following in remaining else (remaining[0] if remaining else None)
    return nxt, f"removed {record.name} and its {record.num_objects} object(s)"


# ------------------------------------------------------------------------------------ classes

def class_counts(app: App, state: dict) -> list[list]:
    """Rows [class, objects] in the project's order, for the class manager."""
    return [[name, count] for name, count in app.sessions.project(state).stats()["classes"].items()]


def rename_class(app: App, state: dict, old: str, new: str) -> str:
    """Rename a class, or merge it into `new` when that class exists; says how many objects it touched."""
    project = app.sessions.project(state)
    old, new = (old or "").strip(), (new or "").strip()
    counts = project.stats()["classes"]
    if old not in counts:
        raise ProjectError(f"there is no class {old!r} in this project")
    if not new:
        raise ProjectError("type the new name")
    existing = next((c for c in counts if c.casefold() == new.casefold()), None)
    if existing is None or existing == old:
        project.rename_class(old, new)
        return f"renamed {old!r} to {new!r} ({counts[old]} object(s))"
    moved = project.merge_class(old, existing)
    return f"merged {old!r} into {existing!r}: {moved} object(s) moved"


def delete_class(app: App, state: dict, name: str, with_objects: bool) -> str:
    """Delete a class; refused while objects use it unless `with_objects`, which deletes them too."""
    project = app.sessions.project(state)
    counts = project.stats()["classes"]
    if name not in counts:
        raise ProjectError(f"there is no class {name!r} in this project")
    if counts[name] and not with_objects:
        raise ProjectError(f"{counts[name]} object(s) use the class {name!r}: tick 'delete its objects too', or "
                           "rename it to merge it into another class")
    project.remove_class(name, delete_objects=with_objects)  # the store re-checks in its own transaction
    return f"deleted the class {name!r}" + (f" and its {counts[name]} object(s)" if counts[name] else "")


# ------------------------------------------------------------------------------------ the model

MODELS_DIR = "models"  # fine-tuned models live in the project, here
_RUN_NAME = re.compile(r"finetuned-\d{8}-\d{6}")  # what start_training names a run; nothing else is trusted


def trained_models(project) -> list[str]:
    """The project's own fine-tuned models, as "models/NAME" (relative to the project, newest first): finished
    runs under models/, real folders (no links) inside the project, each with the card gdino train writes."""
    root = project.path / MODELS_DIR
    if root.is_symlink() or not root.is_dir():
        return []
    found = [d.name for d in root.iterdir() if _RUN_NAME.fullmatch(d.name) and not d.is_symlink() and d.is_dir()
             and all((d / f).is_file() and not (d / f).is_symlink() for f in ("gdino_training.json", "config.json"))]
    return [f"{MODELS_DIR}/{name}" for name in sorted(found, reverse=True)]


def offered_models(app: App, state: dict) -> tuple[str, ...]:
    """What the visitor's project may use: the server's models, then the project's own fine-tuned ones."""
    return tuple(dict.fromkeys((*app.config.offered_models(), *trained_models(app.sessions.project(state)))))


def _model_line(app: App, state: dict | None, model: str) -> str:
    if state is not None and model.startswith(f"{MODELS_DIR}/") and model not in app.config.offered_models():
        name = model.removeprefix(f"{MODELS_DIR}/")
        try:
            record = json.loads((app.sessions.project(state).path / model / "gdino_training.json").read_text())
            v = record["validation"]
            numbers = (f", held-out mAP@0.5 {v['base']['map50']:.3f} -> {v['fine_tuned']['map50']:.3f}"
                       if (v.get("base") or {}).get("map50") is not None
                       and (v.get("fine_tuned") or {}).get("map50") is not None else "")
            return f"fine-tuned here: {name} ({len(record['train_images'])} images{numbers})"
        except (OSError, ValueError, KeyError, TypeError):
            return f"fine-tuned here: {name}"
    return describe_model(model) + (" [server default]" if model == app.config.model else "")


def model_choices(app: App, state: dict | None = None) -> list[tuple[str, str]]:
    """(menu line, model) for every model the project may use, the server's default first. A fine-tuned model
    is named relative to the project (no server path reaches the page)."""
    models = offered_models(app, state) if state is not None else app.config.offered_models()
    return [(_model_line(app, state, m), m) for m in models]


def project_model(app: App, state: dict) -> str:
    """The model the visitor's project chose, if it may still use it; else the server's default."""
    chosen = app.sessions.project(state).setting("model")
    return chosen if isinstance(chosen, str) and chosen in offered_models(app, state) else app.config.model


def choose_model(app: App, state: dict, model: str | None) -> str:
    """The project's detector from now on. Labels already made stay as they are; the next Detect or
    auto-label run uses this model (a running one finishes with the model it started with)."""
    if not isinstance(model, str) or model not in offered_models(app, state):
        raise ProjectError("that model is not offered by this server; choose one from the list")
    project = app.sessions.project(state)
    if model != project_model(app, state):  # (the menu may send one choice twice: the same answer both times)
        project.set_setting("model", model)
    return (f"the project now uses {_model_line(app, state, model)}; its labels are kept, and the next detection "
            "uses it (it loads on first use, which can take a minute)")


def _model_path(project, model: str) -> str:
    """What the loader reads: a server model as named, a project's model as its folder (checked again)."""
    if model.startswith(f"{MODELS_DIR}/") and model in trained_models(project):
        return str(project.path / model)
    return model


def _detector(app: App, state: dict):
    project = app.sessions.project(state)
    model = project_model(app, state)
    also = tuple(_model_path(project, m) for m in trained_models(project))
    return app.hub.detector(_model_path(project, model), also=also)


# ------------------------------------------------------------------------------------ training

def start_training(app: App, state: dict, epochs, fast: bool) -> str:
    """Fine-tune the project's model on its reviewed images, as a background job of the server (the page
    polls `job_status`). The same settings again resume a stopped run."""
    from gdino.train.settings import TrainConfig

    project = app.sessions.project(state)
    job = app.jobs.get(project.path)
    if job is not None and job.running:
        return job.text()
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float, str)):
        raise ProjectError("the number of epochs must be a whole number, e.g. 12")
    try:
        value = float(epochs)
    except ValueError:
        raise ProjectError("the number of epochs must be a whole number, e.g. 12") from None
    if not value.is_integer() or not 1 <= value <= 500:
        raise ProjectError("the number of epochs must be a whole number from 1 to 500")
    epochs = int(value)
    if not project.images(status="reviewed"):
        raise ProjectError("no reviewed images to train on: check the labels of some images and press "
                           "'Mark reviewed' (r) on each")
    out_dir = project.path / MODELS_DIR
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ProjectError("the project's models folder is a link or a file; remove it to train here")
    base = project_model(app, state)
    pending = project.setting("training")
    pending = pending if isinstance(pending, dict) else {}
    name = pending.get("name")
    same = pending.get("epochs") == epochs and pending.get("fast") == bool(fast) and pending.get("base") == base
    if not (same and isinstance(name, str) and _RUN_NAME.fullmatch(name) and not (out_dir / name).exists()):
        name = time.strftime("finetuned-%Y%m%d-%H%M%S")
    project.set_setting("training", {"name": name, "epochs": epochs, "fast": bool(fast), "base": base})
    out_dir.mkdir(exist_ok=True)
    text_encoder = app.config.text_encoder if base == app.config.model else None
    job = app.jobs.start_training(project, _model_path(project, base), out_dir / name, TrainConfig(epochs=epochs,
                                  augment=not fast), device=app.hub.device, text_encoder=text_encoder,
                                  images=_image_files(app, project))
    return job.text()


def use_trained_model(app: App, state: dict) -> str:
    """Make the project's newest fine-tuned model its detector."""
    models = trained_models(app.sessions.project(state))
    if not models:
        raise ProjectError("no fine-tuned model yet: train on the reviewed images first")
    return choose_model(app, state, models[0])


# ------------------------------------------------------------------------------------ labeling

def detect_image(app: App, state: dict, image_id: int | None, settings: LabelSettings) -> str:
    if image_id is None:
        raise ProjectError("no image selected: upload images first")
    project = app.sessions.project(state)
    detector = _detector(app, state)  # a first load (minutes) does not hold every other visitor's models
    with app.jobs.model_lock:  # between two images of any running job
        segmenter = app.hub.segmenter() if settings.masks else None
        summary = label_images(project, detector, [image_id], settings, segmenter=segmenter,
                               add_all_classes=False, keep_phrases=True, images=_reader(app, project))
    if summary.failed:
        raise ImageError(summary.failed[image_id])
    note = f"found {summary.objects} object(s)"
    if summary.decided:
        note += (f"; {summary.decided} more left out: you had deleted or changed those boxes, or drawn them "
                 "yourself")
    return note


def start_auto_label(app: App, state: dict, settings: LabelSettings) -> str:
    """Start labeling every unlabeled image as a background job of the server (or say how the running one
    is doing); the page polls `job_status`."""
    project = app.sessions.project(state)
    job = app.jobs.get(project.path)
    if job is not None and job.running:
        return job.text()
    if not project.images(status="unlabeled"):
        return "nothing to do: every image is labeled already"
    segmenter = app.hub.segmenter if settings.masks else None
    model = _model_path(project, project_model(app, state))
    also = tuple(_model_path(project, m) for m in trained_models(project))
    return app.jobs.start(project, lambda: app.hub.detector(model, also=also), settings, segmenter,
                          images=_reader(app, project)).text()


def _image_files(app: App, project):
    """image_id -> the image's file (or object-store URI), checked when it is asked for
    (ui.session.Sessions.image_path). Training keeps these, and reads each again at every epoch."""
    return lambda image_id: app.sessions.image_path(project, project.image(image_id))


def _reader(app: App, project):
    """image_id -> the image's pixels (upright RGB), read from `_image_files`' checked file (an object-store
    image fetched): what labeling takes."""
    files = _image_files(app, project)
    return lambda image_id: read_image(files(image_id))


def job_status(app: App, state: dict) -> str:
    """The project's job (auto-label or training) as one line, or "" when it never had one."""
    job = app.jobs.get(app.sessions.project(state).path)
    if job is None:
        return ""
    text = job.text()
    if not job.running and job.failed:
        project = app.sessions.project(state)
        names = {r.id: r.name for r in project.images()}
        text += "\n" + "\n".join(f"- {names.get(i, i)}: {why}" for i, why in job.failed.items())
    return page_words(app, state, text)


def cancel_auto_label(app: App, state: dict) -> str:
    job = app.jobs.cancel(app.sessions.project(state).path)
    return "no job is running" if job is None or not job.running else job.text()


def set_status(app: App, state: dict, image_id: int | None, status: str) -> None:
    if image_id is None:
        raise ProjectError("no image selected")
    app.sessions.project(state).set_status(image_id, status)


def mark_and_step(app: App, state: dict, view: str, image_id: int | None, status: str) -> int | None:
    """Mark the image (reviewed, skipped) and return the next one in the list as it is filtered now. The
    next one is found before marking: marking may take the image out of the filter (e.g. "unlabeled")."""
    if image_id is None:
        raise ProjectError("no image selected")
    ids = [row[0] for row in rows(app, state, view)]
    following = None
    if image_id in ids and len(ids) > 1:
        following = ids[(ids.index(image_id) + 1) % len(ids)]
    set_status(app, state, image_id, status)
    remaining = [row[0] for row in rows(app, state, view)]
    if following in remaining:
        return following
    return remaining[0] if remaining else image_id


def phrase_choices(app: App, state: dict) -> list[str]:
    """The free-text phrases found in this project that are not classes yet."""
    return app.sessions.project(state).phrases


def map_phrase(app: App, state: dict, phrase: str | None, target: str | None) -> str:
    """Free text: give the objects labeled with a found phrase a class (an existing one or a new one)."""
    if not phrase:
        raise ProjectError("choose a found phrase first")
    target = (target or "").strip()
    if not target:
        raise ProjectError("type the class to map it to")
    moved = app.sessions.project(state).map_phrase(phrase, target)
    return f"{moved} object(s) labeled {phrase!r} are now {target!r}"


# ------------------------------------------------------------------------------------- canvas

def canvas_state(app: App, state: dict, image_id: int | None, *, selected: int | None = None,
                 message: str | None = None, seq: int | None = None) -> dict | None:
    """The canvas' value for the image: what the project stores now (see ui/canvas_view.py)."""
    project = app.sessions.project(state)
    return canvas_value(project, state["token"], app.canvas_files, image_id, selected=selected, message=message,
                        seq=seq, read=lambda record: app.sessions.image_path(project, record))


def canvas_edit(app: App, state: dict, payload: object, refine: Callable | None = None,
                answer: Callable | None = None):
    """One edit from the canvas, applied in one transaction (ui/edits.py) -> (the canvas' new value, the
    image it is on). A refused edit changes nothing; the value then carries the reason as its message.
    An edit that names its window comes after the one the window sent before it (ui/edit_order.py), and is
    refused if made on a view another window has changed since (ui/views.py). refine: SAM for a click,
    (pixels, points, labels, box) -> mask, as `refine_mask` (the app passes it wrapped for ZeroGPU).
    answer: (value, image id) -> what to return instead, made in the edit's turn too (the page's other parts)."""
    seq = payload.get("seq") if isinstance(payload, dict) and isinstance(payload.get("seq"), int) else None
    shown = payload.get("image_id") if isinstance(payload, dict) else None
    project = app.sessions.project(state)
    try:
        seen, refused = parse_seen(payload), None  # the window, the edit's place in its order, the view it was made on
    except USER_ERRORS as err:
        seen, refused = None, err
    order = parse_order(payload)
    finish = answer or (lambda value, image_id: (value, image_id))
    turn = app.order.turn(state["token"], *order) if order else contextlib.nullcontext()
    with turn:  # its reply is made before the window's next edit is applied: it shows this edit and no later one
        if not (isinstance(shown, int) and not isinstance(shown, bool) and 0 <= shown < 2**63 and project.has_image(shown)):
            image_id = current_image(app, state)
            return finish(canvas_state(app, state, image_id, seq=seq,
                                       message="that image is not in this project any more"), image_id)
        if refused is not None:
            return finish(canvas_state(app, state, shown, seq=seq, message=page_words(app, state, refused)), shown)
        touched: dict = {}  # the existing objects the edit changes, as read for it

        def guard(current):
            if seen is not None:  # made on a view that something else has changed since: refused
                app.views.check(state["token"], seen, current)
            touched.update(current)

        def after(current):  # in the edit's transaction: what this window's edit made, for its next edits
            if seen is not None:
                app.views.record(state["token"], seen.window, {i: touched.get(i) for i in current}, current,
                                 next_revision())
        try:
            edit = edits.parse(payload)
            step = isinstance(edit, (edits.Undo, edits.Redo))
            what = project.next_step(shown, undo=isinstance(edit, edits.Undo)) if step else None
            applied = edits.apply(project, edit, segment=_segment(app, project, shown, refine), guard=guard, after=after)
        except USER_ERRORS as err:
            return finish(canvas_state(app, state, shown, seq=seq, message=page_words(app, state, err)), shown)
        if what is not None and applied.message is None:  # a step of the project's journal: say what it did
            applied = dataclasses.replace(applied, message=("undid " if isinstance(edit, edits.Undo) else "redid ") + what)
        if not project.has_image(shown):  # a redo removed the image shown: show the one the page would show next
            image_id = current_image(app, state)
            return finish(canvas_state(app, state, image_id, seq=seq, message=applied.message), image_id)
        try:
            value = canvas_state(app, state, shown, selected=applied.selected, message=applied.message, seq=seq)
        except USER_ERRORS as err:  # the edit is stored: never report it as refused (it would be made again)
            raise NotShownError(f"saved, but the picture could not be refreshed ({page_words(app, state, err)}); "
                                "reload the page") from err
        return finish(value, shown)


class NotShownError(ProjectError):
    """An edit that was stored, whose new state could not be drawn (disk full for the overlay file...)."""


def refine_mask(app: App, pixels, points, labels, box, mask=None):
    """SAM on one picture from clicks (and the box they started from): its (H, W) bool mask. mask: the object's
    current (H, W) bool mask, SAM's mask prompt (None: none). All a click runs on the GPU: on a ZeroGPU Space the
    app calls it through `spaces.GPU` (a worker process), nothing else of the edit (the store, the window's order
    and views stay in this process)."""
    return app.hub.segmenter().refine(pixels, points=points, labels=labels, box=box, mask=mask).mask


def _segment(app: App, project, image_id: int, refine: Callable | None = None):
    """SAM for the canvas' clicks on this image, or None when SAM is off. Runs between two images of any
    running job (the model lock)."""
    if not app.hub.sam_enabled:
        return None
    def segment(points, labels, box, mask=None):
        pixels = read_image(app.sessions.image_path(project, project.image(image_id)))
        with app.jobs.model_lock:
            if refine is not None:
                return refine(pixels, points, labels, box, mask)
            return refine_mask(app, pixels, points, labels, box, mask)
    return segment


# ------------------------------------------------------------------------------------- export

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
    import shutil
    import time

    for folder in Path(tempfile.gettempdir()).glob(EXPORT_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if time.time() - folder.stat().st_mtime > EXPORT_KEEP_S:
                shutil.rmtree(folder)
