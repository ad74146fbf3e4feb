"""The whole app in headless Chromium (Debian's chromium, driven by playwright), with the tiny models:
upload two images, enter classes, detect, draw a box on the canvas and relabel it with a key, undo and
redo, next image, auto-label all, reload and see the same labels, export COCO and check the zip."""

import contextlib
import io
import json
import zipfile

import numpy as np
import pytest
from app_harness import download_export, free_port, needs_browser, profile, start
from PIL import Image
from tiny_sam import save_tiny_sam

from gdino.store import ObjectState

pytestmark = needs_browser


@pytest.fixture
def server(tiny_hf, tmp_path):
    demo, app = start(["--model", str(tiny_hf[1]), "--sam", str(save_tiny_sam(tmp_path / "sam.pth")),
                       "--workspace", str(tmp_path / "ws"), "--port", str(free_port())])
    yield demo.local_url, app
    demo.close()
    app.sessions.close()


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile", accept_downloads=True)
        yield context
        context.close()


def photos(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"street{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def one_photo(browser, url, app, tmp_path):
    """A new visitor's page with one photo uploaded: (page, its project, the image record)."""
    page = browser.new_page()
    page.goto(url, wait_until="load")
    page.wait_for_selector("#image-info >> text=No images yet", timeout=60_000)
    page.locator("#uploads input[type=file]").set_input_files(photos(tmp_path)[:1])
    page.wait_for_selector("#image-info >> text=street0.png", timeout=60_000)
    [project] = app.sessions.open_projects()
    [image] = project.images()
    return page, project, image


def table_text(page):
    return page.locator("#image-table").inner_text()


def test_label_two_images_in_the_browser(server, browser, tmp_path):
    url, app = server
    page = browser.new_page()
    page.goto(url, wait_until="load")
    page.wait_for_selector("#image-info >> text=No images yet", timeout=60_000)  # the page load has run

    # create the project by uploading two images
    page.locator("#uploads input[type=file]").set_input_files(photos(tmp_path))
    page.wait_for_selector("#image-table >> text=street1.png", timeout=60_000)
    [project] = app.sessions.open_projects()  # this browser's own project, on the server
    first, second = [r.id for r in project.images(order="name")]

    # classes + detect (few boxes: a high threshold)
    page.locator("#classes textarea, #classes input").first.fill("cat, remote control")
    page.locator("#detect-btn").click()
    page.wait_for_selector("#message >> text=found", timeout=120_000)
    page.wait_for_selector("#image-info >> text=status auto", timeout=30_000)
    detected = len(project.objects(first))
    assert project.image(first).status == "auto"

    # draw a new box on the canvas (the box tool is on; Shift: a new box even where another one is)
    page.wait_for_selector("#canvas .gc-root[data-image-ready='1']", timeout=30_000)
    stage = page.locator("#canvas canvas.gc-canvas")
    stage.scroll_into_view_if_needed()  # mouse events need it inside the viewport
    area = stage.bounding_box()
    scale = min(area["width"] / 320, area["height"] / 240)  # the picture is fit, centred

    def screen(x, y):
        return (area["x"] + (area["width"] - 320 * scale) / 2 + x * scale,
                area["y"] + (area["height"] - 240 * scale) / 2 + y * scale)

    (sx0, sy0), (sx1, sy1) = screen(200, 150), screen(260, 200)
    page.keyboard.down("Shift")
    page.mouse.move(sx0, sy0)
    page.mouse.down()
    page.mouse.move((sx0 + sx1) / 2, (sy0 + sy1) / 2, steps=4)
    page.mouse.move(sx1, sy1, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_function("n => document.querySelector('#image-info').innerText.includes(`${n} object(s)`)",
                           arg=detected + 1, timeout=30_000)
    (drawn,) = [o for o in project.objects(first) if o.source == "manual"]
    assert drawn.class_name == "cat"  # the current class: the first
    assert np.allclose(drawn.box, (200, 150, 260, 200), atol=1.0), drawn.box  # original pixels, within one

    def stored_class(wanted):
        for _ in range(100):
            now = project.objects(first)
            if any(o.id == drawn.id and o.class_name == wanted for o in now):
                return True
            page.wait_for_timeout(100)
        return False

    # the new box is selected: key 2 gives it the second class; Ctrl+Z / Ctrl+Shift+Z undo and redo that
    page.keyboard.press("2")
    assert stored_class("remote control")
    page.keyboard.press("Control+z")
    assert stored_class("cat")
    page.keyboard.press("Control+Shift+z")
    assert stored_class("remote control")
    drawn = next(o for o in project.objects(first) if o.id == drawn.id)

    # next image with the keyboard shortcut, then auto-label all (only the unlabeled one is left)
    page.locator("#image-info").click()  # focus outside any text field
    page.keyboard.press("n")
    page.wait_for_selector("#image-info >> text=street1.png", timeout=30_000)
    page.locator("#auto-all-btn").click()
    page.wait_for_selector("#job-status >> text=1 / 1 image(s)", timeout=120_000)  # a server job, polled
    page.wait_for_selector("#job-status >> text=done", timeout=120_000)
    assert project.image(second).status == "auto"

    # reload: the same state comes back from the project store, and showing it changes nothing
    stored = {i: project.objects(i) for i in (first, second)}
    page.reload(wait_until="load")
    page.wait_for_selector("#image-table >> text=street1.png", timeout=60_000)
    page.wait_for_selector("#image-info >> text=street1.png", timeout=30_000)  # the image this browser was on
    page.wait_for_timeout(2000)  # let the canvas settle; any edit it sent would show below
    assert {i: project.objects(i) for i in (first, second)} == stored
    rows = page.locator("#image-table").inner_text()
    assert rows.count("auto") == 2 and "street0.png" in rows
    page.locator("#image-table [role=gridcell]", has_text="street0.png").first.click()  # open an image from the list
    page.wait_for_selector("#image-info >> text=street0.png", timeout=30_000)

    # export COCO and check the zip
    path = download_export(page, tmp_path / "export.zip")
    with zipfile.ZipFile(path) as zf:
        coco = json.loads(zf.read("annotations/instances_train.json"))
        assert sum(n.startswith("images/train/") for n in zf.namelist()) == 2
    from pycocotools.coco import COCO

    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps(coco))
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = COCO(str(json_path))
    ours = [a for a in loaded.dataset["annotations"] if a["id"] == drawn.id]
    assert len(ours) == 1
    assert loaded.loadCats(ours[0]["category_id"])[0]["name"] == "remote control"
    x, y, w, h = ours[0]["bbox"]
    assert np.allclose([x, y, x + w, y + h], drawn.box, atol=0.01)


def test_free_text_phrases_stay_phrases_until_mapped_in_the_browser(server, browser, tmp_path):
    url, app = server
    page, project, image = one_photo(browser, url, app, tmp_path)

    page.get_by_role("radio", name="free text").check()
    page.locator("#prompt textarea, #prompt input").first.fill("a cat on the red couch")
    page.locator("#detect-btn").click()
    page.wait_for_selector("#message >> text=found", timeout=120_000)
    objects = project.objects(image.id)
    assert objects and all(o.phrase for o in objects), page.locator("#message").inner_text()
    assert project.classes == []  # free text added no class
    phrase = project.phrases[0]
    moved = sum(o.class_name == phrase for o in objects)

    page.get_by_text("Free text: map a found phrase to a class").click()
    page.locator("#phrase-choice input").click()
    page.locator("li[role=option]", has_text=phrase).first.click()
    page.locator("#phrase-target textarea, #phrase-target input").first.fill("pet")
    page.locator("#map-phrase-btn").click()
    page.wait_for_selector(f"#message >> text={moved} object(s) labeled", timeout=30_000)
    assert project.classes == ["pet"] and phrase not in project.phrases
    assert sum(o.class_name == "pet" and not o.phrase for o in project.objects(image.id)) == moved
    page.locator("#class-manager .label-wrap").first.click()  # the class manager lists the new class
    page.locator("#class-table >> text=pet >> visible=true").first.wait_for(timeout=30_000)


def test_five_edits_sent_25_ms_apart_are_all_stored_in_order(server, browser, tmp_path):
    import sqlite3

    url, app = server
    page, project, image = one_photo(browser, url, app, tmp_path)
    project.add_classes(["cat", "dog"])
    (box,) = project.edit_objects(image.id, new=[ObjectState("cat", (40, 40, 120, 100))])
    page.locator("#next-btn").click()  # show it again: the canvas gets the classes and the box
    page.wait_for_selector("#canvas .gc-root[data-visible-boxes='1'][data-image-ready='1']", timeout=30_000)
    stage = page.locator("#canvas canvas.gc-canvas")
    stage.scroll_into_view_if_needed()
    area = stage.bounding_box()
    scale = min(area["width"] / 320, area["height"] / 240)
    x = area["x"] + (area["width"] - 320 * scale) / 2 + 80 * scale
    y = area["y"] + (area["height"] - 240 * scale) / 2 + 70 * scale
    page.mouse.click(x, y)  # select the box
    page.wait_for_selector(f"#canvas .gc-root[data-selected='{box.id}']", timeout=10_000)
    keys = ["2", "1", "2", "1", "2"]
    for key in keys:
        page.keyboard.press(key)
        page.wait_for_timeout(25)
    wanted = ["dog" if k == "2" else "cat" for k in keys]
    for _ in range(100):
        if project.objects(image.id)[0].class_name == wanted[-1] and project.history(image.id)[0]:
            with sqlite3.connect(project.path / "project.sqlite") as db:
                entries = [json.loads(e) for (e,) in db.execute("SELECT entry FROM edits ORDER BY id")][1:]  # after the add
            if len(entries) == len(keys):
                break
        page.wait_for_timeout(100)
    assert [e["after"][0]["class_name"] for e in entries] == wanted  # every one, in the order sent


def test_choosing_another_model_in_the_page_keeps_the_labels_and_survives_a_reload(tiny_hf, tokenizer, browser,
                                                                                    tmp_path):
    from tiny_models import make_mm_hf_model, save_hf

    mm = str(save_hf(make_mm_hf_model("tiny", seed=0), tokenizer, tmp_path / "mm_tiny_model"))
    demo, app = start(["--model", str(tiny_hf[1]), "--models", mm, "--sam", "none", "--workspace", str(tmp_path / "ws"),
                       "--port", str(free_port())])
    try:
        page, project, image = one_photo(browser, demo.local_url, app, tmp_path)
        page.locator("#classes textarea, #classes input").first.fill("cat, remote control")
        page.locator("#detect-btn").click()
        page.wait_for_selector("#message >> text=found", timeout=120_000)
        before = project.objects(image.id)

        page.locator("#model-choice input").click()
        page.locator("li[role=option]", has_text="mm_tiny_model").first.click()
        page.wait_for_selector("#message >> text=now uses", timeout=30_000)
        assert project.setting("model") == mm and project.objects(image.id) == before

        page.reload(wait_until="load")
        page.wait_for_selector("#image-info >> text=street0.png", timeout=60_000)
        page.wait_for_function("document.querySelector('#model-choice input').value.includes('mm_tiny_model')",
                               timeout=30_000)
        page.locator("#detect-btn").click()
        page.wait_for_selector("#message >> text=found", timeout=120_000)
        assert mm in app.hub._detectors  # the project's choice ran
    finally:
        demo.close()
        app.sessions.close()
