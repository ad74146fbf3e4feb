"""The labeling canvas (ui/canvas) in headless Chromium: real pointer, wheel and key events go in, and the edit
payloads the Python listener records come out. Expected image coordinates are derived here from the screen
positions used and the fit geometry (the image is fit centred, scale = min(W / w, H / h)), never read back from
the canvas' own transform. A tiny in-test store plays the server."""

import copy
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from app_harness import free_port, needs_browser, profile
from PIL import Image

pytestmark = needs_browser

W, H = 4000, 3000  # the test image, a 4:3 photo's size
CLASSES = [{"name": "cat", "color": [255, 0, 0]}, {"name": "dog", "color": [0, 0, 255]},
           {"name": "bird", "color": [0, 200, 0]}]
COLORS = {c["name"]: c["color"] for c in CLASSES}
BACKGROUND = (60, 60, 60)
ROOT = "#canvas .gc-root"


def obj(id, box, class_name="cat", score=None, source="manual"):
    return {"id": id, "class_name": class_name, "phrase": False, "box": [float(v) for v in box], "score": score,
            "source": source, "color": COLORS[class_name], "has_mask": False, "clicks": []}


def file_data(path):
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def _rev(o):  # an object's revision, as the app's server gives it (ui/window_state.py): a digest of what it is
    return hashlib.sha256(json.dumps(o, sort_keys=True).encode()).hexdigest()[:16]


class FakeStore:
    """The server's side in miniature: applies each edit to a dict of objects and answers with the new value."""

    def __init__(self, image, objects=(), overlay=None):
        self.image, self.overlay = image, overlay
        self.objects = {o["id"]: o for o in objects}
        self.next_id = max(self.objects, default=0) + 1
        self.revision = 1
        self.payloads = []
        self.undo, self.redo = [], []
        self.delay, self.refuse_adds = 0.0, False
        self.overlay_per_edit = None  # a PNG: each answer then carries a new copy of it (a new overlay URL)

    def value(self, selected=None, seq=None):
        if self.image is None:
            return None
        return {"image_id": 7, "revision": self.revision, "image": file_data(self.image), "width": W, "height": H,
                "objects": [dict(copy.deepcopy(o), rev=_rev(o)) for o in self.objects.values()], "classes": CLASSES,
                "overlay": file_data(self.overlay) if self.overlay else None, "selected": selected,
                "can_undo": bool(self.undo), "can_redo": bool(self.redo), "seq": seq, "message": None}

    def create(self, box, class_name, **fields):
        o = obj(self.next_id, box, class_name or "cat")
        o.update(fields)
        self.objects[o["id"]] = o
        self.next_id += 1
        return o["id"]

    def edit(self, p):
        out = self.apply(p)
        self.payloads.append(copy.deepcopy(p))  # after the store changed: a test that saw it may read the store
        return out

    def apply(self, p):
        time.sleep(self.delay)
        before, selected, kind = copy.deepcopy(self.objects), None, p["kind"]
        if kind == "add" and self.refuse_adds:
            self.revision += 1
            out = self.value(seq=p["seq"])
            out["message"] = "no new boxes here"
            return out
        if kind == "add":
            selected = self.create(p["box"], p["class_name"])
        elif kind == "move":
            o = self.objects[p["object_id"]]
            o["box"] = [o["box"][0] + p["dx"], o["box"][1] + p["dy"], o["box"][2] + p["dx"], o["box"][3] + p["dy"]]
        elif kind == "resize":
            self.objects[p["object_id"]]["box"] = p["box"]
        elif kind == "delete":
            for i in p["object_ids"]:
                self.objects.pop(i)
        elif kind == "relabel":
            for i in p["object_ids"]:
                self.objects[i].update(class_name=p["class_name"], color=COLORS[p["class_name"]])
        elif kind == "click":
            click = [p["x"], p["y"], p["positive"]]
            if p["object_id"] is None:
                selected = self.create([p["x"] - 50, p["y"] - 50, p["x"] + 50, p["y"] + 50], p["class_name"], clicks=[click])
            else:
                self.objects[p["object_id"]]["clicks"].append(click)
        elif kind == "stroke" and p["object_id"] is None and not p["erase"]:
            xs, ys = [q[0] for q in p["points"]], [q[1] for q in p["points"]]
            selected = self.create([min(xs), min(ys), max(xs), max(ys)], p["class_name"])
        elif kind == "undo" and self.undo:
            self.redo.append(before)
            self.objects = self.undo.pop()
        elif kind == "redo" and self.redo:
            self.undo.append(before)
            self.objects = self.redo.pop()
        if kind not in ("undo", "redo"):
            self.undo.append(before)
            self.redo.clear()
        self.revision += 1
        if self.overlay_per_edit is not None:
            self.overlay = self.overlay_per_edit.with_name(f"overlay-{uuid.uuid4().hex}.png")
            shutil.copy(self.overlay_per_edit, self.overlay)
        return self.value(selected=selected, seq=p["seq"])


