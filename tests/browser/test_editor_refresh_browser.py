"""Issue 25, items 6, 10 and 12: each window shows what other windows and runs store. A second window shows the
first's new box within a second or two, without disturbing a box being drawn meanwhile; the shown image follows
an auto-label run to its stored objects; gradio's progress timers do not flash inside the lines of text.
Headless Chromium with the tiny models, real pointer events; the PROJECT's store is checked."""

import contextlib

import numpy as np
import pytest
from app_harness import browser, fresh_page, needs_browser, running_app, until
from PIL import Image

pytestmark = needs_browser

ROOT = "#canvas .gc-root"
W, H = 320, 240
SHOWN_WITHIN_MS = 10_000  # refreshed every second; generous for a busy machine


@pytest.fixture(scope="module")
def server(tiny_hf, tmp_path_factory):
    with running_app(tiny_hf, tmp_path_factory.mktemp("refresh_app")) as served:
        yield served


@pytest.fixture
def context(tmp_path):
    with browser(tmp_path) as context:
        yield context


def photos(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"shot{i:02d}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def uploaded(context, url, app, files):
    """A new visitor's page with the files uploaded: (page, its project)."""
    from playwright.sync_api import expect

    earlier = {p.path for p in app.sessions.open_projects()}
    page = fresh_page(context, url)
    page.locator("#uploads input[type=file]").set_input_files(files)
    expect(page.locator("#image-table")).to_contain_text(files[-1].rsplit("/", 1)[-1], timeout=60_000)
    return page, next(p for p in app.sessions.open_projects() if p.path not in earlier and p.images())


def at(page, x, y):
    """Image px -> page px on the fit-centred canvas."""
    r = page.locator("#canvas canvas.gc-canvas").bounding_box()
    s = min(r["width"] / W, r["height"] / H)
    return round(r["x"] + (r["width"] - W * s) / 2 + x * s), round(r["y"] + (r["height"] - H * s) / 2 + y * s)



def ready(page, boxes=None, timeout=60_000):
    extra = "" if boxes is None else f"[data-visible-boxes='{boxes}']"
    page.wait_for_selector(f"{ROOT}[data-image-ready='1']{extra}", timeout=timeout)


def test_a_second_window_shows_the_first_windows_new_box(server, context, tmp_path):
    from playwright.sync_api import expect

    url, app = server
    first, project = uploaded(context, url, app, photos(tmp_path / "up", 1))
    [image] = project.images()
    project.add_classes(["cat"])
    first.locator("#next-btn").click()  # the page reads the classes again
    first.wait_for_function("() => document.querySelector('#canvas .gc-class')?.options.length === 1", timeout=30_000)
    second = context.new_page()  # the same browser: the same project
    second.goto(url, wait_until="load")
    for page in (first, second):
        ready(page, boxes=0)
        page.locator("#canvas canvas.gc-canvas").scroll_into_view_if_needed()

    # the second window draws a box: the first shows it, and its line counts it
    second.mouse.move(*at(second, 20, 20))
    second.mouse.down()
    second.mouse.move(*at(second, 100, 90), steps=6)
    second.mouse.up()
    until(second, lambda: len(project.objects(image.id)) == 1, "the second window's box")
    ready(first, boxes=1, timeout=SHOWN_WITHIN_MS)
    expect(first.locator("#image-info")).to_contain_text("1 object(s)", timeout=SHOWN_WITHIN_MS)

    # the first window is drawing a box when the second adds another: neither is lost, both windows show all
    first.mouse.move(*at(first, 150, 30))
    first.mouse.down()
    first.mouse.move(*at(first, 200, 80), steps=4)
    second.mouse.move(*at(second, 40, 150))
    second.mouse.down()
    second.mouse.move(*at(second, 110, 220), steps=6)
    second.mouse.up()
    until(second, lambda: len(project.objects(image.id)) == 2, "the second window's second box")
    first.mouse.move(*at(first, 250, 120), steps=4)
    first.mouse.up()
    drawn = until(first, lambda: [o for o in project.objects(image.id) if o.box[0] > 140], "the first window's box")
    assert [round(v) for v in drawn[0].box] == pytest.approx([150, 30, 250, 120], abs=3)
    assert len(project.objects(image.id)) == 3
    for page in (first, second):
        ready(page, boxes=3, timeout=SHOWN_WITHIN_MS)


def test_the_shown_image_follows_an_auto_label_run(server, context, tmp_path):
    from playwright.sync_api import expect

    url, app = server
    page, project = uploaded(context, url, app, photos(tmp_path / "run", 3))
    ready(page, boxes=0)
    shown = int(page.locator(ROOT).get_attribute("data-image-id"))
    assert project.image(shown).status == "unlabeled"
    page.locator("#classes textarea, #classes input").first.fill("cat, remote control")
    page.locator("input[aria-label='number input for Box threshold']").fill("0.05")
    page.locator("input[aria-label='number input for Box threshold']").press("Enter")
    page.locator("#auto-all-btn").click()
    record = until(page, lambda: project.image(shown).status == "auto" and project.image(shown), "the run's labels")
    assert record.num_objects > 0, "the tiny model found nothing: the test shows no refresh"
    ready(page, boxes=record.num_objects, timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#image-info")).to_contain_text(f"status auto - {record.num_objects} object(s)",
                                                        timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#job-status")).to_contain_text("done", timeout=120_000)
    expect(page.locator("#job-status")).to_contain_text("3 / 3 image(s)")


def test_no_progress_timer_inside_the_lines_of_text(server, context, tmp_path):
    """While an action is on its way (here Next, its answer held back), its progress shows on the canvas only:
    the image's line, the counter, the list and the message keep their text."""
    from playwright.sync_api import Error, expect

    url, app = server
    page, project = uploaded(context, url, app, photos(tmp_path / "two", 2))
    ready(page)
    held = []
    page.route("**/gradio_api/queue/data*", lambda route: held.append(route))  # the stream of answers
    page.locator("#next-btn").click()
    page.wait_for_selector("#canvas [data-testid=status-tracker]:not(.hide)", timeout=30_000)  # Next is pending
    for line in ("#image-info", "#counter", "#image-table", "#message"):
        assert page.locator(f"{line} [data-testid=status-tracker]:not(.hide)").count() == 0, line
    page.unroute("**/gradio_api/queue/data*")
    while held:
        with contextlib.suppress(Error):  # a stream the page gave up on meanwhile (it opens a new one)
            held.pop(0).continue_()
    expect(page.locator("#image-info")).to_contain_text("shot01.png", timeout=30_000)
