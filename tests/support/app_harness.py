"""What the app's tests share: the browser (Debian's chromium, driven by playwright), a free port, and the
app started as `python app.py` would start it, in this process."""

import contextlib
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


@contextlib.contextmanager
def running_app(tiny_hf, tmp):
    """The app served on a free port with the tiny detector and a tiny SAM, its workspace in `tmp` ->
    (its URL, its App); closed afterwards."""
    from tiny_sam import save_tiny_sam

    demo, app = start(["--model", str(tiny_hf[1]), "--sam", str(save_tiny_sam(tmp / "sam.pth")),
                       "--workspace", str(tmp / "ws"), "--port", str(free_port())])
    try:
        yield demo.local_url, app
    finally:
        demo.close()
        app.sessions.close()


@contextlib.contextmanager
def browser(tmp_path):
    """A Chromium context with a fresh profile in tmp_path (one new visitor); closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile")
        try:
            yield context
        finally:
            context.close()


def until(page, check, what, timeout_ms=60_000):
    """Poll the project (the page gives no signal for a store change) until check() holds; a failure says what
    the canvas said."""
    for _ in range(timeout_ms // 50):
        result = check()
        if result:
            return result
        page.wait_for_timeout(50)
    said = page.locator("#canvas .gc-message").all_text_contents()
    raise AssertionError(f"the project never got {what} (the canvas says: {said!r})")


def drag(page, a, b, steps=8):
    """Press at page px a, move to b in `steps`, release: a person's drag."""
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=steps)
    page.mouse.up()


def tiny_app(model_dir, tmp_path):
    """The app's App (handlers, sessions, models) on the tiny detector and a tiny SAM, its workspace in tmp_path;
    close it with app.sessions.close()."""
    from tiny_sam import save_tiny_sam

    from ui import actions as h
    from ui.app_config import AppConfig

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


def hold_ticks(page, url) -> list:
    """Hold back, from now on, the page's timer ticks on their way to the server (the tick that shows other
    windows' and runs' changes): the page keeps the view it has. Returns the held requests. Ticks are sent one at a
    time (gradio's trigger_mode "once"): once one is held, every earlier tick of the page has been answered."""
    events = page.request.get(url.rstrip("/") + "/config").json()["dependencies"]
    ticks = {d["id"] for d in events if any(t[1] == "tick" for t in d["targets"])}
    held: list = []

    def route(request_route):
        if (request_route.request.post_data_json or {}).get("fn_index") in ticks:
            held.append(request_route)
        else:
            request_route.continue_()
    page.route("**/gradio_api/queue/join*", route)
    return held


def download_export(page, path):
    """Press Export, then download the zip the page offers to `path`."""
    page.locator("#export-btn").click()
    link = page.locator("#download a").first
    link.wait_for(timeout=60_000)
    with page.expect_download() as download_info:
        link.click()
    download_info.value.save_as(path)
    return path
