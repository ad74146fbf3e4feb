"""The page: layout and event wiring only. Every action is a function of ui/actions/ (imported here, never
importing this module); the page's fixed words and scripts are ui/page_assets.py."""

from __future__ import annotations

import contextlib

import gradio as gr

from gdino.formats import FORMATS

from . import actions as act
from .app import App
from .canvas import make_canvas
from .files import EXAMPLES
from .page_assets import BUSY_JS, FORGET_LINK_JS, HELP, LINK_LABEL, UPLOAD_LABEL
from .refresh import image_stamp
from .render import LIST_FILTERS
from .session import page_address, valid_token
from .text import bold, lines, plain

try:  # on Hugging Face ZeroGPU Spaces this asks for a GPU per call; elsewhere it does nothing
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - spaces is optional off Spaces
    def gpu(fn):
        return fn

TICK_S = 1.0  # how often each page asks for the job's progress and its shown image's changes (bench/bench_refresh.py)


def build(app: App) -> gr.Blocks:
    # gradio's copies of the pictures it sent (unguessable URLs, one session's) are deleted after a day
    with gr.Blocks(title="gdino - label images with words", delete_cache=(3600, 86400)) as demo:
        # a fixed key (kept in the workspace), so the stored project id is still readable after a restart
        bstate = gr.BrowserState(None, storage_key="gdino-session", secret=app.sessions.browser_secret())
        gr.Markdown("# gdino\nType what to find, get boxes (Grounding DINO) and masks (SAM), fix them, export.")
        # the lines that quote names, classes, phrases and errors show them as text (ui/text.py), LaTeX included
        literal = {"latex_delimiters": []}
        status = gr.Markdown(plain(app.hub.status), elem_id="model-status", **literal)
        with gr.Row():
            # the project's detector, among the models this server offers (--model, --models)
            model_pick = gr.Dropdown(choices=act.model_choices(app), value=app.config.model, label="Model",
                                     elem_id="model-choice", interactive=True, scale=2)
            # the project's SAM, among the ones this server offers (--sam, --sams); none with --sam none
            sam_pick = gr.Dropdown(choices=act.sam_choices(app), value=app.hub.sam_default_key, label="SAM (masks)",
                                   elem_id="sam-choice", interactive=True, visible=app.hub.sam_enabled, scale=1)
        project_link = gr.Textbox(label=LINK_LABEL, interactive=False, buttons=["copy"], elem_id="project-link",
                                  visible=app.config.project is None)
        new_link_btn = gr.Button("New link (the old one stops working)", size="sm", elem_id="new-link-btn",
                                 visible=app.config.project is None)
        with gr.Row():
            # a button, not a file box: it sends only the files just chosen, so nothing has to empty it after an
            # answer (a box emptied by a step of its own lost the files chosen before that step ran: issue 25).
            # Files dropped on it are sent the same way (DROP_JS). No type filter in the page: the server's
            # message names a file it cannot add, where the page's filter showed a toast that stayed up.
            with gr.Column(elem_id="uploads"):
                uploads = gr.UploadButton(UPLOAD_LABEL, file_count="multiple", elem_id="upload-btn")
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
        shown_stamp = gr.Textbox(value="", visible=False)  # what the page was last sent of it (ui/refresh.py)
        if EXAMPLES:
            gr.Examples([[path.name, classes] for path, classes in EXAMPLES], inputs=[example_path, classes_text],
                        label="Examples: one click adds the photo and its classes; then press Detect")
        with gr.Row():
            with gr.Column(scale=3):
                canvas = make_canvas(elem_id="canvas", height=560)
                info = gr.Markdown("", elem_id="image-info", **literal)
                message = gr.Markdown("", elem_id="message", **literal)  # next to the editor: what the last action did
                with gr.Row():
                    prev_btn = gr.Button("◀ Prev (p)", elem_id="prev-btn")
                    next_btn = gr.Button("Next (n) ▶", elem_id="next-btn")
                    reviewed_btn = gr.Button("Mark reviewed (r)", elem_id="reviewed-btn")
                    skip_btn = gr.Button("Skip (s)", elem_id="skip-btn")
                    remove_btn = gr.Button("Remove image", elem_id="remove-btn", variant="stop")
                gr.Markdown(HELP)
            with gr.Column(scale=2):
                counter = gr.Markdown("", elem_id="counter", **literal)
                list_filter = gr.Dropdown(list(LIST_FILTERS), value="all", label="Show")  # the list's filter
                table = gr.Dataframe(headers=["id", "name", "status", "objects", "lowest score"], interactive=False,
                                     elem_id="image-table", wrap=True)
                with gr.Row():
                    all_btn = gr.Button("Auto-label all unlabeled", elem_id="auto-all-btn")
                    cancel_btn = gr.Button("Cancel", elem_id="cancel-btn")
                job_line = gr.Markdown("", elem_id="job-status", **literal)  # the server's job: the page stays usable meanwhile
                ticker = gr.Timer(TICK_S)
                with gr.Accordion("Export", open=True):
                    fmt = gr.Radio(list(FORMATS), value=FORMATS[0], label="Format")
                    reviewed_only = gr.Checkbox(value=False, label="Reviewed images only")
                    export_btn = gr.Button("Export zip", elem_id="export-btn")
                    download = gr.File(label="Download", elem_id="download")
                with gr.Accordion("Train on reviewed images", open=False, elem_id="train-panel"):
                    gr.Markdown("Fine-tune the project's model on the images marked *reviewed*; a fifth of them is "
                                "held out to measure the base and the fine-tuned model. The new model stays in the "
                                "project (its folder `models/`); the base model is not changed.")
                    with gr.Row():
                        train_epochs = gr.Number(value=12, precision=0, minimum=1, maximum=500, label="Epochs",
                                                 elem_id="train-epochs")
                        train_fast = gr.Checkbox(value=False, label="Fast (no augmentation)", elem_id="train-fast")
                    with gr.Row():
                        train_btn = gr.Button("Train on reviewed images", elem_id="train-btn")
                        use_model_btn = gr.Button("Use the trained model", elem_id="use-model-btn")
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
        # ---------------------------------------------------------------------------- helpers

        def state_of(state):
            """This browser's session, checked (a page can send anything). Only the page load may start a
            new one: an event racing ahead of the load must not open a second, empty project."""
            if state is None:
                raise act.ProjectError("the page has not finished loading; wait a moment and try again")
            return app.sessions.check_state(state)

        keep_choice = object()

        def refresh(state, image_id="keep", note=None, said=None, chosen=keep_choice):
            """Everything that shows the project, after any change; with a message: `note` (plain text: shown
            literally) or `said` (Markdown made with ui/text.py). The class menu keeps the class chosen in it
            unless a class action says which to show (`chosen`: None for none)."""
            if image_id == "keep":
                image_id = act.current_image(app, state)
            state = {**state, "image_id": image_id}
            project = app.sessions.project(state)
            stamp = image_stamp(project, image_id)  # read first: a change between the two reads is drawn later
            value, text = act.view_image(app, state, image_id)
            # the image Next would show, embedded while the person works on this one; never a reason to fail
            # the page's action (the click embeds it then)
            with contextlib.suppress(*act.USER_ERRORS):
                act.prefetch_next(app, state, filter_of.get(state["token"], "all"), embed=embed_on_gpu)
            classes = project.classes
            return (state, value, image_id, stamp, text, act.rows(app, state, filter_of.get(state["token"], "all")),
                    gr.update(choices=project.phrases, value=None),
                    gr.update(choices=classes) if chosen is keep_choice else
                    gr.update(choices=classes, value=chosen if chosen in classes else None),
                    act.class_counts(app, state), act.review_counter(app, state),
                    gr.update(choices=act.model_choices(app, state), value=act.project_model(app, state)),
                    gr.update(value=act.project_sam(app, state)) if app.hub.sam_enabled else gr.update(),
                    said if said is not None else lines(note) if note is not None else gr.update(),
                    plain(act.status_line(app, state)))

        filter_of: dict[str, str] = {}  # token -> the list filter its page chose last (the "Show" menu)
        # an action's progress shows on the canvas only: gradio's "processing | 0.6s" timer inside the lines of
        # text (the image's line, the counter, the list, the message) made them flash on every click
        shown = {"show_progress_on": [canvas]}
        # message and status stay last: only_message relies on it
        outs = [bstate, canvas, shown_id, shown_stamp, info, table, phrase, class_old, class_table, counter, model_pick,
                sam_pick, message, status]

        def only_message(text):
            """Leave the page as it is and say why (an action that could not start)."""
            return (*[gr.update()] * (len(outs) - 2), text, gr.update())

        def guarded(fn, extra: int = 0):
            """Run an action; a user error becomes a message in the page, never a traceback. `extra`: outputs
            after `outs` that fn also answers (left as they are after an error)."""
            rest = (gr.update(),) * extra

            def run(state, *args):
                try:
                    state = state_of(state)
                except act.ProjectError as err:
                    return (*only_message(bold(err)), *rest)
                try:
                    return fn(state, *args)
                except act.USER_ERRORS as err:
                    said = f"**Could not do that:** {lines(act.page_words(app, state, err))}"
                try:
                    return (*refresh(state, said=said), *rest)
                except act.USER_ERRORS:  # the project itself cannot be shown now
                    return (*only_message(said), *rest)
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
                saved = act.load_prompt(app, state)
                out = refresh(state, note=note)
            except act.USER_ERRORS as err:
                return (*only_message(f"**Could not open the project:** {lines(act.page_words(app, None, err))}"),
                        *[gr.update()] * 7)
            shown_link = app.sessions.shown_link(state, address) if app.config.project is None else gr.update()
            return (*out, saved["mode"], saved["classes_text"], saved["prompt_text"], saved["box_threshold"],
                    saved["text_threshold"], saved["masks"] and app.hub.masks_available, shown_link)

        demo.load(on_load, [bstate], load_outs, **shown).then(None, js=FORGET_LINK_JS)

        def new_link(state, request: gr.Request):
            """A new link for this project; the old one stops working (Sessions.new_link)."""
            headers = request.headers if request is not None else {}
            try:
                state, note = app.sessions.new_link(state_of(state))
            except act.USER_ERRORS as err:
                return gr.update(), gr.update(), f"**Could not do that:** {lines(act.page_words(app, None, err))}"
            address = page_address(headers.get("referer"), headers.get("origin"))
            return state, app.sessions.link(state["token"], address), lines(note)

        new_link_btn.click(new_link, [bstate], [bstate, project_link, message])

        mode.change(lambda m: (gr.update(visible=m == "classes"), gr.update(visible=m == "free text")), [mode],
                    [classes_text, prompt_text])

        def after_upload(state, request: gr.Request):
            """The project link shown (the first upload made the project)."""
            if app.config.project is not None or not isinstance(state, dict) or not valid_token(state.get("token")):
                return gr.update()
            headers = request.headers if request is not None else {}
            return app.sessions.shown_link(state, page_address(headers.get("referer"), headers.get("origin")))

        # "multiple": an upload made while the last one is still being added waits its turn (gradio's default
        # for upload events skips it: those files were lost)
        uploads.upload(guarded(lambda s, files: refresh(s, "keep", act.add_uploads(app, s, files))), [bstate, uploads],
                       outs, trigger_mode="multiple", **shown,
                       ).then(after_upload, [bstate], [project_link], show_progress="hidden")

        def open_folder(state, path):
            state = act.open_server_project(app, state, path)
            return refresh(state, "keep", f"opened {path}")

        def add_example(state, path):
            if not path:
                return refresh(state)
            return refresh(state, "keep", act.add_example(app, state, path))

        example_path.change(guarded(add_example), [bstate, example_path], outs, **shown)

        open_btn.click(guarded(open_folder), [bstate, folder], outs,
                         **shown)
        folder_btn.click(guarded(lambda s, path: refresh(s, "keep", act.add_server_folder(app, s, path))), [bstate, folder], outs,
                         **shown)

        model_pick.input(guarded(lambda s, m: refresh(s, "keep", act.choose_model(app, s, m))), [bstate, model_pick],
                         outs, **shown)

        sam_pick.input(guarded(lambda s, k: refresh(s, "keep", act.choose_sam(app, s, k))), [bstate, sam_pick], outs,
                       **shown)

        prompt_inputs = [mode, classes_text, prompt_text, box_thr, text_thr, masks]

        @gpu
        def detect(state, image_id, *prompt):
            settings = act.settings_from_inputs(*prompt)
            act.save_prompt(app, state, *prompt)
            note = act.detect_image(app, state, None if image_id is None else int(image_id), settings)
            return refresh(state, None if image_id is None else int(image_id), note)

        detect_btn.click(guarded(detect), [bstate, shown_id, *prompt_inputs], outs, concurrency_id="model", **shown)

        @gpu  # SAM for a click: on a ZeroGPU Space the model runs only inside such a call (a worker process)
        def refine_on_gpu(pixels, points, labels, box, mask=None, sam=None, store=None):
            return act.refine_mask(app, pixels, points, labels, box, mask, sam=sam, store=store)

        @gpu  # a prefetch's embedding, the same way (refresh queues one: act.prefetch_next)
        def embed_on_gpu(pixels, sam=None, store=None):
            act.embed_image(app, pixels, sam, store)

        def on_edit(state, evt: gr.EventData):
            """One edit from the canvas: applied by the server, answered with the new canvas and what it changes
            around it (the image's line, the list, the counter, the phrase and class choices)."""
            try:
                state = state_of(state)
                payload = getattr(evt, "_data", None)

                def answer(value, image_id):  # made in the edit's turn, like the value: they agree
                    text = act.image_line(app, state, image_id, value["readable"]) if value is not None else gr.update()
                    project = app.sessions.project(state)
                    return (value, text, act.rows(app, state, filter_of.get(state["token"], "all")),
                            act.review_counter(app, state), gr.update(choices=project.phrases),
                            gr.update(choices=project.classes),
                            image_stamp(project, image_id) if value is not None else gr.update())
                return act.canvas_edit(app, state, payload, refine=refine_on_gpu, answer=answer)
            except act.NotShownError as err:
                return (gr.update(), bold(err), *[gr.update()] * 5)
            except act.USER_ERRORS as err:
                return (gr.update(), f"**Could not do that:** {lines(act.page_words(app, None, err))}",
                        *[gr.update()] * 5)

        canvas.edit(on_edit, [bstate], [canvas, info, table, counter, phrase, class_old, shown_stamp],
                    show_progress="hidden",
                    trigger_mode="multiple", concurrency_id="edits", concurrency_limit=16)  # ui/edit_order.py

        def go(delta):
            def run(state, filter_name):
                filter_of[state["token"]] = filter_name
                return refresh(state, act.step(app, state, filter_name, delta))
            return run

        prev_btn.click(guarded(go(-1)), [bstate, list_filter], outs, **shown)
        next_btn.click(guarded(go(+1)), [bstate, list_filter], outs, **shown)

        def mark(status_name):
            def run(state, image_id, filter_name):
                filter_of[state["token"]] = filter_name
                nxt = act.mark_and_step(app, state, filter_name, None if image_id is None else int(image_id), status_name)
                return refresh(state, nxt)
            return run

        reviewed_btn.click(guarded(mark("reviewed")), [bstate, shown_id, list_filter], outs, **shown)
        skip_btn.click(guarded(mark("skipped")), [bstate, shown_id, list_filter], outs, **shown)

        def remove(state, image_id, filter_name):
            filter_of[state["token"]] = filter_name
            nxt, note = act.remove_image(app, state, filter_name, None if image_id is None else int(image_id))
            return refresh(state, nxt, note)

        remove_btn.click(guarded(remove), [bstate, shown_id, list_filter], outs, **shown)

        def rename_class(state, old, new):
            if not old:
                return refresh(state, said=bold("choose a class in the menu first"))
            note = act.rename_class(app, state, old, new)
            named = (new or "").strip().casefold()  # the class the objects now have (merged: an existing one)
            return refresh(state, "keep", note, chosen=next((c for c in app.sessions.project(state).classes
                                                             if c.casefold() == named), None))

        def delete_class(state, name, both):
            """Deleted: nothing chosen in the menu, and the "its objects too" tick off again (it must be ticked
            for each such delete)."""
            if not name:
                return (*refresh(state, said=bold("choose a class in the menu first")), gr.update())
            return (*refresh(state, "keep", act.delete_class(app, state, name, both), chosen=None), False)

        rename_btn.click(guarded(rename_class), [bstate, class_old, class_new], outs, **shown)
        delete_class_btn.click(guarded(delete_class, extra=1), [bstate, class_old, with_objects], [*outs, with_objects],
                               **shown)

        def choose_filter(state, filter_name):
            filter_of[state["token"]] = filter_name
            return refresh(state)

        list_filter.change(guarded(choose_filter), [bstate, list_filter], outs, **shown)

        def pick_row(state, evt: gr.SelectData):  # not wrapped: gradio injects evt by this signature
            try:
                state = state_of(state)
                row = evt.row_value if evt is not None else None
                return refresh(state, int(row[0])) if row else refresh(state)
            except act.USER_ERRORS as err:
                return only_message(f"**Could not open that image:** {lines(act.page_words(app, state, err))}")

        table.select(pick_row, [bstate], outs, **shown)

        def label_all(state, *prompt):
            """Start the project's auto-label job on the server; the page polls it (ticker) and stays usable."""
            settings = act.settings_from_inputs(*prompt)
            act.save_prompt(app, state, *prompt)
            return refresh(state, "keep", act.start_auto_label(app, state, settings))

        all_btn.click(guarded(label_all), [bstate, *prompt_inputs], outs, **shown)

        def cancel(state):
            try:
                return lines(act.cancel_auto_label(app, state_of(state)))
            except act.USER_ERRORS as err:
                return bold(err)

        cancel_btn.click(cancel, [bstate], [job_line], queue=False)

        def start_training(state, epochs, fast):
            """Start the project's training job on the server; the page polls it like auto-labeling."""
            return refresh(state, "keep", act.start_training(app, state, epochs, fast))

        train_btn.click(guarded(start_training), [bstate, train_epochs, train_fast], outs, **shown)
        use_model_btn.click(guarded(lambda s: refresh(s, "keep", act.use_trained_model(app, s))), [bstate], outs, **shown)

        shown_done: dict[str, tuple] = {}

        def tick(state, filter_name, image_id, stamp, busy, request: gr.Request):
            """Every second: the model status and the job's progress; the list when the job moved on (per page:
            two tabs of one project both follow it); the shown image when the project's differs from what this
            page was sent (another window's or a run's change: ui/refresh.py), unless this page is in the middle
            of a change of its own (`busy`, from the page: BUSY_JS)."""
            keep = gr.update()
            try:
                state = state_of(state)
                line = act.job_status(app, state)
                project = app.sessions.project(state)
            except act.USER_ERRORS:
                return keep, plain(app.hub.status), keep, keep, keep, keep, keep
            status_text = plain(act.status_line(app, state))
            job = app.jobs.get(project.path)
            mark_ = None if job is None else (id(job), job.done, job.state)
            page = getattr(request, "session_hash", None) or state["token"]
            moved = mark_ is not None and shown_done.get(page) != mark_
            if moved:
                shown_done[page] = mark_
            image_id = None if image_id is None else int(image_id)
            shown_out = (keep, keep, keep)
            if image_id is not None and not busy:
                now = image_stamp(project, image_id)
                if now not in (stamp, "gone"):
                    try:
                        shown_out = (*act.view_image(app, {**state, "image_id": image_id}, image_id), now)
                        moved = True
                    except act.USER_ERRORS:  # removed meanwhile: the page's next action shows what is there
                        pass
            listed = (act.rows(app, state, filter_name), act.review_counter(app, state)) if moved else (keep, keep)
            return (lines(line), status_text, *listed, *shown_out)

        canvas_busy = gr.Checkbox(value=False, visible=False)  # filled in by the page itself (BUSY_JS)
        ticker.tick(tick, [bstate, list_filter, shown_id, shown_stamp, canvas_busy],
                    [job_line, status, table, counter, canvas, info, shown_stamp], js=BUSY_JS, show_progress="hidden",
                    concurrency_limit=None)

        def do_export(state, fmt_name, only_reviewed):
            try:
                state = state_of(state)
                path, note = act.export(app, state, fmt_name, only_reviewed)
                return path, lines(note)
            except act.USER_ERRORS as err:
                return None, f"**Could not export:** {lines(act.page_words(app, state, err))}"

        export_btn.click(do_export, [bstate, fmt, reviewed_only], [download, message])

        map_btn.click(guarded(lambda s, p, t: refresh(s, "keep", act.map_phrase(app, s, p, t))), [bstate, phrase, target],
                     outs, **shown)

    return demo
