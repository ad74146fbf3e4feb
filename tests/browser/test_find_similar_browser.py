"""Find similar in a real browser (issue 30): with a SAM 3 model, draw one box, press x: the project stores
what SAM 3 finds as model objects of the box's class, with masks, in one edit that one Ctrl+Z takes back; the
toolbar's button does the same; Alt-click marks a counter-example, sent with the search. Headless Chromium,
real pointer and key events, the tiny random SAM 3 (scaled to score some queries above 0.5). Checked in the
project store, and against our own Sam3Detector on the same picture."""

import numpy as np
import pytest
from app_harness import drag, free_port, fresh_page, needs_browser, profile, start, until
from PIL import Image
from sam3_models import save_tiny_sam3

import gdino
from gdino.labeling.similar import new_ones

pytestmark = needs_browser

ROOT = "#canvas .gc-root"
W, H = 320, 240


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("similar_app")
    model = save_tiny_sam3(tmp / "sam3", confident=True)
    demo, app = start(["--model", str(model), "--sam", "none", "--workspace", str(tmp / "ws"),
                       "--port", str(free_port())])
    photo = tmp / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(photo)
    yield demo.local_url, app, photo, model
    demo.close()
    app.sessions.close()


def page_point(page, x, y):
    r = page.locator("#canvas canvas.gc-canvas").bounding_box()
    s = min(r["width"] / W, r["height"] / H)
    return round(r["x"] + (r["width"] - W * s) / 2 + x * s), round(r["y"] + (r["height"] - H * s) / 2 + y * s)


def visitor(pw, server, tmp_path):
    url, app, photo, _ = server
    context = profile(pw, tmp_path / "profile")
    earlier = {p.path for p in app.sessions.open_projects()}
    page = fresh_page(context, url)
    page.locator("#uploads input[type=file]").set_input_files([str(photo)])
    page.wait_for_selector("#image-info >> text=photo.png", timeout=60_000)
    project = next(p for p in app.sessions.open_projects() if p.path not in earlier and p.images())
    [image] = project.images()
    project.add_classes(["cup", "pen"])
    page.locator("#next-btn").click()  # the page shows the image again, with the classes
    page.wait_for_function("() => document.querySelector('#canvas .gc-class')?.options.length === 2", timeout=30_000)
    page.wait_for_selector(f"{ROOT}[data-image-ready='1']", timeout=30_000)
    page.locator("#canvas canvas.gc-canvas").scroll_into_view_if_needed()
    return context, page, project, image


def expected(server, box):
    """What our own detector finds for this exemplar in the same picture, less what overlaps the exemplar."""
    _, _, photo, model = server
    det = gdino.Detector.from_pretrained(str(model), device="cpu")
    found = det.find_similar(np.asarray(Image.open(photo).convert("RGB")), [box], [True], class_name="cup")
    return [found.xyxy[k] for k in new_ones(found.xyxy, found.confidence, [box])]


