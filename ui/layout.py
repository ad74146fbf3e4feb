"""The page: layout and event wiring only. Every action is a function in handlers.py."""

from __future__ import annotations

import json

import gradio as gr
from gradio_image_annotation import image_annotator

from . import handlers as h
from .files import ASSETS
from .render import STATUS_ORDER
from .session import page_address

try:  # on Hugging Face ZeroGPU Spaces this asks for a GPU per call; elsewhere it does nothing
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - spaces is optional off Spaces
    def gpu(fn):
        return fn

EXAMPLES = [(ASSETS / name, classes) for name, classes in
            (("cat.png", "cat, remote control"), ("coffee.png", "cup, saucer, spoon"), ("astronaut.png", "person, flag"))
            if (ASSETS / name).is_file()]

# letters the box editor does not use itself (it takes c, d, Delete, Enter, Escape and the arrows)
SHORTCUTS = {"n": "next-btn", "p": "prev-btn", "r": "reviewed-btn", "s": "skip-btn", "g": "detect-btn"}
HEAD = """<script>
document.addEventListener('keydown', (e) => {
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName) || t.isContentEditable) return;
  const id = SHORTCUTS[e.key];
  const el = id && document.getElementById(id);
  if (el) { el.click(); e.preventDefault(); }
});
</script>""".replace("SHORTCUTS", json.dumps(SHORTCUTS))

# after the page has read a `?project=` link, take the credential out of the address bar
FORGET_LINK_JS = """() => {
  const u = new URL(window.location.href);
  if (u.searchParams.has('project')) { u.searchParams.delete('project'); window.history.replaceState(null, '', u.toString()); }
}"""
LINK_LABEL = ("Project link: opens this browser's project in any browser. Anyone with this link can see and edit "
              "the project; share it only with people you trust")

HELP = ("**Keys:** `n` next image, `p` previous, `r` mark reviewed, `s` skip, `g` detect. In the box editor: "
        "*Create box* to draw, drag to move or resize, double-click a box to change its label, select + `Delete` "
        "to remove it. Every change is saved as you make it.")


