"""Uploads in Chromium, as a person makes them: a truncated PNG and a 0-byte file get clear messages and
the page keeps working; an image whose file breaks later shows a placeholder and can be removed with
the page's button; uploading twice in the same page adds each file once. Checked in the project store."""

import numpy as np
from app_harness import fresh_page, needs_browser, profile, upload_box_cleared
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
            upload_box_cleared(page)
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


def test_upload_while_the_last_one_is_still_being_added(server, tmp_path):  # noqa: F811  (the imported fixture)
    """A person drops a zip, then more photos while the zip is still being added: both are added. (Gradio's
    default for an upload event skips a new upload while the last one runs: the photos were silently lost
    and the box then cleared.)"""
    import time
    import zipfile

    from playwright.sync_api import sync_playwright

    url, app = server
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as archive:
        for k in range(300):
            _photo(tmp_path / "z" / f"p{k:03d}.png", 100 + k, size=(240, 320))
            archive.write(tmp_path / "z" / f"p{k:03d}.png", f"p{k:03d}.png")
    later = [_photo(tmp_path / f"later{k}.png", 50 + k) for k in range(2)]
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            page = fresh_page(context, url)
            upload = page.locator("#uploads input[type=file]")
            upload.set_input_files([str(many)])
            # the zip's upload event is running
            page.wait_for_selector("#message.pending, #message .pending", state="attached", timeout=60_000)
            upload.set_input_files([str(p) for p in later])

            def stored() -> int:  # the project is made by the first upload that stores something
                return sum(len(p.images()) for p in app.sessions.open_projects())

            deadline = time.monotonic() + 60
            while stored() < 302:
                assert time.monotonic() < deadline, f"only {stored()} of 302 images were added"
                time.sleep(0.2)
            [project] = app.sessions.open_projects()
            page.wait_for_selector("#message >> text=added 2 image(s)", timeout=30_000)
            names = sorted(r.name for r in project.images())
            assert {"later0.png", "later1.png"} <= set(names) and len(set(names)) == 302
        finally:
            context.close()
