"""Labeling: the prompt (saved per project), Detect on the shown image, and the project's background job
(auto-label every unlabeled image; training's job is reported the same way) with its status and cancel."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict

from gdino.labeling import LabelSettings, label_images, makes_masks, parse_class_text
from gdino.processing import ImageError
from gdino.prompts import PromptError
from gdino.sources import is_uri, read_image
from gdino.store import ProjectError

from ..app import App, page_words
from .models import model_path, project_detector, project_model, project_sam, project_segmenter, trained_models


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


def image_files(app: App, project):
    """image_id -> the image's file (or object-store URI), checked when it is asked for
    (ui.session.Sessions.image_path). Training keeps these, and reads each again at every epoch."""
    return lambda image_id: app.sessions.image_path(project, project.image(image_id))


def image_reader(app: App, project):
    """image_id -> the image's pixels (upright RGB), read from `image_files`' checked file (an object-store
    image fetched): what labeling and a SAM click take."""
    files = image_files(app, project)
    return lambda image_id: _decoded(files(image_id))


DECODED_IMAGES = 3  # the last pictures used, kept decoded for SAM's clicks: the one before, the one shown and the
# next (read by its prefetch before the clicks on the one shown, so two would drop it just before it is shown)
DECODED_MAX_PIXELS = 16_000_000  # larger ones are decoded each time (memory)
_decoded_images: OrderedDict[tuple, object] = OrderedDict()
_decoded_lock = threading.Lock()


def _decoded(location):
    """read_image(location), the last DECODED_IMAGES local files kept decoded, named by path, inode, size and
    change time (a replaced or rewritten file is read again). Object-store images are read each time."""
    if is_uri(location):
        return read_image(location)
    info = os.stat(location)
    key = (os.fspath(location), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    with _decoded_lock:
        if key in _decoded_images:
            _decoded_images.move_to_end(key)
            return _decoded_images[key]
    image = read_image(location)
    if image.width * image.height <= DECODED_MAX_PIXELS:
        with _decoded_lock:
            _decoded_images[key] = image
            while len(_decoded_images) > DECODED_IMAGES:
                _decoded_images.popitem(last=False)
    return image


def detect_image(app: App, state: dict, image_id: int | None, settings: LabelSettings) -> str:
    if image_id is None:
        raise ProjectError("no image selected: upload images first")
    project = app.sessions.project(state)
    detector = project_detector(app, state)  # a first load (minutes) does not hold every other visitor's models
    # the same; its store keeps the embeddings. A detector that makes its own masks (SAM 3) needs no SAM, and its
    # masks are always stored (the Masks box is about SAM: off and locked on a server without one)
    if makes_masks(detector):
        settings = dataclasses.replace(settings, masks=True)
    segmenter = project_segmenter(app, state) if settings.masks and not makes_masks(detector) else None
    with app.jobs.model_lock:  # between two images of any running job
        summary = label_images(project, detector, [image_id], settings, segmenter=segmenter,
                               add_all_classes=False, keep_phrases=True, images=image_reader(app, project))
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
    sam = project_sam(app, state)
    segmenter = (lambda: app.hub.segmenter(sam)) if settings.masks else None  # the store: label_images adds it
    model = model_path(project, project_model(app, state))
    also = tuple(model_path(project, m) for m in trained_models(project))
    return app.jobs.start(project, lambda: app.hub.detector(model, also=also), settings, segmenter,
                          images=image_reader(app, project)).text()


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
