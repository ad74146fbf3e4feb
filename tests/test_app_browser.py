"""The whole app in headless Chromium (Debian's chromium, driven by playwright), with the tiny models:
upload two images, enter classes, detect, draw a box and relabel it, next image, auto-label all,
reload and see the same labels, export COCO and check the zip."""

import contextlib
import io
import json
import zipfile

import numpy as np
import pytest
from app_harness import free_port, needs_browser, profile, start
from PIL import Image
from tiny_sam import save_tiny_sam

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

    # draw a new box (the editor starts in "create box" mode)
    canvas = page.locator("#annotator canvas")
    canvas.wait_for(timeout=30_000)
    canvas.scroll_into_view_if_needed()  # mouse events need it inside the viewport
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] - 60
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 20, y0 + 20, steps=4)
    page.mouse.move(x0 + 40, y0 + 45, steps=4)
    page.mouse.up()
    page.wait_for_function("n => document.querySelector('#image-info').innerText.includes(`${n} object(s)`)",
                           arg=detected + 1, timeout=30_000)
    manual = [o for o in project.objects(first) if o.source == "manual"]
    assert len(manual) == 1 and manual[0].class_name == "cat"  # an unlabeled box takes the first class

    # relabel it: double-click opens the label list
    page.mouse.dblclick(x0 + 20, y0 + 22)
    modal_input = page.locator("#model-box-edit input[role=listbox]")
    modal_input.wait_for(timeout=10_000)
    modal_input.fill("remote control")
    page.locator("#model-box-edit li[role=option]", has_text="remote control").first.click()
    page.locator("#model-box-edit button", has_text="OK").click()
    for _ in range(50):
        manual = [o for o in project.objects(first) if o.source == "manual"]
        if manual and manual[0].class_name == "remote control":
            break
        page.wait_for_timeout(200)
    assert len(manual) == 1 and manual[0].class_name == "remote control"
    drawn = manual[0]

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
    page.wait_for_timeout(2000)  # let the box editor settle; any edit it sent would show below
    assert {i: project.objects(i) for i in (first, second)} == stored
    rows = page.locator("#image-table").inner_text()
    assert rows.count("auto") == 2 and "street0.png" in rows
    page.locator("#image-table [role=gridcell]", has_text="street0.png").first.click()  # open an image from the list
    page.wait_for_selector("#image-info >> text=street0.png", timeout=30_000)

    # export COCO and check the zip
    page.locator("#export-btn").click()
    link = page.locator("#download a").first
    link.wait_for(timeout=60_000)
    with page.expect_download() as download_info:
        link.click()
    path = tmp_path / "export.zip"
    download_info.value.save_as(path)
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
    page = browser.new_page()
    page.goto(url, wait_until="load")
    page.wait_for_selector("#image-info >> text=No images yet", timeout=60_000)
    page.locator("#uploads input[type=file]").set_input_files(photos(tmp_path)[:1])
    page.wait_for_selector("#image-info >> text=street0.png", timeout=60_000)
    [project] = app.sessions.open_projects()
    [image] = project.images()

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