def build(app: h.App) -> gr.Blocks:
    # gradio's copies of the pictures it sent (unguessable URLs, one session's) are deleted after a day
    with gr.Blocks(title="gdino - label images with words", delete_cache=(3600, 86400)) as demo:
        # a fixed key (kept in the workspace), so the stored project id is still readable after a restart
        bstate = gr.BrowserState(None, storage_key="gdino-session", secret=app.sessions.browser_secret())
        gr.Markdown("# gdino\nType what to find, get boxes (Grounding DINO) and masks (SAM), fix them, export.")
        status = gr.Markdown(app.hub.status, elem_id="model-status")
        project_link = gr.Textbox(label=LINK_LABEL, interactive=False, buttons=["copy"], elem_id="project-link",
                                  visible=app.config.project is None)
        with gr.Row():
            uploads = gr.File(label="Add images (several files, or a zip of images / COCO / YOLO)", file_count="multiple",
                              file_types=["image", ".zip"], elem_id="uploads")
            with gr.Column(visible=bool(app.config.allow_dirs) and app.config.project is None):
                hint = str(app.config.allow_dirs[0]) if app.config.allow_dirs else ""
                folder = gr.Textbox(label="Server folder", placeholder=hint)
                with gr.Row():
                    open_btn = gr.Button("Open as project")
                    folder_btn = gr.Button("Add its images")
        example_path = gr.Textbox(visible=False, label="Photo")
        with gr.Row():
            mode = gr.Radio(["classes", "free text"], value="classes", label="Prompt", scale=1)
            classes_text = gr.Textbox(label="Classes", placeholder="cat, remote control   (or  car: car, automobile; person)",
                                      elem_id="classes", scale=3)
            prompt_text = gr.Textbox(label="Free text", placeholder="the man in the red shirt . a dog on a leash",
                                     visible=False, elem_id="prompt", scale=3)
        with gr.Row():
            box_thr = gr.Slider(0.05, 0.95, value=0.35, step=0.01, label="Box threshold")
            text_thr = gr.Slider(0.05, 0.95, value=0.25, step=0.01, label="Text threshold (free text)")
            masks = gr.Checkbox(value=app.hub.masks_available, label="Masks (SAM)", interactive=app.hub.sam_enabled)
            detect_btn = gr.Button("Detect", variant="primary", elem_id="detect-btn")
        shown_id = gr.Number(value=None, visible=False, precision=0)
        if EXAMPLES:
            gr.Examples([[path.name, classes] for path, classes in EXAMPLES], inputs=[example_path, classes_text],
                        label="Examples: one click adds the photo and its classes; then press Detect")
        with gr.Row():
            with gr.Column(scale=3):
                annotator = image_annotator(None, label_list=[], label="Boxes", elem_id="annotator", sources=[],
                                            show_clear_button=False, height=560)
                info = gr.Markdown("", elem_id="image-info")
                message = gr.Markdown("", elem_id="message")  # next to the editor: what the last action did
                with gr.Row():
                    prev_btn = gr.Button("◀ Prev (p)", elem_id="prev-btn")
                    next_btn = gr.Button("Next (n) ▶", elem_id="next-btn")
                    reviewed_btn = gr.Button("Mark reviewed (r)", elem_id="reviewed-btn")
                    skip_btn = gr.Button("Skip (s)", elem_id="skip-btn")
                    remove_btn = gr.Button("Remove image", elem_id="remove-btn", variant="stop")
                gr.Markdown(HELP)
            with gr.Column(scale=2):
                counter = gr.Markdown("", elem_id="counter")
                view = gr.Dropdown(list(STATUS_ORDER), value="all", label="Show")
                table = gr.Dataframe(headers=["id", "name", "status", "objects", "lowest score"], interactive=False,
                                     elem_id="image-table", wrap=True)
                with gr.Row():
                    all_btn = gr.Button("Auto-label all unlabeled", elem_id="auto-all-btn")
                    cancel_btn = gr.Button("Cancel", elem_id="cancel-btn")
                job_line = gr.Markdown("", elem_id="job-status")  # the server's job: the page stays usable meanwhile
                ticker = gr.Timer(2.0)
                with gr.Accordion("Export", open=True):
                    fmt = gr.Radio(["coco", "yolo", "yolo-seg", "voc"], value="coco", label="Format")
                    reviewed_only = gr.Checkbox(value=False, label="Reviewed images only")
                    export_btn = gr.Button("Export zip", elem_id="export-btn")
                    download = gr.File(label="Download", elem_id="download")
                with gr.Accordion("Free text: map a found phrase to a class", open=False):
                    gr.Markdown("Phrases found by a free-text prompt label their boxes (grey) but are not classes, "
                                "and exports leave them out, until you map each to a class here.")
                    phrase = gr.Dropdown([], label="Found phrase", elem_id="phrase-choice")
                    target = gr.Textbox(label="Class (an existing one or a new one)", elem_id="phrase-target")
                    map_btn = gr.Button("Map", elem_id="map-phrase-btn")
                with gr.Accordion("Classes", open=False, elem_id="class-manager"):
                    class_table = gr.Dataframe(headers=["class", "objects"], interactive=False, elem_id="class-table")
                    with gr.Row():
                        class_old = gr.Dropdown([], label="Class", elem_id="class-old")
                        class_new = gr.Textbox(label="New name (an existing class: merge into it)", elem_id="class-new")
                    with gr.Row():
                        rename_btn = gr.Button("Rename / merge", elem_id="rename-class-btn")
                        with_objects = gr.Checkbox(value=False, label="delete its objects too")
                        delete_class_btn = gr.Button("Delete class", elem_id="delete-class-btn")
        with gr.Accordion("Fix a mask", open=False):
            obj = gr.Dropdown([], label="Object", elem_id="object-choice")
            with gr.Row():
                with gr.Column():
                    click_kind = gr.Radio(["positive", "negative"], value="positive", label="Click adds")
                    click_img = gr.Image(label="Click on the image to refine with SAM", interactive=False)
                with gr.Column():
                    editor = gr.ImageEditor(label="Brush / eraser", type="numpy", image_mode="RGBA", format="png")
                    save_mask_btn = gr.Button("Save brushed mask")

        # ---------------------------------------------------------------------------- helpers

        def state_of(state):
            """This browser's session, checked (a page can send anything). Only the page load may start a
            new one: an event racing ahead of the load must not open a second, empty project."""
            if state is None:
                raise h.ProjectError("the page has not finished loading; wait a moment and try again")
            return app.sessions.check_state(state)

        def refresh(state, image_id="keep", note=None):
            """Everything that shows the project, after any change."""
            if image_id == "keep":
                image_id = h.current_image(app, state)
            state = {**state, "image_id": image_id}
            value, text, choices = h.view_image(app, state, image_id)
            project = app.sessions.project(state)
            classes = project.classes
            annot = gr.update(value=value, label_list=classes) if value is not None else gr.update(value=None)
            return (state, annot, image_id, text, h.rows(app, state, view_value.get(state["token"], "all")),
                    gr.update(choices=choices, value=None), gr.update(choices=project.phrases, value=None),
                    gr.update(choices=classes, value=None), h.class_counts(app, state), h.review_counter(app, state),
                    note if note is not None else gr.update(), app.hub.status)

        view_value: dict[str, str] = {}
        # message and status stay last: only_message relies on it
        outs = [bstate, annotator, shown_id, info, table, obj, phrase, class_old, class_table, counter, message, status]

        def only_message(text):
            """Leave the page as it is and say why (an action that could not start)."""
            return (*[gr.update()] * (len(outs) - 2), text, gr.update())

        def guarded(fn):
            """Run an action; a user error becomes a message in the page, never a traceback."""
            def run(state, *args):
                try:
                    state = state_of(state)
                except h.ProjectError as err:
                    return only_message(f"**{err}**")
                try:
                    return fn(state, *args)
                except h.USER_ERRORS as err:
                    note = f"**Could not do that:** {h.page_words(app, state, err)}"
                try:
                    return refresh(state, note=note)
                except h.USER_ERRORS:  # the project itself cannot be shown now
                    return only_message(note)
            return run

        # ---------------------------------------------------------------------------- events

        load_outs = [*outs, mode, classes_text, prompt_text, box_thr, text_thr, masks, project_link]

        def on_load(stored, request: gr.Request):
            """This browser's project: the one it stored, or the one its `?project=` link names."""
            headers = request.headers if request is not None else {}
            address = page_address(headers.get("referer"), headers.get("origin"))
            link = dict(request.query_params).get("project") if request is not None else None
            try:
                state, note = app.sessions.restore(stored, link, address)
                saved = h.load_prompt(app, state)
                out = refresh(state, note=note)
            except h.USER_ERRORS as err:
                return (*only_message(f"**Could not open the project:** {h.page_words(app, None, err)}"),
                        *[gr.update()] * 7)
            shown_link = app.sessions.link(state["token"], address) if app.config.project is None else gr.update()
            return (*out, saved["mode"], saved["classes_text"], saved["prompt_text"], saved["box_threshold"],
                    saved["text_threshold"], saved["masks"] and app.hub.masks_available, shown_link)

        demo.load(on_load, [bstate], load_outs).then(None, js=FORGET_LINK_JS)

        mode.change(lambda m: (gr.update(visible=m == "classes"), gr.update(visible=m == "free text")), [mode],
                    [classes_text, prompt_text])

        uploads.upload(guarded(lambda s, files: refresh(s, "keep", h.add_uploads(app, s, files))), [bstate, uploads],
                       outs).then(lambda: None, None, uploads)  # cleared: the next upload sends only its own files

        def open_folder(state, path):
            state = h.open_server_project(app, state, path)
            return refresh(state, "keep", f"opened {path}")

        def add_example(state, path):
            if not path:
                return refresh(state)
            return refresh(state, "keep", h.add_example(app, state, path))

        example_path.change(guarded(add_example), [bstate, example_path], outs)

        open_btn.click(guarded(open_folder), [bstate, folder], outs)
        folder_btn.click(guarded(lambda s, path: refresh(s, "keep", h.add_server_folder(app, s, path))), [bstate, folder], outs)

        prompt_inputs = [mode, classes_text, prompt_text, box_thr, text_thr, masks]

        @gpu
        def detect(state, image_id, *prompt):
            settings = h.settings_from_inputs(*prompt)
            h.save_prompt(app, state, *prompt)
            note = h.detect_image(app, state, None if image_id is None else int(image_id), settings)
            return refresh(state, None if image_id is None else int(image_id), note)

        detect_btn.click(guarded(detect), [bstate, shown_id, *prompt_inputs], outs, concurrency_id="model")

        def on_boxes(state, image_id, value):
            if image_id is None or value is None:
                return gr.update(), gr.update(), gr.update(), gr.update()
            image_id = int(image_id)
            if h.save_boxes(app, state, image_id, value):
                _, text, choices = h.view_image(app, state, image_id)
                return (text, h.rows(app, state, view_value.get(state["token"], "all")),
                        gr.update(choices=choices), gr.update(choices=app.sessions.project(state).phrases))
            return gr.update(), gr.update(), gr.update(), gr.update()

        annotator.change(guarded_small(on_boxes, state_of), [bstate, shown_id, annotator], [info, table, obj, phrase],
                         trigger_mode="always_last")

        def go(delta):
            def run(state, view_name):
                view_value[state["token"]] = view_name
                return refresh(state, h.step(app, state, view_name, delta))
            return run

        prev_btn.click(guarded(go(-1)), [bstate, view], outs)
        next_btn.click(guarded(go(+1)), [bstate, view], outs)

        def mark(status_name):
            def run(state, image_id, view_name):
                view_value[state["token"]] = view_name
                nxt = h.mark_and_step(app, state, view_name, None if image_id is None else int(image_id), status_name)
                return refresh(state, nxt)
            return run

        reviewed_btn.click(guarded(mark("reviewed")), [bstate, shown_id, view], outs)
        skip_btn.click(guarded(mark("skipped")), [bstate, shown_id, view], outs)

        def remove(state, image_id, view_name):
            view_value[state["token"]] = view_name
            nxt, note = h.remove_image(app, state, view_name, None if image_id is None else int(image_id))
            return refresh(state, nxt, note)

        remove_btn.click(guarded(remove), [bstate, shown_id, view], outs)
        rename_btn.click(guarded(lambda s, old, new: refresh(s, "keep", h.rename_class(app, s, old, new))),
                         [bstate, class_old, class_new], outs)
        delete_class_btn.click(guarded(lambda s, name, both: refresh(s, "keep", h.delete_class(app, s, name, both))),
                               [bstate, class_old, with_objects], outs)

        def choose_view(state, view_name):
            view_value[state["token"]] = view_name
            return refresh(state)

        view.change(guarded(choose_view), [bstate, view], outs)

        def pick_row(state, evt: gr.SelectData):  # not wrapped: gradio injects evt by this signature
            try:
                state = state_of(state)
                row = evt.row_value if evt is not None else None
                return refresh(state, int(row[0])) if row else refresh(state)
            except h.USER_ERRORS as err:
                return only_message(f"**Could not open that image:** {h.page_words(app, state, err)}")

        table.select(pick_row, [bstate], outs)

        def label_all(state, *prompt):
            """Start the project's auto-label job on the server; the page polls it (ticker) and stays usable."""
            settings = h.settings_from_inputs(*prompt)
            h.save_prompt(app, state, *prompt)
            return refresh(state, "keep", h.start_auto_label(app, state, settings))

        all_btn.click(guarded(label_all), [bstate, *prompt_inputs], outs)

        def cancel(state):
            try:
                return h.cancel_auto_label(app, state_of(state))
            except h.USER_ERRORS as err:
                return f"**{err}**"

        cancel_btn.click(cancel, [bstate], [job_line], queue=False)

        shown_done: dict[str, tuple] = {}

        def tick(state, view_name, request: gr.Request):
            """Every 2 s: the model status and the job's progress; the list only when the job moved on (per
            page: two tabs of one project both follow it)."""
            try:
                state = state_of(state)
                line = h.job_status(app, state)
            except h.USER_ERRORS:
                return gr.update(), app.hub.status, gr.update(), gr.update()
            job = app.jobs.get(app.sessions.project(state).path)
            mark_ = None if job is None else (id(job), job.done, job.state)
            page = getattr(request, "session_hash", None) or state["token"]
            if mark_ is None or shown_done.get(page) == mark_:
                return line, app.hub.status, gr.update(), gr.update()
            shown_done[page] = mark_
            return line, app.hub.status, h.rows(app, state, view_name), h.review_counter(app, state)

        ticker.tick(tick, [bstate, view], [job_line, status, table, counter], show_progress="hidden",
                    concurrency_limit=None)

        def do_export(state, fmt_name, only_reviewed):
            try:
                state = state_of(state)
                return h.export(app, state, fmt_name, only_reviewed)
            except h.USER_ERRORS as err:
                return None, f"**Could not export:** {h.page_words(app, state, err)}"

        export_btn.click(do_export, [bstate, fmt, reviewed_only], [download, message])

        map_btn.click(guarded(lambda s, p, t: refresh(s, "keep", h.map_phrase(app, s, p, t))), [bstate, phrase, target], outs)

        # ------------------------------------------------------------------------------ masks

        def pick_object(state, image_id, object_id):
            if image_id is None or object_id is None:
                return None, None
            try:
                value = h.mask_editor_value(app, state_of(state), int(image_id), int(object_id))
            except h.USER_ERRORS:
                return None, None
            return _preview(value), value

        obj.change(pick_object, [bstate, shown_id, obj], [click_img, editor])

        @gpu
        def on_click(state, image_id, object_id, kind, evt: gr.SelectData):
            x, y = evt.index
            note = h.refine_click(app, state, None if image_id is None else int(image_id),
                                  None if object_id is None else int(object_id), x, y, kind == "positive")
            out = refresh(state, int(image_id), note)
            value = h.mask_editor_value(app, out[0], int(image_id), int(object_id))
            return (*out, _preview(value), value)

        def on_click_guarded(state, image_id, object_id, kind, evt: gr.SelectData):
            try:
                state = state_of(state)
            except h.USER_ERRORS as err:
                return (*only_message(f"**{err}**"), gr.update(), gr.update())
            try:
                return on_click(state, image_id, object_id, kind, evt)
            except h.USER_ERRORS as err:
                return (*refresh(state, note=f"**Could not refine:** {h.page_words(app, state, err)}"), gr.update(),
                        gr.update())

        click_img.select(on_click_guarded, [bstate, shown_id, obj, click_kind], [*outs, click_img, editor],
                         concurrency_id="model")

        def save_brush(state, image_id, object_id, value):
            note = h.save_mask_edit(app, state, None if image_id is None else int(image_id),
                                    None if object_id is None else int(object_id), value)
            return refresh(state, int(image_id), note)

        save_mask_btn.click(guarded(save_brush), [bstate, shown_id, obj, editor], outs)

    return demo


def guarded_small(fn, state_of):
    def run(state, *args):
        try:
            return fn(state_of(state), *args)
        except h.USER_ERRORS:
            return gr.update(), gr.update(), gr.update(), gr.update()
    return run


def _preview(value: dict):
    """The image with the object's mask tinted, for clicking."""
    import numpy as np

    background = value["background"][..., :3].astype(np.float32)
    layer = value["layers"][0]
    m = layer[..., 3] > 0
    background[m] = background[m] * 0.5 + np.array([255, 0, 80], dtype=np.float32) * 0.5
    return background.round().astype(np.uint8)