CURRENT = {"store": None}


@pytest.fixture(scope="module")
def server():
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    from ui.canvas import make_canvas

    def on_edit(value, evt: gr.EventData):
        return CURRENT["store"].edit(evt._data)

    def ahead():  # a newer state than the next answer, as a refresh made after an edit still on its way brings it
        value = CURRENT["store"].value()
        value.update(revision=value["revision"] + 100)
        return value

    def stale():  # an older state (one revision back, no objects), as a late reply would bring it
        value = CURRENT["store"].value()
        value.update(revision=value["revision"] - 1, objects=[])
        return value

    with gr.Blocks() as demo:
        canvas = make_canvas(elem_id="canvas", height=600)
        canvas.edit(on_edit, [canvas], [canvas], show_progress="hidden", trigger_mode="multiple")
        gr.Button("stale", elem_id="stale").click(stale, None, canvas, show_progress="hidden")
        gr.Button("ahead", elem_id="ahead").click(ahead, None, canvas, show_progress="hidden")
        demo.load(lambda: CURRENT["store"].value(), None, canvas)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    # files in gradio's own cache are served as they are (elsewhere they are hashed and copied on every reply)
    folder = Path(gr.utils.get_upload_folder()) / f"canvas-test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    Image.new("RGB", (W, H), BACKGROUND).save(folder / "photo.png")
    yield demo.local_url, folder
    demo.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pw():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def contexts(pw, tmp_path_factory):
    made = {}

    def get(dpr=1, touch=False):
        if (dpr, touch) not in made:
            made[dpr, touch] = profile(pw, tmp_path_factory.mktemp(f"profile{dpr}"), device_scale_factor=dpr,
                                       has_touch=touch)
        return made[dpr, touch]

    yield get
    for c in made.values():
        c.close()


@pytest.fixture(autouse=True)
def _close_pages():
    yield
    while OPEN:  # also after a failure: a page left open could still send edits to the next test's store
        OPEN.pop().close()


OPEN = []


def open_canvas(contexts, url, store, dpr=1, touch=False):
    CURRENT["store"] = store
    page = contexts(dpr, touch).new_page()
    OPEN.append(page)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load")
    ready = "[data-image-ready='1']" if store.image else "[data-revision='']"
    page.wait_for_selector(ROOT + ready, timeout=30_000)
    page.errors = errors
    return page


class Fit:
    """The fit-centred view, derived from the canvas element's box: image px <-> page px."""

    def __init__(self, page, zoom=1.0, anchor=None):
        r = page.locator("#canvas canvas").bounding_box()
        self.left, self.top = r["x"], r["y"]
        self.s = min(r["width"] / W, r["height"] / H)
        self.tx, self.ty = (r["width"] - W * self.s) / 2, (r["height"] - H * self.s) / 2
        if zoom != 1.0:  # zoomed around a page point: the image point under it stays put
            ax, ay = anchor[0] - self.left, anchor[1] - self.top
            self.tx, self.ty = ax - (ax - self.tx) * zoom, ay - (ay - self.ty) * zoom
            self.s *= zoom

    def page(self, x, y):  # the nearest whole page pixel (the mouse goes there)
        return round(self.left + self.tx + x * self.s), round(self.top + self.ty + y * self.s)

    def image(self, px, py):
        return (px - self.left - self.tx) / self.s, (py - self.top - self.ty) / self.s


def drag(page, a, b, steps=6):
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=steps)
    page.mouse.up()


def payloads(page, store, n, timeout=10.0):
    end = time.monotonic() + timeout
    while len(store.payloads) < n and time.monotonic() < end:
        page.wait_for_timeout(20)
    assert len(store.payloads) >= n, store.payloads
    return store.payloads


