"""Issue 25, item 2: the actions that remove or replace labels are undone by Ctrl+Z in the canvas, every object
back as it was (ids, boxes, masks, classes, scores, sources, as the PROJECT stores them): Remove image, Detect on
an image a person has worked on, and deleting a class with its objects. Re-detecting keeps what the person
decided: a model box the person deleted or changed is not found again, a box they edited stays. Headless
Chromium with the tiny models, real clicks and keys."""

import numpy as np
import pytest
from app_harness import browser, fresh_page, needs_browser, running_app, until
from PIL import Image

from gdino.masks import mask_to_rle
from gdino.store import ObjectState

pytestmark = needs_browser

ROOT = "#canvas .gc-root"


@pytest.fixture(scope="module")
def server(tiny_hf, tmp_path_factory):
    with running_app(tiny_hf, tmp_path_factory.mktemp("undo_app")) as served:
        yield served


@pytest.fixture
def context(tmp_path):
    with browser(tmp_path) as context:
        yield context


def photos(tmp_path, n):
    paths = []
    for i in range(n):
        p = tmp_path / f"street{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def uploaded(context, url, app, tmp_path, n):
    """A new visitor's page with n photos uploaded: (page, its project, the image ids by name)."""
    earlier = {p.path for p in app.sessions.open_projects()}
    page = fresh_page(context, url)
    files = photos(tmp_path, n)
    page.locator("#uploads input[type=file]").set_input_files([str(p) for p in files])
    page.wait_for_function("n => document.querySelector('#image-table')?.innerText.includes(n)", arg=files[-1].name,
                           timeout=60_000)
    project = next(p for p in app.sessions.open_projects() if p.path not in earlier and p.images())
    return page, project, [r.id for r in project.images(order="name")]


def stored(project, image_id):
    """Every stored column of the image's objects."""
    return [(o.id, o.class_name, o.phrase, o.box, o.score, o.source, o.mask, o.clicks) for o in project.objects(image_id)]



def press_in_canvas(page, image_id, key):
    """The key on the canvas showing image_id (focused, as after a click on the picture)."""
    page.wait_for_selector(f"{ROOT}[data-image-id='{image_id}']", timeout=30_000)
    page.locator(ROOT).focus()
    page.keyboard.press(key)


def mask(box, shape=(240, 320)):
    m = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    m[y0 + 2:y0 + 4, x0 + 2:x0 + 4] = False  # a hole
    return mask_to_rle(m)


def test_remove_image_is_undone_by_ctrl_z(server, context, tmp_path):
    url, app = server
    page, project, (first, second) = uploaded(context, url, app, tmp_path, 2)
    project.add_classes(["cat", "dog"])
    project.edit_objects(first, new=[ObjectState("cat" if k % 2 else "dog", (10 + 20 * k, 10, 40 + 20 * k, 60), 0.5 + k / 10,
                                                 "model", mask((10 + 20 * k, 10, 40 + 20 * k, 60)) if k == 2 else None)
                                     for k in range(5)])
    project.set_status(first, "auto")
    moved = project.objects(first)[0]
    project.edit_objects(first, {moved.id: ObjectState("cat", (12, 12, 44, 64))}, expect=[moved])
    objects, record, pixels = stored(project, first), project.image(first), project.image(first).path.read_bytes()

    page.locator("#remove-btn").click()  # the page shows the first image (by name)
    until(page, lambda: not project.has_image(first), "the image removed")
    page.wait_for_selector("#image-info >> text=street1.png", timeout=30_000)
    assert not record.path.exists()

    press_in_canvas(page, second, "Control+z")  # on the image shown now: the newest change is the removal
    until(page, lambda: project.has_image(first), "the image back")
    page.wait_for_selector("#canvas .gc-message >> text=undid the removal of 1 image(s): 'street0.png'", timeout=30_000)
    assert stored(project, first) == objects
    back = project.image(first)
    assert (back.name, back.path, back.status, back.width, back.height) == (
        record.name, record.path, record.status, record.width, record.height)
    assert back.path.read_bytes() == pixels
    assert project.history(first)[0]  # its own history came back with it (and the removal can be redone)
    page.wait_for_function("() => document.querySelector('#image-table').innerText.includes('street0.png')",
                           timeout=30_000)

    press_in_canvas(page, second, "Control+Shift+z")  # redo: removed again
    until(page, lambda: not project.has_image(first), "the image removed again")
    press_in_canvas(page, second, "Control+z")
    until(page, lambda: project.has_image(first), "the image back again")
    assert stored(project, first) == objects and project.image(first).path.read_bytes() == pixels
    assert project.undo(first) and project.objects(first)[0].box == (10, 10, 40, 60)  # its own edit, from before


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union else 0.0


def objects_but(project, image_id, n):
    """A check: the image's objects once there are n of them."""
    return lambda: len(project.objects(image_id)) == n and project.objects(image_id)


