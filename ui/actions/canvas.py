"""The canvas: its value for an image (what the project stores now), and one edit from it applied in one
transaction (ui/edits.py), in its window's order (ui/edit_order.py), checked against the view it was made on
(ui/window_state.py). A payload is read whole, once, by ui/payload.py."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

from gdino.labeling.similar import exemplars
from gdino.store import ProjectError

from .. import edits
from ..app import USER_ERRORS, App, page_words
from ..canvas_view import canvas_value, next_revision
from ..jobs import SimilarJob
from ..payload import parse_payload
from .labeling import image_reader
from .models import model_path, project_detector, project_model, project_sam, sam_of, store_folder, trained_models
from .review import current_image, image_line, step


class NotShownError(ProjectError):
    """An edit that was stored, whose new state could not be drawn (disk full for the overlay file...)."""


def canvas_state(app: App, state: dict, image_id: int | None, *, selected: int | None = None,
                 message: str | None = None, seq: int | None = None) -> dict | None:
    """The canvas' value for the image: what the project stores now (see ui/canvas_view.py)."""
    project = app.sessions.project(state)
    return canvas_value(project, state["token"], app.canvas_files, image_id, selected=selected, message=message,
                        seq=seq, read=lambda record: app.sessions.image_path(project, record))


def view_image(app: App, state: dict, image_id: int | None, *, message: str | None = None) -> tuple[dict | None, str]:
    """(the canvas' value, a line about the image) for `image_id`."""
    if image_id is None:
        return None, "No images yet: upload some (or a zip) above."
    value = canvas_state(app, state, image_id, message=message)
    return value, image_line(app, state, image_id, value["readable"])


def canvas_edit(app: App, state: dict, payload: object, refine: Callable | None = None,
                answer: Callable | None = None):
    """One edit from the canvas, applied in one transaction (ui/edits.py) -> (the canvas' new value, the
    image it is on). A refused edit changes nothing; the value then carries the reason as its message.
    An edit that names its window comes after the one the window sent before it (ui/edit_order.py), and is
    refused if made on a view another window has changed since (ui/window_state.py). refine: SAM for a click,
    (pixels, points, labels, box) -> mask, as `refine_mask` (the app passes it wrapped for ZeroGPU).
    answer: (value, image id) -> what to return instead, made in the edit's turn too (the page's other parts)."""
    sent = parse_payload(payload)
    seq, shown, seen = sent.seq, sent.image_id, sent.seen
    project = app.sessions.project(state)
    finish = answer or (lambda value, image_id: (value, image_id))
    turn = app.order.turn(state["token"], *sent.order) if sent.order else contextlib.nullcontext()
    with turn:  # its reply is made before the window's next edit is applied: it shows this edit and no later one
        if shown is None or not project.has_image(shown):
            image_id = current_image(app, state)
            return finish(canvas_state(app, state, image_id, seq=seq,
                                       message="that image is not in this project any more"), image_id)
        if sent.refused is not None:
            return finish(canvas_state(app, state, shown, seq=seq, message=page_words(app, state, sent.refused)), shown)
        edit = sent.edit
        touched: dict = {}  # the existing objects the edit changes, as read for it

        def guard(current):
            if seen is not None:  # made on a view that something else has changed since: refused
                app.windows.check(state["token"], seen, current)
            touched.update(current)

        def after(current):  # in the edit's transaction: what this window's edit made, for its next edits
            if seen is not None:
                app.windows.record(state["token"], seen.window, {i: touched.get(i) for i in current}, current,
                                   next_revision())
        if isinstance(edit, edits.Similar) and edit.everywhere:  # a job over the other images, not an edit here
            try:
                message = _start_similar(app, state, project, edit)
            except USER_ERRORS as err:
                message = page_words(app, state, err)
            return finish(canvas_state(app, state, shown, seq=seq, message=message), shown)
        try:
            step = isinstance(edit, (edits.Undo, edits.Redo))
            what = project.next_step(shown, undo=isinstance(edit, edits.Undo)) if step else None
            applied = edits.apply(project, edit, segment=_segment(app, project, shown, refine), guard=guard, after=after,
                                  find=_finder(app, state, project, shown))
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


def refine_mask(app: App, pixels, points, labels, box, mask=None, sam: str | None = None, store: str | None = None):
    """SAM on one picture from clicks (and the box they started from): its (H, W) bool mask. mask: the object's
    current (H, W) bool mask, SAM's mask prompt (None: none). sam: the project's SAM (its public key; None: the
    server's); store: the project's embedding folder (None: none), so that an image embedded before (a prefetch,
    an auto-label run, `gdino label --sam`) runs only the decoder. All a click runs on the GPU: on a ZeroGPU
    Space the app calls it through `spaces.GPU` (a worker process), nothing else of the edit (the store, the
    window's order and state stay in this process)."""
    return _segmenter(app, sam, store).refine(pixels, points=points, labels=labels, box=box, mask=mask).mask