def drawn(page, store, revision=None):
    """Wait until the canvas has drawn the store's latest value (or that revision)."""
    revision = store.revision if revision is None else revision
    try:
        page.wait_for_selector(f"{ROOT}[data-revision='{revision}']", state="attached", timeout=10_000)
    except Exception as e:
        shown = page.locator(ROOT).get_attribute("data-revision")
        raise AssertionError(f"revision {revision} not drawn ({shown} is); edits: {store.payloads}") from e
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def pixel(page, x, y):
    """The canvas' RGB at page px (x, y)."""
    return page.evaluate("""([x, y]) => {
        const c = document.querySelector('#canvas canvas'), r = c.getBoundingClientRect(), d = devicePixelRatio;
        const px = c.getContext('2d').getImageData(Math.floor((x - r.left) * d), Math.floor((y - r.top) * d), 1, 1);
        return Array.from(px.data.slice(0, 3));
    }""", [x, y])


def center(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def near(a, b, tol=1.0):
    return all(abs(u - v) <= tol for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("dpr", [1, 2])
def test_boxes_land_on_image_pixels_at_fit_and_zoomed(server, contexts, dpr):
    url, folder = server
    store = FakeStore(folder / "photo.png")
    page = open_canvas(contexts, url, store, dpr)
    fit = Fit(page)
    assert fit.s < 0.3  # a 4000 px image shown about 800 px wide: a screen pixel is several image pixels

    a, b = fit.page(1000, 700), fit.page(2600, 2100)
    drag(page, a, b)
    [add] = payloads(page, store, 1)
    assert add["kind"] == "add" and add["image_id"] == 7 and add["class_name"] == "cat"
    assert near(add["box"], [*fit.image(*a), *fit.image(*b)])
    assert near(add["box"], [1000, 700, 2600, 2100], tol=0.5 / fit.s + 1e-6)  # within half a screen pixel
    drawn(page, store)

    # four wheel notches up at a point over empty image space: x2 per 200 px of wheel delta, around the cursor
    page.evaluate("() => { window.wheels = []; addEventListener('wheel', e => wheels.push([e.deltaY, e.deltaMode]), true); }")
    anchor = fit.page(3300, 800)
    page.mouse.move(*anchor)
    for _ in range(4):
        page.mouse.wheel(0, -100 * dpr)  # Chromium hands the page deltaY / device_scale_factor
    page.wait_for_function("() => wheels.length === 4", timeout=10_000)
    wheels = page.evaluate("() => wheels")
    zoom = math.prod(2 ** (-dy / 200) for dy, mode in wheels if mode == 0)
    assert len(wheels) == 4 and abs(zoom - 4) < 1e-9, wheels
    zoomed = Fit(page, zoom, anchor)
    assert (zoomed.left, zoomed.top) == (fit.left, fit.top)  # the wheel zoomed the canvas, it did not scroll the page

    a, b = (anchor[0] - 30, anchor[1] - 20), (anchor[0] + 45, anchor[1] + 35)
    drag(page, a, b)
    add = payloads(page, store, 2)[1]
    assert add["kind"] == "add" and add["seq"] > store.payloads[0]["seq"]
    assert near(add["box"], [*zoomed.image(*a), *zoomed.image(*b)])
    assert near(add["box"], [3300 - 30 / zoomed.s, 800 - 20 / zoomed.s, 3300 + 45 / zoomed.s, 800 + 35 / zoomed.s],
                tol=0.5 / fit.s + 1e-6)
    drawn(page, store)

    # space+drag pans: the same screen drag then lands 100 px (screen) further along the image
    page.keyboard.down(" ")
    drag(page, (anchor[0], anchor[1]), (anchor[0] - 100, anchor[1]))
    page.keyboard.up(" ")
    assert len(store.payloads) == 2  # panning is no edit
    zoomed.tx -= 100
    a, b = (anchor[0] - 10, anchor[1] + 60), (anchor[0] + 30, anchor[1] + 90)
    drag(page, a, b)
    add = payloads(page, store, 3)[2]
    assert near(add["box"], [*zoomed.image(*a), *zoomed.image(*b)])
    assert not page.errors


def test_move_resize_delete_relabel_undo_and_deselect(server, contexts):
    url, folder = server
    store = FakeStore(folder / "photo.png", [obj(1, [400, 400, 1400, 1200]),
                                             obj(2, [2000, 1500, 3000, 2500], "dog", 0.9, "model")])
    page = open_canvas(contexts, url, store)
    fit = Fit(page)

    # drag the inside of box 1: a move by the screen delta in image px
    start = fit.page(900, 800)
    end = (start[0] + 50, start[1] + 30)
    drag(page, start, end)
    [move] = payloads(page, store, 1)
    assert move["kind"] == "move" and move["object_id"] == 1
    assert near([move["dx"], move["dy"]], [50 / fit.s, 30 / fit.s], tol=1e-6)
    drawn(page, store)

    # the selected box shows handles: drag the south-east one
    x0, y0, x1, y1 = store.objects[1]["box"]
    start = fit.page(x1, y1)
    end = (start[0] + 40, start[1] + 20)
    drag(page, start, end)
    resize = payloads(page, store, 2)[1]
    assert resize["kind"] == "resize" and resize["object_id"] == 1
    assert near(resize["box"], [x0, y0, x1 + 40 / fit.s, y1 + 20 / fit.s], tol=1e-6)
    drawn(page, store)

    # drag the west handle past the east edge: the box comes back normalized (x0 < x1)
    x0, y0, x1, y1 = store.objects[1]["box"]
    start = fit.page(x0, (y0 + y1) / 2)
    end = (round(fit.page(x1, 0)[0] + 30), start[1])
    drag(page, start, end)
    resize = payloads(page, store, 3)[2]
    assert near(resize["box"], [x1, y0, x0 + (end[0] - start[0]) / fit.s, y1], tol=1e-6)
    drawn(page, store)

    # keys 1-9 relabel the selection; with none, they set the class of the next box
    shown_revision = store.revision
    page.keyboard.press("2")
    relabel = dict(payloads(page, store, 4)[3])
    seen, window, prev, base = relabel.pop("seen"), relabel.pop("window"), relabel.pop("prev"), relabel.pop("base")
    assert base == shown_revision  # the value it was made on
    assert relabel == {"kind": "relabel", "image_id": 7, "seq": store.payloads[3]["seq"], "object_ids": [1],
                       "class_name": "dog"}
    assert [pair[0] for pair in seen] == [1] and window == store.payloads[0]["window"]
    assert prev == store.payloads[2]["seq"]  # the edit sent before it
    drawn(page, store)
    page.keyboard.press("Escape")
    page.keyboard.press("3")
    page.wait_for_timeout(200)
    assert len(store.payloads) == 4  # nothing selected: no relabel
    a, b = fit.page(3200, 300), fit.page(3700, 900)
    drag(page, a, b)
    add = payloads(page, store, 5)[4]
    assert add["kind"] == "add" and add["class_name"] == "bird"
    drawn(page, store)

    # Delete and Backspace delete the selection
    page.mouse.click(*fit.page(*center(store.objects[1]["box"])))
    page.keyboard.press("Delete")
    assert payloads(page, store, 6)[5]["object_ids"] == [1]
    drawn(page, store)
    page.mouse.click(*fit.page(2500, 2000))
    page.keyboard.press("Backspace")
    assert payloads(page, store, 7)[6]["object_ids"] == [2]
    drawn(page, store)

    # undo / redo from the keys
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+Shift+Z")
    page.keyboard.press("Control+y")
    made = sorted(payloads(page, store, 10), key=lambda p: p["seq"])  # the network may deliver them in any order
    assert [p["kind"] for p in made[7:]] == ["undo", "redo", "redo"]
    assert len({p["seq"] for p in made}) == len(made)
    assert [pair[0] for pair in made[7]["seen"]] == [3]  # undo: the view of every object shown (the bird box)
    assert all(isinstance(pair[1], str) and len(pair[1]) == 16 for pair in made[7]["seen"])

    # a SAM click refines the selected box; after Esc (deselect) it refines nothing (object_id None)
    drawn(page, store)
    [bird] = [o for o in store.objects.values() if o["class_name"] == "bird"]
    page.mouse.click(*fit.page(*center(bird["box"])))
    page.keyboard.press("k")
    page.mouse.click(*fit.page(3450, 2600))
    click = payloads(page, store, 11)[10]
    assert click["kind"] == "click" and click["object_id"] == bird["id"]
    drawn(page, store)
    page.keyboard.press("Escape")
    page.mouse.click(*fit.page(3450, 2600))
    click = payloads(page, store, 12)[11]
    assert click["kind"] == "click" and click["object_id"] is None
    assert not page.errors


def test_clicks_and_brush_strokes(server, contexts):
    url, folder = server
    store = FakeStore(folder / "photo.png")
    page = open_canvas(contexts, url, store)
    fit = Fit(page)
    page.locator("#canvas .gc-tool[data-tool=click]").click()

    p1 = fit.page(1000, 1000)
    page.mouse.click(*p1)
    [first] = payloads(page, store, 1)
    assert first["kind"] == "click" and first["object_id"] is None and first["positive"] is True
    assert near([first["x"], first["y"]], fit.image(*p1), tol=1e-6)
    drawn(page, store)
    created = first_id = max(store.objects)

    p2 = fit.page(1100, 1050)
    page.keyboard.down("Alt")
    page.mouse.click(*p2)
    page.keyboard.up("Alt")
    page.mouse.click(*fit.page(900, 950), button="right")
    page.locator("#canvas .gc-sign").click()  # the touch toggle: clicks are negative now
    page.mouse.click(*fit.page(950, 1000))
    page.locator("#canvas .gc-sign").click()
    page.mouse.click(*fit.page(1050, 1000))
    clicks = payloads(page, store, 5)[1:]
    assert [c["positive"] for c in clicks] == [False, False, False, True]
    assert all(c["object_id"] == created for c in clicks)  # the reply selected the new object: clicks chain
    assert near([clicks[0]["x"], clicks[0]["y"]], fit.image(*p2), tol=1e-6)
    drawn(page, store)

    # brush: radius in image px, points in image px along the pointer's path
    page.keyboard.press("Escape")
    page.keyboard.press("u")
    page.locator("#canvas .gc-radius").fill("35")
    page.locator("#canvas .gc-radius").press("Enter")
    a, b = fit.page(2000, 1000), fit.page(3000, 1600)
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=25)
    page.mouse.up()
    stroke = payloads(page, store, 6)[5]
    assert stroke["kind"] == "stroke" and stroke["erase"] is False and stroke["object_id"] is None
    assert stroke["radius"] == 35 and len(stroke["points"]) >= 20
    pa, pb = np.array(fit.image(*a)), np.array(fit.image(*b))
    points = np.array(stroke["points"])
    assert near(points[0], pa, 1e-6) and near(points[-1], pb, 1e-6)
    direction = (pb - pa) / np.linalg.norm(pb - pa)
    rel = points - pa
    off_line = np.abs(rel[:, 0] * direction[1] - rel[:, 1] * direction[0])
    assert off_line.max() < 1 / fit.s  # every sample lies on the dragged segment (within a screen pixel)
    drawn(page, store)
    made = max(store.objects)
    assert made != first_id

    page.keyboard.press("e")  # eraser on the stroke's object (the reply selected it)
    drag(page, fit.page(2200, 1100), fit.page(2400, 1300))
    erase = payloads(page, store, 7)[6]
    assert erase["kind"] == "stroke" and erase["erase"] is True and erase["object_id"] == made
    assert not page.errors


def test_touch_tap_and_pinch(server, contexts):
    url, folder = server
    store = FakeStore(folder / "photo.png")
    page = open_canvas(contexts, url, store, touch=True)
    fit = Fit(page)
    cdp = page.context.new_cdp_session(page)

    def touch(kind, *points):
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y, "id": i}
                                                                          for i, (x, y) in enumerate(points)]})

    # two fingers spread from 100 to 200 px apart around a fixed midpoint: zoom x2 around it, and no edit
    mx, my = fit.page(2000, 1500)
    touch("touchStart", (mx - 50, my), (mx + 50, my))
    for d in (60, 75, 90, 100):
        touch("touchMove", (mx - d, my), (mx + d, my))
    touch("touchEnd")
    zoomed = Fit(page, 2.0, (mx, my))
    a, b = (mx + 20, my - 40), (mx + 120, my + 30)
    drag(page, a, b)
    [add] = payloads(page, store, 1)
    assert add["kind"] == "add" and near(add["box"], [*zoomed.image(*a), *zoomed.image(*b)])
    drawn(page, store)

    # a tap with the SAM tool is a positive click where the finger was
    page.locator("#canvas .gc-tool[data-tool=click]").tap()
    page.touchscreen.tap(mx - 150, my + 100)
    click = payloads(page, store, 2)[1]
    assert click["kind"] == "click" and click["positive"] is True
    assert near([click["x"], click["y"]], zoomed.image(mx - 150, my + 100), tol=1e-6)
    assert not page.errors