def test_detect_keeps_deleted_boxes_deleted_and_is_undone_by_ctrl_z(server, context, tmp_path):
    url, app = server
    page, project, (image,) = uploaded(context, url, app, tmp_path, 1)
    project.add_classes(["cat", "remote control"])  # both in the canvas' menu (key 2), whatever the model finds
    page.locator("#classes textarea, #classes input").first.fill("cat, remote control")
    page.locator("#detect-btn").click()
    found = until(page, lambda: project.objects(image), "the model's boxes")
    assert len(found) >= 4, found  # the tiny model finds a few on this picture
    page.wait_for_selector(f"{ROOT}[data-image-id='{image}'][data-image-ready='1']", timeout=30_000)
    # the page has drawn what Detect stored (a click before that lands on a picture the new value then replaces)
    page.wait_for_selector(f"{ROOT}[data-visible-boxes='{len(project.objects(image))}']", timeout=30_000)
    stage = page.locator("#canvas canvas.gc-canvas")
    stage.scroll_into_view_if_needed()
    area = stage.bounding_box()
    scale = min(area["width"] / 320, area["height"] / 240)

    def screen(x, y):
        return (area["x"] + (area["width"] - 320 * scale) / 2 + x * scale,
                area["y"] + (area["height"] - 240 * scale) / 2 + y * scale)

    def inside(box):
        return screen((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)

    # the person deletes two model boxes (clicks one, Delete) and relabels a third (key 2)
    deleted = []
    for _ in range(2):
        before = {o.id: o for o in project.objects(image)}
        target = next(o for o in before.values() if o.source == "model")
        page.wait_for_selector(f"{ROOT}[data-visible-boxes='{len(before)}']", timeout=30_000)
        page.mouse.click(*inside(target.box))
        page.wait_for_selector(f"{ROOT}:not([data-selected=''])", timeout=30_000)  # the click took a box
        page.keyboard.press("Delete")
        now = until(page, objects_but(project, image, len(before) - 1), "the box deleted")
        (gone,) = set(before) - {o.id for o in now}
        deleted.append(before[gone])
    before = {o.id: o for o in project.objects(image)}
    target = next(o for o in before.values() if o.source == "model")
    page.wait_for_selector(f"{ROOT}[data-visible-boxes='{len(before)}']", timeout=30_000)
    page.mouse.click(*inside(target.box))
    page.wait_for_selector(f"{ROOT}:not([data-selected=''])", timeout=30_000)
    page.keyboard.press("2" if target.class_name == "cat" else "1")  # the other class
    edited = until(page, lambda: [o for o in project.objects(image) if o.source == "manual"], "the box relabeled")[0]
    assert edited.class_name != before[edited.id].class_name
    original = before[edited.id]
    decided = stored(project, image)

    newest = max(o.id for o in project.objects(image))
    page.locator("#detect-btn").click()  # the same model and prompt again
    after = until(page, lambda: [o for o in project.objects(image) if o.id > newest] and project.objects(image),
                  "the new run's boxes")
    model = [o for o in after if o.source == "model"]
    for gone in [*deleted, original]:  # what the person deleted or changed is not found again
        assert not [o for o in model if o.class_name == gone.class_name and iou(o.box, gone.box) >= 0.5], gone
    assert len(model) == len(found) - 3
    assert [o for o in after if o.source == "manual"] == [edited]  # the edited box stays as it is

    page.wait_for_selector("#message >> text=3 more left out", timeout=30_000)  # the page shows the run's result
    press_in_canvas(page, image, "Control+z")  # the run is one undoable edit
    until(page, lambda: stored(project, image) == decided, "the objects as before the run")
    press_in_canvas(page, image, "Control+z")  # and the history before it is kept: the relabel, then a delete
    until(page, lambda: any(o.id == edited.id and o.source == "model" for o in project.objects(image)),
          "the relabel undone")
    press_in_canvas(page, image, "Control+z")
    until(page, lambda: any(o.id == deleted[-1].id for o in project.objects(image)), "the last delete undone")
    assert next(o for o in project.objects(image) if o.id == deleted[-1].id) == deleted[-1]


def test_class_delete_is_undone_by_ctrl_z(server, context, tmp_path):
    url, app = server
    page, project, (first, second) = uploaded(context, url, app, tmp_path, 2)
    project.add_classes(["cat", "dog", "bird"])
    project.edit_objects(first, new=[ObjectState("cat", (10, 10, 60, 60), 0.9), ObjectState("dog", (70, 10, 120, 60), 0.8),
                                     ObjectState("cat", (130, 10, 180, 60), mask=mask((130, 10, 180, 60)))])
    project.edit_objects(second, new=[ObjectState("cat", (5, 5, 50, 50), source="manual")])
    for image_id in (first, second):
        project.set_status(image_id, "unlabeled")  # as uploaded (a new object makes an unlabeled image "auto")
    before = {i: stored(project, i) for i in (first, second)}
    classes = project.classes

    page.locator("#next-btn").click()  # the page reads the classes again
    page.wait_for_selector("#image-info >> text=street1.png", timeout=30_000)
    page.locator("#class-manager").get_by_text("Classes").first.click()
    page.locator("#class-old input").click()
    page.locator("li[role=option]", has_text="cat").first.click()
    page.get_by_label("delete its objects too").check()
    page.locator("#delete-class-btn").click()
    until(page, lambda: "cat" not in project.classes, "the class deleted")
    assert [o.class_name for o in project.objects(first)] == ["dog"] and project.objects(second) == []

    press_in_canvas(page, second, "Control+z")
    until(page, lambda: "cat" in project.classes, "the class back")
    page.wait_for_selector("#canvas .gc-message >> text=undid the deletion of the class 'cat' with 3 object(s)",
                           timeout=30_000)
    assert project.classes == classes
    assert {i: stored(project, i) for i in (first, second)} == before