def test_draw_one_box_press_x_then_undo_takes_all_back(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context, page, project, image = visitor(pw, server, tmp_path)
        try:
            drag(page, page_point(page, 40, 50), page_point(page, 110, 140))  # a new box, of the chosen class
            (box,) = until(page, lambda: project.objects(image.id), "the drawn box")
            assert box.class_name == "cup"
            page.wait_for_selector(f"{ROOT}[data-selected='{box.id}']", timeout=10_000)
            page.keyboard.press("x")
            want = expected(server, box.box)
            assert want, "the tiny model must find something here for this test to mean anything"
            found = until(page, lambda: [o for o in project.objects(image.id) if o.id != box.id], "the found objects")
            assert len(found) == len(want)
            for o, w in zip(sorted(found, key=lambda o: o.box), sorted(want, key=lambda b: tuple(b)), strict=True):
                assert o.class_name == "cup" and o.source == "model" and o.mask is not None
                assert np.allclose(o.box, w, atol=1e-3)
            page.wait_for_selector(f"{ROOT}[data-pending='0']", timeout=30_000)
            assert "more like the example" in page.locator(f"{ROOT} .gc-message").inner_text()
            page.locator(ROOT).focus()
            page.keyboard.press("Control+z")  # one undo: every found object goes, the drawn box stays
            until(page, lambda: [o.id for o in project.objects(image.id)] == [box.id], "the undo of the search")
        finally:
            context.close()


def test_the_button_and_an_alt_clicked_counter_example(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context, page, project, image = visitor(pw, server, tmp_path)
        try:
            from gdino.store import ObjectState

            a, b = project.edit_objects(image.id, new=[ObjectState("cup", (40, 50, 110, 140)),
                                                       ObjectState("pen", (200, 60, 280, 200))])
            page.locator("#next-btn").click()
            page.wait_for_selector(f"{ROOT}[data-visible-boxes='2']", timeout=30_000)
            page.mouse.click(*page_point(page, 75, 95))  # select the cup
            page.wait_for_selector(f"{ROOT}[data-selected='{a.id}']", timeout=10_000)
            page.keyboard.down("Alt")
            page.mouse.click(*page_point(page, 240, 130))  # the pen: not this
            page.keyboard.up("Alt")
            page.wait_for_selector(f"{ROOT}[data-negatives='{b.id}']", timeout=10_000)
            seen = []
            page.on("request", lambda r: seen.append(r.post_data or "") if r.method == "POST" else None)
            page.locator(f"{ROOT} .gc-similar").click()
            until(page, lambda: len(project.objects(image.id)) > 2, "the found objects")
            assert any(f'"negative_ids": [{b.id}]' in s or f'"negative_ids":[{b.id}]' in s for s in seen)
            page.wait_for_selector(f"{ROOT}[data-negatives='']", timeout=10_000)
            assert {o.class_name for o in project.objects(image.id) if o.id not in (a.id, b.id)} == {"cup"}
        finally:
            context.close()


def open_with_two_more(page, project, image, tmp_path, seed):
    """Two more pictures uploaded, one cup box stored on the first, the first shown and the cup selected."""
    from gdino.store import ObjectState

    more = []
    for i in range(2):
        p = tmp_path / f"other{i}.png"
        Image.fromarray(np.random.default_rng(seed + i).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(p)
        more.append(p)
    page.locator("#uploads input[type=file]").set_input_files([str(p) for p in more])
    until(page, lambda: len(project.images()) == 3, "the other two images")
    (cup,) = project.edit_objects(image.id, new=[ObjectState("cup", (40, 50, 110, 140))])
    page.wait_for_selector("#image-table >> text=other1.png", timeout=60_000)
    page.locator("#image-table [role=gridcell]", has_text="photo.png").first.click()  # open it from the list
    page.wait_for_selector(f"{ROOT}[data-image-id='{image.id}'][data-visible-boxes='1']", timeout=30_000)
    page.locator("#canvas canvas.gc-canvas").scroll_into_view_if_needed()
    page.mouse.click(*page_point(page, 75, 95))
    page.wait_for_selector(f"{ROOT}[data-selected='{cup.id}']", timeout=10_000)
    return cup


def test_cancel_stops_the_search_of_the_other_images(server, tmp_path):
    """Deterministic: the test holds the server's model lock (the app runs in this process), so the job waits at
    its first model call; Cancel is clicked meanwhile; released, the job stops before the first image."""
    from playwright.sync_api import sync_playwright

    url, app, photo, model = server
    with sync_playwright() as pw:
        context, page, project, image = visitor(pw, server, tmp_path)
        try:
            open_with_two_more(page, project, image, tmp_path, 60)
            with app.jobs.model_lock:
                page.keyboard.press("Shift+X")
                page.wait_for_selector("#job-status >> text=find similar (cup) in the other images: 0 / 2",
                                       timeout=60_000)
                page.locator("#cancel-btn").click()
                page.wait_for_selector("#job-status >> text=cancelling after this image", timeout=60_000)
            page.wait_for_selector("#job-status >> text=cancelled; run it again", timeout=60_000)
            assert all(project.objects(r.id) == [] for r in project.images() if r.id != image.id)
        finally:
            context.close()


def test_shift_x_searches_the_other_images_as_a_job(server, tmp_path):
    """Shift+X: the exemplars of the image shown, carried to the project's other images by a job of the server;
    its line shows the progress and the end; each other image's objects are what our own detector finds there
    with the same carried prompt."""
    from playwright.sync_api import sync_playwright

    url, app, photo, model = server
    with sync_playwright() as pw:
        context, page, project, image = visitor(pw, server, tmp_path)
        try:
            cup = open_with_two_more(page, project, image, tmp_path, 40)
            page.keyboard.press("Shift+X")
            page.wait_for_selector("#job-status >> text=find similar (cup) in the other images", timeout=60_000)
            page.wait_for_selector("#job-status >> text=done", timeout=120_000)
            det = gdino.Detector.from_pretrained(str(model), device="cpu")
            prompt = det.exemplar_prompt(np.asarray(Image.open(photo).convert("RGB")), [cup.box])
            total = 0
            for record in project.images():
                if record.id == image.id:
                    assert [o.id for o in project.objects(record.id)] == [cup.id]
                    continue
                found = det.detect_like(np.asarray(Image.open(record.location).convert("RGB")), prompt, class_name="cup")
                stored = project.objects(record.id)
                assert len(stored) == len(new_ones(found.xyxy, found.confidence, []))
                assert all(o.class_name == "cup" and o.source == "model" and o.mask is not None for o in stored)
                total += len(stored)
            assert total > 0
        finally:
            context.close()