def test_quick_edits_are_all_sent_each_naming_the_one_before(server, contexts):
    """Each edit is its own request and the network may deliver them in another order (this stand-in server
    applies them as they come); each names its window and the edit sent before it, so the app's server can apply
    them in the order made (tests/browser/test_canvas_windows_browser.py holds one back to check that)."""
    url, folder = server
    store = FakeStore(folder / "photo.png", [obj(1, [400, 400, 1400, 1200])])
    page = open_canvas(contexts, url, store)
    fit = Fit(page)
    page.mouse.click(*fit.page(900, 800))  # select box 1
    keys = ["2", "3", "1", "2", "3"]
    for k in keys:
        page.keyboard.press(k)
        page.wait_for_timeout(25)
    got = sorted(payloads(page, store, 5), key=lambda p: p["seq"])
    assert [p["class_name"] for p in got] == [CLASSES[int(k) - 1]["name"] for k in keys]
    assert len({p["seq"] for p in got}) == 5 and got[0]["prev"] == 0
    assert [p["prev"] for p in got[1:]] == [p["seq"] for p in got[:-1]]
    assert len({p["window"] for p in got}) == 1
    assert all([pair[0] for pair in p["seen"]] == [1] for p in got)  # the view of the box it relabels
    drawn(page, store)  # the last reply is the one shown, whatever order gradio handed the replies over in
    page.wait_for_timeout(300)
    assert len(store.payloads) == 5
    assert page.locator(ROOT).get_attribute("data-revision") == str(store.revision)
    x, y = fit.page(400, 1000)  # on the box's left edge, clear of its handles: drawn in the bird colour
    assert [0, 200, 0] in [pixel(page, x + dx, y) for dx in (-2, -1, 0, 1)]

    # a value older than the one shown is ignored
    page.locator("#stale").click()
    page.wait_for_function("() => document.querySelector('#canvas .gc-root').dataset.stale >= '1'", timeout=10_000)
    assert page.locator(ROOT).get_attribute("data-revision") == str(store.revision)
    assert page.locator(ROOT).get_attribute("data-visible-boxes") == "1"


