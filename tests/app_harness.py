"""What the app's tests share: the browser (Debian's chromium, driven by playwright), a free port, and the
app started as `python app.py` would start it, in this process."""

import os
import shutil
import socket

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# CI installs chromium and sets GDINO_REQUIRE_BROWSER=1, so there a missing browser fails instead of skipping
needs_browser = pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("GDINO_REQUIRE_BROWSER"),
                                   reason="needs Debian's chromium: apt-get install -y chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str]):
    """(gradio Blocks, App): the app built and served from `python app.py ARGS`' flags, without blocking."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from ui import build_app, launch, parse_args

    config = parse_args(args)
    demo, app = build_app(config)
    launch(demo, config, prevent_thread_lock=True, quiet=True)
    return demo, app


def tiny_app(model_dir, tmp_path):
    """The app's App (handlers, sessions, models) on the tiny detector and a tiny SAM, its workspace in tmp_path;
    close it with app.sessions.close()."""
    from tiny_sam import save_tiny_sam

    from ui import handlers as h
    from ui.config import AppConfig

    return h.make_app(AppConfig(model=str(model_dir), sam=str(save_tiny_sam(tmp_path / "sam.pth")),
                                workspace=tmp_path / "ws"))


def profile(pw, path, **options):
    """A fresh Chromium profile in `path` (its own storage: a new visitor)."""
    return pw.chromium.launch_persistent_context(str(path), executable_path=CHROMIUM, headless=True, args=ARGS,
                                                 viewport={"width": 1400, "height": 1000}, **options)


def fresh_page(context, url):
    """A new tab on the app, loaded, showing its visitor's project still empty."""
    page = context.new_page()
    page.goto(url, wait_until="load")
    page.wait_for_selector("#image-info >> text=No images yet", timeout=60_000)
    return page


def upload_box_cleared(page):
    """Wait until the page has emptied the upload box after an upload's answer (its own step after the answer).
    A person then chooses the next files; choosing them before that step ran is the upload race of issue 25
    (the step clears the new choice), which these tests do not exercise by accident."""
    page.wait_for_selector("#uploads .file-preview", state="detached", timeout=60_000)


def download_export(page, path):
    """Press Export, then download the zip the page offers to `path`."""
    page.locator("#export-btn").click()
    link = page.locator("#download a").first
    link.wait_for(timeout=60_000)
    with page.expect_download() as download_info:
        link.click()
    download_info.value.save_as(path)
    return path
