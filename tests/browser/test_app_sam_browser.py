"""The app's SAM in a real browser (issue 27): the next image is embedded while the person looks at the current
one, so the first SAM click after Next runs only the decoder; the project's SAM chosen in the menu survives a
reload. The app runs in this process (tests/support/app_harness.py), so its segmenter's counts and the project's
embedding store are read directly; the pointer events are Chromium's own."""

import numpy as np
import pytest
from app_harness import browser, free_port, fresh_page, needs_browser, start
from PIL import Image
from tiny_sam import save_tiny_sam

from gdino.masks import rle_to_mask
from gdino.sam.segmenter import Segmenter
from gdino.sam.store import project_store
from gdino.sources import read_image

pytestmark = needs_browser

W, H = 160, 120
ROOT = "#canvas .gc-root"


@pytest.fixture(scope="module")
def server(tiny_hf, tmp_path_factory):
    """The app with the tiny detector, a tiny SAM (--sam) and another one a project may choose (--sams)."""
    tmp = tmp_path_factory.mktemp("sam_app")
    (tmp / "b").mkdir()
    first, other = save_tiny_sam(tmp / "sam.pth", seed=0), save_tiny_sam(tmp / "b" / "other.pth", seed=1)
    demo, app = start(["--model", str(tiny_hf[1]), "--sam", str(first), "--sams", str(other),
                       "--workspace", str(tmp / "ws"), "--port", str(free_port())])
    yield demo.local_url, app, first
    app.prefetch.wait_idle(60)
    demo.close()
    app.sessions.close()


@pytest.fixture
def context(tmp_path):
    with browser(tmp_path) as ctx:
        yield ctx


def photos(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"pic{i}.png"
        Image.fromarray(np.random.default_rng(20 + i).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def opened(context, url, app, files):
    """A new visitor's page with `files` uploaded and the class "cat": (page, its project)."""
    earlier = {p.path for p in app.sessions.open_projects()}
    page = fresh_page(context, url)
    page.locator("#uploads input[type=file]").set_input_files(files)
    page.wait_for_selector("#image-info >> text=pic0.png", timeout=60_000)
    [project] = [p for p in app.sessions.open_projects() if p.path not in earlier]
    project.add_classes(["cat"])
    return page, project


def at(page, x, y):
    """Image px -> page px on the fit-centred canvas."""
    r = page.locator("#canvas canvas.gc-canvas").bounding_box()
    s = min(r["width"] / W, r["height"] / H)
    return round(r["x"] + (r["width"] - W * s) / 2 + x * s), round(r["y"] + (r["height"] - H * s) / 2 + y * s)


def until(page, check, what, timeout_ms=60_000):
    for _ in range(timeout_ms // 50):
        result = check()
        if result:
            return result
        page.wait_for_timeout(50)
    raise AssertionError(f"never {what} (the canvas says {page.locator('#canvas .gc-message').all_text_contents()!r})")


def test_the_first_click_after_next_runs_no_image_encoder(server, context, tmp_path):
    url, app, sam_file = server
    page, project = opened(context, url, app, photos(tmp_path / "up", 2))
    first, second = [r.id for r in project.images(order="name")]
    pixels = read_image(app.sessions.image_path(project, project.image(second)))
    ours = Segmenter.from_pretrained(str(sam_file), device="cpu")  # our own: the key and the mask to expect
    key = ours.embedding_key(np.asarray(pixels.convert("RGB"), dtype=np.uint8))

    assert app.prefetch.wait_idle(60)  # the page shows pic0: pic1, the next, was embedded meanwhile
    assert (project_store(project.path).folder / f"{key}.safetensors").is_file()
    page.locator("#next-btn").click()
    page.wait_for_selector(f"{ROOT}[data-image-id='{second}'][data-image-ready='1']", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#canvas .gc-class')?.options.length === 1", timeout=30_000)
    assert app.prefetch.wait_idle(60)  # (and now pic0, the next after pic1)
    seg = app.hub.loaded_segmenter()
    encoded = seg.encoder_calls

    page.locator("#canvas .gc-tool[data-tool='click']").click()
    page.wait_for_selector(f"{ROOT}[data-tool='click']", state="attached", timeout=10_000)
    page.mouse.click(*at(page, 80, 60))
    obj = until(page, lambda: next(iter(project.objects(second)), None), "stored the click's object")
    page.wait_for_function(f"() => (document.querySelector('{ROOT}').dataset.overlayRevision || '') !== ''",
                           timeout=30_000)  # the mask drawn on the canvas
    assert seg.encoder_calls == encoded  # the click ran the decoder only
    [(x, y, positive)] = obj.clicks["points"]
    assert positive and abs(x - 80) <= 1 and abs(y - 60) <= 1
    expected = ours.refine(pixels, points=[(x, y)], labels=[1]).mask
    np.testing.assert_array_equal(rle_to_mask(obj.mask), expected)
    assert project.objects(first) == []


def test_the_sam_chosen_in_the_menu_survives_a_reload(server, context, tmp_path):
    url, app, _ = server
    page, project = opened(context, url, app, photos(tmp_path / "up", 1))
    menu = page.locator("#sam-choice input")
    assert menu.input_value() == "SAM sam.pth [server default]"
    menu.click()
    options = page.locator("li[role=option]").all_text_contents()
    assert [o.strip().removeprefix("✓").strip() for o in options] == ["SAM sam.pth [server default]", "SAM other.pth"]
    page.locator("li[role=option]", has_text="SAM other.pth").first.click()
    page.wait_for_selector("#message >> text=now uses SAM other.pth", timeout=30_000)
    assert project.setting("sam") == "other.pth"
    page.wait_for_selector("#model-status >> text=SAM other.pth on CPU", timeout=30_000)

    page.reload(wait_until="load")
    page.wait_for_selector("#image-info >> text=pic0.png", timeout=60_000)
    page.wait_for_function("document.querySelector('#sam-choice input').value === 'SAM other.pth'", timeout=30_000)
    page.wait_for_selector("#model-status >> text=SAM other.pth on CPU", timeout=30_000)
    assert str(server[2].parent) not in page.content()  # no server path anywhere in the page


def test_edits_leave_no_copy_of_the_labels_in_the_browsers_storage(server, context, tmp_path):
    """Gradio records every call's inputs and outputs in the browser's localStorage (its "run history", on by
    default): every click rewrote up to 100 canvas values there (~90 ms of the page's time per click here, and a
    copy of the project's labels left in the browser for the next person at that computer). The app turns it off."""
    url, app, _ = server
    page, project = opened(context, url, app, photos(tmp_path / "up", 1))
    [image_id] = [r.id for r in project.images()]
    page.locator("#next-btn").click()  # the page reads the classes again
    page.wait_for_function("() => document.querySelector('#canvas .gc-class')?.options.length === 1", timeout=30_000)
    page.locator("#canvas .gc-tool[data-tool='click']").click()
    page.wait_for_selector(f"{ROOT}[data-tool='click']", state="attached", timeout=10_000)
    page.mouse.click(*at(page, 80, 60))
    obj = until(page, lambda: next(iter(project.objects(image_id)), None), "stored the click's object")
    page.wait_for_function(f"() => (document.querySelector('{ROOT}').dataset.overlayRevision || '') !== ''",
                           timeout=30_000)
    stored = page.evaluate("() => Object.fromEntries(Object.keys(localStorage).map((k) => [k, localStorage[k]]))")
    assert not [k for k in stored if k.startswith("gradio:run-history")], list(stored)
    assert not [k for k, v in stored.items() if f'"id": {obj.id}' in v or f'"id":{obj.id}' in v], list(stored)