def test_threshold_toggles_overlay_and_delete_hidden(server, contexts):
    url, folder = server
    index = np.zeros((H, W), np.uint8)
    index[2000:2600, 500:1500] = 4  # objects[3] (id 13)'s mask
    from ui.canvas import mask_index_to_overlay

    overlay = folder / f"overlay-{uuid.uuid4().hex}.png"
    mask_index_to_overlay(index).save(overlay)
    objects = [obj(10, [300, 300, 900, 900], "cat", 0.3, "model"), obj(11, [1200, 300, 1800, 900], "dog", 0.6, "model"),
               obj(12, [2200, 300, 2800, 900], "cat", 0.9, "model"), obj(13, [500, 2000, 1500, 2600], "bird")]
    store = FakeStore(folder / "photo.png", objects, overlay=overlay)
    page = open_canvas(contexts, url, store)
    page.wait_for_selector(f"{ROOT}[data-overlay-revision='1']", state="attached", timeout=10_000)
    drawn(page, store)
    fit = Fit(page)
    root = page.locator(ROOT)

    def left_edge(o):  # page px on the left edge of a box, halfway down (clear of its label)
        x0, y0, x1, y1 = o["box"]
        return fit.page(x0, (y0 + y1) / 2)

    def edge_colour(o):  # the colours around a box's left edge: its 2 px line covers one of these pixels fully
        x, y = left_edge(o)
        return [pixel(page, x + dx, y) for dx in (-2, -1, 0, 1)]

    assert root.get_attribute("data-visible-boxes") == "4"
    assert [255, 0, 0] in edge_colour(objects[0])
    page.locator("#canvas .gc-threshold").fill("0.65")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert root.get_attribute("data-visible-boxes") == "2"
    assert [255, 0, 0] not in edge_colour(objects[0]) and [0, 0, 255] not in edge_colour(objects[1])
    assert [255, 0, 0] in edge_colour(objects[2])

    # the mask of object 13 at opacity 1 is its class colour, exactly; off, the photo shows through
    inside = fit.page(1000, 2300)
    page.locator("#canvas .gc-opacity").fill("1")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert pixel(page, *inside) == [0, 200, 0]
    assert pixel(page, *fit.page(1000, 1800)) == list(BACKGROUND)
    page.locator("#canvas .gc-opacity").fill("0.5")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert near(pixel(page, *inside), [30, 130, 30], tol=2)
    page.locator("#canvas .gc-show[data-show=masks]").uncheck()
    page.locator("#canvas .gc-show[data-show=boxes]").uncheck()
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert pixel(page, *inside) == list(BACKGROUND)
    assert root.get_attribute("data-visible-boxes") == "0"
    assert edge_colour(objects[2]) == [list(BACKGROUND)] * 4

    # "Delete hidden" deletes exactly the model boxes below the threshold
    page.locator("#canvas .gc-delete-hidden").click()
    [delete] = payloads(page, store, 1)
    assert delete["kind"] == "delete" and sorted(delete["object_ids"]) == [10, 11]
    drawn(page, store)
    assert sorted(store.objects) == [12, 13]
    assert not page.errors