def embed_image(app: App, pixels, sam: str | None = None, store: str | None = None) -> None:
    """Compute and keep the image's embedding for the project's SAM (in memory and in `store`): a prefetch. Like
    `refine_mask`, all it runs on the GPU (the app wraps it for ZeroGPU). In the background: it gives way to the
    clicks' decoder between two of its modules."""
    _segmenter(app, sam, store).embed(pixels, background=True)


def _segmenter(app: App, sam: str | None, store: str | None):
    from gdino.sam.store import EmbeddingStore

    segmenter = app.hub.segmenter(sam)
    return segmenter if store is None else segmenter.using(EmbeddingStore(store))


def _start_similar(app: App, state: dict, project, edit) -> str:
    """Start (or report) the project's find-similar job from the exemplars of the image shown."""
    # checked now, for the page's answer; the job checks them again when it starts
    name, _, _ = exemplars({o.id: o for o in project.objects(edit.image_id)}, edit.positive_ids, edit.negative_ids)
    running = app.jobs.get(project.path)
    if running is not None and running.running:
        return "a job runs on this project now: " + running.text()
    model = model_path(project, project_model(app, state))  # read now, not in the job's thread
    also = tuple(model_path(project, m) for m in trained_models(project))
    job = app.jobs.start_similar(project, lambda: app.hub.detector(model, also=also), edit.image_id,
                                 edit.positive_ids, edit.negative_ids, name, image_reader(app, project))
    if not isinstance(job, SimilarJob):  # another job started meanwhile: that one runs
        return "a job runs on this project now: " + job.text()
    return (f"searching {job.total} other image(s) for more like the example(s); the job line shows how far it "
            "is, Cancel stops it")


def _finder(app: App, state: dict, project, image_id: int):
    """Find similar on this image with the project's model: SAM 3 searches for more like the exemplar boxes. With
    another model it says which model it needs. Runs between two images of any running job (the model lock)."""
    read = image_reader(app, project)

    def find(boxes, labels, class_name):
        detector = project_detector(app, state)  # a first load outside the model lock
        if getattr(detector, "family", None) != "sam3":
            raise ProjectError("find similar needs a SAM 3 model (it searches the picture for more like the selected "
                               "boxes); this project uses Grounding DINO: choose a SAM 3 model under Model")
        pixels = read(image_id)
        with app.jobs.model_lock:
            return detector.find_similar(pixels, boxes, labels, class_name=class_name)

    return find


def _segment(app: App, project, image_id: int, refine: Callable | None = None):
    """SAM for the canvas' clicks on this image, or None when SAM is off: the project's SAM, with its store.
    Runs between two images of any running job (the model lock)."""
    if not app.hub.sam_enabled:
        return None
    read = image_reader(app, project)
    sam, store = sam_of(app, project), store_folder(project)

    def segment(points, labels, box, mask=None):
        seg = app.hub.segmenter(sam)  # a first load outside the model lock: it holds up no other click, Detect or job
        with seg.interactive():  # from here, a prefetch pauses: it has by the time the decoder starts
            pixels = read(image_id)
            with app.jobs.model_lock:
                if refine is not None:
                    return refine(pixels, points, labels, box, mask, sam=sam, store=store)
                return refine_mask(app, pixels, points, labels, box, mask, sam=sam, store=store)
    return segment


def prefetch_next(app: App, state: dict, list_filter: str, embed: Callable | None = None) -> int | None:
    """Queue the embedding of the image the Next button would show after the window's current one (in the list as
    filtered), for the project's SAM, in the server's prefetch thread (ui/jobs.py: Prefetch); this window's earlier
    request, not started yet, is dropped. embed: (pixels, sam, store) -> None, as `embed_image` (the app passes it
    wrapped for ZeroGPU). Returns the image queued, or None (SAM off, no other image)."""
    if not app.hub.sam_enabled or state.get("image_id") is None:
        return None
    sam = project_sam(app, state)
    if sam in app.hub.sam_errors:  # it failed to load: the next click says why (and tries again), not a prefetch
        return None
    nxt = step(app, state, list_filter, +1)
    if nxt is None or nxt == state["image_id"]:
        return None
    project = app.sessions.project(state)
    read = image_reader(app, project)
    store = store_folder(project)
    run = embed or (lambda pixels, sam, store: embed_image(app, pixels, sam, store))

    def prefetch(pixels) -> None:
        # Not under the model lock: a click on the image shown (embedded already) must not wait for the next
        # one's embedding. No job runs meanwhile (Prefetch drops requests then); a click on this very image waits
        # for this embedding in the Segmenter (its in-flight table) instead of computing it again.
        run(pixels, sam, store)
    app.prefetch.want(state["token"], (str(project.path), nxt, sam), read=lambda: read(nxt), embed=prefetch)
    return nxt
