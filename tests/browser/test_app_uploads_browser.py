"""Uploads in Chromium, as a person makes them: a truncated PNG and a 0-byte file get clear messages and
the page keeps working; an image whose file breaks later shows a placeholder and can be removed with
the page's button; uploading twice in the same page adds each file once; files chosen right after the last
answer, or while the last upload is still being added, or dropped on the upload area, are all added; a file
that is not an image is named in the message (no toast). Checked in the project store."""

import time

import numpy as np
from app_harness import fresh_page, needs_browser, profile
from PIL import Image
from test_app_browser import server  # noqa: F401  (the fixture)

pytestmark = needs_browser


def _photo(path, seed, size=(120, 160)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _text(page, selector):
    return page.locator(selector).inner_text()


def test_broken_and_repeated_uploads(server, tmp_path):  # noqa: F811  (the imported fixture)
    from playwright.sync_api import sync_playwright

    url, app = server
    good = [_photo(tmp_path / f"good{k}.png", k) for k in range(2)]
    data = _photo(tmp_path / "big.png", 9, size=(300, 400)).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page = fresh_page(context, url)
            upload = page.locator("#uploads input[type=file]")

            upload.set_input_files([str(good[0]), str(cut), str(empty)])
            page.wait_for_selector("#message >> text=added 1 image(s)", timeout=60_000)
            message = _text(page, "#message")
            assert "cut.png" in message and "truncated" in message and "empty.jpg" in message
            assert "/tmp" not in message and str(tmp_path) not in message
            [project] = app.sessions.open_projects()
            assert [r.name for r in project.images()] == ["good0.png"]

            # the same page, a second upload with the first file again: each file once
            upload.set_input_files([str(good[0]), str(good[1])])
            page.wait_for_selector("#message >> text=already in the project", timeout=60_000)
            assert sorted(r.name for r in project.images()) == ["good0.png", "good1.png"]

            # a file that breaks after it was added: the page shows the rest and offers to remove it
            broken = project.find_image("good0.png")
            broken.path.write_bytes(broken.path.read_bytes()[:100])
            page.reload(wait_until="load")
            page.wait_for_selector("#image-info >> text=cannot be read", timeout=60_000)
            assert "good1.png" in _text(page, "#image-table")
            page.locator("#remove-btn").click()
            page.wait_for_selector("#message >> text=removed good0.png", timeout=30_000)
            page.wait_for_selector("#image-info >> text=good1.png", timeout=30_000)
            assert [r.name for r in project.images()] == ["good1.png"]
            assert ".toast-body.error" not in page.content()
        finally:
            context.close()


def test_upload_while_the_last_one_is_still_being_added(server, tmp_path, monkeypatch):  # noqa: F811
    """A person drops a zip, then more photos while the zip is still being added: both are added. (Gradio's
    default for an upload event skips a new upload while the last one runs: the photos were silently lost
    and the box then cleared.) Deterministic: the zip's upload event is held on the server (the app runs in this
    process) until the photos have been chosen; it once waited for the canvas' transient "pending" class, which a
    loaded machine could miss."""
    import threading
    import zipfile

    from playwright.sync_api import sync_playwright

    import ui.actions

    url, app = server
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as archive:
        for k in range(5):
            _photo(tmp_path / "z" / f"p{k:03d}.png", 100 + k, size=(240, 320))
            archive.write(tmp_path / "z" / f"p{k:03d}.png", f"p{k:03d}.png")
    later = [_photo(tmp_path / f"later{k}.png", 50 + k) for k in range(2)]
    started, release = threading.Event(), threading.Event()
    real = ui.actions.add_uploads

    def held(app_, state, files):  # the zip's event waits, running, until the photos are chosen
        if files and any(str(f).endswith(".zip") for f in files):
            started.set()
            release.wait(120)
        return real(app_, state, files)

    monkeypatch.setattr(ui.actions, "add_uploads", held)
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page = fresh_page(context, url)
            earlier = {p.path for p in app.sessions.open_projects()}
            upload = page.locator("#uploads input[type=file]")
            upload.set_input_files([str(many)])
            assert started.wait(60), "the zip's upload event never started"
            # while the zip's event runs: the page must send the photos' upload event (gradio's default dropped it)
            with page.expect_request(lambda r: "queue/join" in r.url and "later0.png" in (r.post_data or ""),
                                     timeout=30_000):
                upload.set_input_files([str(p) for p in later])
            release.set()

            def mine():
                return [p for p in app.sessions.open_projects() if p.path not in earlier and p.images()]

            deadline = time.monotonic() + 120
            while not mine() or len(mine()[0].images()) < 7:
                assert time.monotonic() < deadline, f"only {[len(p.images()) for p in mine()]} of 7 images were added"
                time.sleep(0.2)
            [project] = mine()
            page.wait_for_selector("#message >> text=added 2 image(s)", timeout=30_000)
            names = sorted(r.name for r in project.images())
            assert {"later0.png", "later1.png"} <= set(names) and len(set(names)) == 7
        finally:
            release.set()
            context.close()


class Held:
    """Holds back, while `holding`, the steps the page runs after an upload's answer (on their way to the
    server): the race of a person choosing the next files while the page is still answering the last upload,
    made to happen on every try."""

    def __init__(self, page, url):
        events = page.request.get(url.rstrip("/") + "/config").json()["dependencies"]
        uploads = {d["id"] for d in events if any(t[1] == "upload" for t in d["targets"])}
        self.after = {d["id"] for d in events if d.get("trigger_after") in uploads}
        self.events, self._holding = [], True
        page.route("**/gradio_api/queue/join*", self._event)

    def _event(self, route):
        if self._holding and route.request.post_data_json.get("fn_index") in self.after:
            self.events.append(route)
        else:
            route.continue_()

    def holding(self, on: bool) -> None:
        self._holding = on
        while not on and self.events:
            self.events.pop(0).continue_()


def test_twelve_uploads_each_chosen_right_after_the_last_answer(server, tmp_path):  # noqa: F811
    """A person opens the file dialog as soon as the page says the last photo was added, and picks the next:
    every photo is stored, and a photo already in the project is answered as such. (The upload box used to be
    emptied by a step of its own after the answer; a dialog opened before that step's answer came belonged to
    the box's old state, and the photo picked in it went nowhere.)"""
    from playwright.sync_api import expect, sync_playwright

    url, app = server
    photos = [_photo(tmp_path / f"photo{k:02d}.png", 200 + k) for k in range(12)]
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page = fresh_page(context, url)
            held = Held(page, url)
            for photo in [*photos, photos[3]]:
                with page.expect_file_chooser() as chooser:  # right after the last answer
                    page.locator("#uploads button:visible").first.click()
                held.holding(False)  # the page finishes answering the last upload while the dialog is open
                expect(page.locator("#uploads .file-preview")).to_have_count(0)  # no earlier file left in the box
                held.holding(True)
                chooser.value.set_files([str(photo)])
                expect(page.locator("#image-table")).to_contain_text(photo.name, timeout=30_000)
            expect(page.locator("#message")).to_contain_text("already in the project, not added again: photo03.png")
            held.holding(False)
            [project] = app.sessions.open_projects()
            assert sorted(r.name for r in project.images()) == [p.name for p in photos]
        finally:
            context.close()


def test_a_file_that_is_not_an_image_is_named_in_the_message_not_a_toast(server, tmp_path):  # noqa: F811
    """A text file chosen with a photo: the page's message names it; no toast (one stayed up across later
    uploads), and the next upload's message replaces it."""
    from playwright.sync_api import expect, sync_playwright

    url, app = server
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    photos = [_photo(tmp_path / f"p{k}.png", 300 + k) for k in range(2)]
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page = fresh_page(context, url)
            upload = page.locator("#uploads input[type=file]")
            upload.set_input_files([str(notes), str(photos[0])])
            expect(page.locator("#message")).to_contain_text("notes.txt: not an image or a zip", timeout=60_000)
            expect(page.locator("#message")).to_contain_text("added 1 image(s)")
            upload.set_input_files([str(photos[1])])
            expect(page.locator("#image-table")).to_contain_text("p1.png", timeout=60_000)
            expect(page.locator("#message")).not_to_contain_text("notes.txt")
            assert page.locator(".toast-body").count() == 0
            [project] = app.sessions.open_projects()
            assert sorted(r.name for r in project.images()) == ["p0.png", "p1.png"]
        finally:
            context.close()


def test_files_dropped_on_the_upload_area_are_added(server, tmp_path):  # noqa: F811
    """Dropping files on the upload area sends them as choosing them does (the page's drop handler hands them
    to the upload button's file input). The drop event is made in the page with the files' bytes."""
    from playwright.sync_api import expect, sync_playwright

    url, app = server
    photos = [_photo(tmp_path / f"drop{k}.png", 400 + k) for k in range(2)]
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page = fresh_page(context, url)
            files = [{"name": p.name, "bytes": list(p.read_bytes())} for p in photos]
            page.evaluate("""(files) => {
              const data = new DataTransfer();
              for (const f of files) data.items.add(new File([new Uint8Array(f.bytes)], f.name, {type: 'image/png'}));
              const zone = document.querySelector('#uploads button');
              zone.dispatchEvent(new DragEvent('dragover', {bubbles: true, cancelable: true, dataTransfer: data}));
              zone.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: data}));
            }""", files)
            expect(page.locator("#message")).to_contain_text("added 2 image(s)", timeout=60_000)
            [project] = app.sessions.open_projects()
            assert sorted(r.name for r in project.images()) == ["drop0.png", "drop1.png"]
        finally:
            context.close()