def test_the_reply_replaces_the_preview_and_clicks_chain(server, contexts):
    url, folder = server
    store = FakeStore(folder / "photo.png")
    store.refuse_adds = True
    page = open_canvas(contexts, url, store)
    fit = Fit(page)
    root = page.locator(ROOT)

    # the new box shows at once, and goes when the server's answer has no such box
    store.delay = 0.5
    drag(page, fit.page(500, 500), fit.page(1500, 1500))
    page.wait_for_function("() => document.querySelector('#canvas .gc-root').dataset.visibleBoxes === '1'", timeout=10_000)
    drawn(page, store, 2)
    assert root.get_attribute("data-visible-boxes") == "0"
    assert page.locator("#canvas .gc-message").inner_text() == "no new boxes here"

    # a second SAM click made before the first one's answer refines the object that answer creates
    page.keyboard.press("k")
    page.mouse.click(*fit.page(2000, 1000))
    page.mouse.click(*fit.page(2100, 1100))
    first, second = payloads(page, store, 3)[1:]
    assert first["object_id"] is None and second["object_id"] == max(store.objects)
    assert first["seq"] < second["seq"]
    assert not page.errors


def test_no_image(server, contexts):
    url, _ = server
    page = open_canvas(contexts, url, FakeStore(None))
    assert page.locator("#canvas .gc-message").inner_text() == "No image"
    assert page.locator("#canvas .gc-empty").is_visible()


def test_a_label_at_the_top_edge_stays_visible_and_new_boxes_have_their_colour(server, contexts):
    url, folder = server
    store = FakeStore(folder / "photo.png", [obj(1, [1000, 0, 2000, 1000], "dog")])
    page = open_canvas(contexts, url, store)
    fit = Fit(page)
    assert fit.top + fit.ty == fit.top  # the picture starts at the canvas' top: no room above the box
    x, y = fit.page(1000, 0)
    # the label's background (dog's blue at 0.85 over the photo) fills most of a 20x12 px patch inside the box
    label = [pixel(page, x + dx, y + dy) for dx in range(3, 23, 2) for dy in range(3, 15, 2)]
    blend = [round(0.85 * c + 0.15 * b) for c, b in zip(COLORS["dog"], BACKGROUND, strict=True)]
    assert sum(all(abs(u - v) <= 3 for u, v in zip(c, blend, strict=True)) for c in label) > len(label) // 3, label
    # a box drawn in class "bird" is drawn in bird's colour as soon as the answer comes, no reload needed
    page.mouse.click(*fit.page(3000, 500))  # the canvas takes the keys once clicked (empty space: no edit)
    page.keyboard.press("3")  # nothing selected: the class of the next box
    drag(page, fit.page(2600, 1600), fit.page(3400, 2400))
    assert payloads(page, store, 1)[0]["class_name"] == "bird"
    drawn(page, store)
    ex, ey = fit.page(2600, 1800)  # on its left edge, clear of the handles (it is selected)
    assert [0, 200, 0] in [pixel(page, ex + dx, ey) for dx in (-2, -1, 0, 1)]


def test_a_stroke_made_before_the_first_strokes_answer_goes_to_the_object_it_made(server, contexts):
    """The brush on empty space makes an object; a second stroke drawn before that answer waits for it, then is
    sent for that object, also when the answer brings a new mask overlay that is still loading."""
    from ui.canvas import mask_index_to_overlay

    url, folder = server
    source = folder / f"overlay-source-{uuid.uuid4().hex}.png"
    mask_index_to_overlay(np.zeros((H, W), dtype=np.uint16)).save(source)
    store = FakeStore(folder / "photo.png")
    store.overlay_per_edit, store.delay = source, 0.5
    page = open_canvas(contexts, url, store)
    fit = Fit(page)
    page.locator("#canvas .gc-tool[data-tool=brush]").click()
    drag(page, fit.page(1000, 1000), fit.page(1400, 1200))  # makes an object; answered in 0.5 s
    drag(page, fit.page(1100, 1300), fit.page(1500, 1500))  # before that answer: held
    first, second = payloads(page, store, 2)
    assert first["object_id"] is None and second["object_id"] == 1  # the object the first stroke made
    page.wait_for_selector(ROOT + "[data-pending='0']", state="attached", timeout=10_000)
    assert not page.errors


def test_an_answer_dropped_as_older_than_the_shown_state_still_ends_its_edit(server, contexts):
    """A refresh made after an edit can reach the page before that edit's own answer, which is then older than what
    the page shows and is not drawn; its edit is answered all the same (not drawn as in flight for ever, and the
    clicks after a creating click are not held behind it for ever)."""
    url, folder = server
    store = FakeStore(folder / "photo.png")
    page = open_canvas(contexts, url, store)
    fit = Fit(page)
    page.locator("#canvas .gc-tool[data-tool=click]").click()
    store.delay = 1.5
    page.mouse.click(*fit.page(1000, 1000))  # creates an object; its answer comes in 1.5 s
    page.wait_for_timeout(300)
    ahead = store.revision + 100
    page.locator("#ahead").click()  # a newer state reaches the page first
    page.wait_for_selector(f"{ROOT}[data-revision='{ahead}']", state="attached", timeout=10_000)
    payloads(page, store, 1)  # the click's answer is made: older than what the page shows
    page.wait_for_selector(ROOT + "[data-stale='1']", state="attached", timeout=10_000)
    page.wait_for_selector(ROOT + "[data-pending='0']", state="attached", timeout=10_000)
    store.revision, store.delay = ahead, 0.0  # later answers are newer again
    page.mouse.click(*fit.page(2500, 2000))
    second = payloads(page, store, 2)[1]
    assert second["kind"] == "click"  # sent, not held behind the first
    assert not page.errors


def _cursor(page, at):
    page.mouse.move(*at)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return page.locator(ROOT).get_attribute("data-cursor")


def _brightest(page, x, y, width=8):
    """The brightest canvas pixel (max over RGB) in the row of page px (x..x + width, y)."""
    return max(max(pixel(page, x + i, y)) for i in range(width + 1))


def test_each_tool_has_its_keys_cursor_marks_and_pan(server, contexts):
    """The table of tools (ui/canvas/tools.js): the keys choose a tool; the box tool's cursor over a box, a handle
    and empty space; space shows the pan's cursor with any tool; the brush draws its outline at the pointer; a
    middle-drag pans with the brush (no stroke sent)."""
    url, folder = server
    store = FakeStore(folder / "photo.png", [obj(1, [400, 400, 1400, 1200])])
    page = open_canvas(contexts, url, store)
    fit = Fit(page)
    tool = lambda: page.locator(ROOT).get_attribute("data-tool")  # noqa: E731
    pressed = lambda: page.locator("#canvas .gc-tool[aria-pressed=true]").get_attribute("data-tool")  # noqa: E731
    for key, name in [("k", "click"), ("u", "brush"), ("e", "eraser"), ("b", "box"), ("u", "brush"), ("v", "box")]:
        page.keyboard.press(key)
        assert (tool(), pressed()) == (name, name)

    inside, empty = fit.page(900, 800), fit.page(3000, 2500)
    assert (_cursor(page, inside), _cursor(page, empty)) == ("move", "")
    page.mouse.click(*inside)
    page.wait_for_selector(f"{ROOT}[data-selected='1']", state="attached")
    assert _cursor(page, fit.page(1400, 1200)) == "se-resize"
    page.keyboard.down(" ")
    assert _cursor(page, empty) == "grab"
    page.mouse.down()
    assert _cursor(page, (empty[0] + 5, empty[1])) == "grabbing"
    page.mouse.up()
    page.keyboard.up(" ")
    fit.tx += 5  # that pan moved the image 5 px right
    assert _cursor(page, fit.page(900, 800)) == "move"

    page.keyboard.press("u")
    spot = fit.page(3000, 2500)
    assert _cursor(page, spot) == ""
    assert _brightest(page, spot[0], spot[1]) > 150  # the brush's white outline around the pointer
    page.keyboard.press("v")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert _brightest(page, spot[0], spot[1]) == max(BACKGROUND)  # the box tool draws none

    page.keyboard.press("u")
    page.mouse.move(*spot)
    page.mouse.down(button="middle")
    page.mouse.move(spot[0] - 40, spot[1], steps=4)
    page.mouse.up(button="middle")
    fit.tx -= 40
    page.keyboard.press("v")
    a, b = fit.page(2000, 1500), fit.page(2800, 2100)
    drag(page, a, b)
    [add] = payloads(page, store, 1)  # the middle-drag sent nothing; this box lands where the panned view shows
    assert add["kind"] == "add" and near(add["box"], [*fit.image(*a), *fit.image(*b)])
    assert near(add["box"], [2000, 1500, 2800, 2100], tol=0.5 / fit.s + 1e-6)
    assert not page.errors
