"""The canvas in the whole app (tiny models, tiny SAM), headless Chromium, real pointer, wheel and key
events, on a 4000x3000 photo with an EXIF rotation (upright 3000x4000), at device pixel ratio 1 and 2.
Every check reads what the PROJECT stores. Expected image coordinates come from the screen points the
mouse used and the fit geometry derived here (fit centred, scale = min(W / w, H / h); the wheel zooms x2
per 200 px of delta around the cursor), never from the canvas' own transform."""

import math

import numpy as np
import pytest
from app_harness import free_port, fresh_page, needs_browser, profile, start
from PIL import Image
from test_mask_edits import brute_stroke
from tiny_sam import save_tiny_sam

from gdino.masks import rle_to_mask

pytestmark = needs_browser

W, H = 3000, 4000  # upright: a 4000x3000 photo with EXIF orientation 6 (rotate 90 clockwise to view)
ROOT = "#canvas .gc-root"


@pytest.fixture(scope="module")
def server(tiny_hf, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canvas_app")
    demo, app = start(["--model", str(tiny_hf[1]), "--sam", str(save_tiny_sam(tmp / "sam.pth")),
                       "--workspace", str(tmp / "ws"), "--port", str(free_port())])
    photo = tmp / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8).repeat(100, 0).repeat(100, 1)
    Image.fromarray(pixels).save(photo, exif=exif, quality=85)  # stored 4000 wide, 3000 high
    yield demo.local_url, app, photo
    demo.close()
    app.sessions.close()


class View:
    """Image px <-> page px for the fit-centred view, optionally zoomed around a page point."""

    def __init__(self, page):
        r = page.locator("#canvas canvas.gc-canvas").bounding_box()
        self.left, self.top = r["x"], r["y"]
        self.s = min(r["width"] / W, r["height"] / H)
        self.tx, self.ty = (r["width"] - W * self.s) / 2, (r["height"] - H * self.s) / 2

    def zoom(self, factor, anchor):
        ax, ay = anchor[0] - self.left, anchor[1] - self.top
        self.tx, self.ty = ax - (ax - self.tx) * factor, ay - (ay - self.ty) * factor
        self.s *= factor

    def page(self, x, y):  # the nearest whole page pixel: where the mouse can go
        return round(self.left + self.tx + x * self.s), round(self.top + self.ty + y * self.s)

    def image(self, px, py):
        return (px - self.left - self.tx) / self.s, (py - self.top - self.ty) / self.s


def drag(page, a, b, steps=8):
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=steps)
    page.mouse.up()


def until(page, check, what, timeout_ms=20_000):
    for _ in range(timeout_ms // 100):
        result = check()
        if result:
            return result
        page.wait_for_timeout(100)
    raise AssertionError(f"the project never got {what}")


def near(a, b, tol=1.0):
    return all(abs(u - v) <= tol for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("dpr", [1, 2])
def test_every_canvas_action_is_stored_in_image_pixels(server, tmp_path, dpr):
    from playwright.sync_api import sync_playwright

    url, app, photo = server
    with sync_playwright() as pw:
        context = profile(pw, tmp_path / "profile", device_scale_factor=dpr)
        earlier = {p.path for p in app.sessions.open_projects()}  # other tests' visitors
        page = fresh_page(context, url)
        page.locator("#uploads input[type=file]").set_input_files([str(photo)])
        page.wait_for_selector("#image-info >> text=rotated.jpg", timeout=60_000)
        project = next(p for p in app.sessions.open_projects() if p.path not in earlier and p.images())
        [image] = project.images()
        assert (image.width, image.height) == (W, H)  # upright
        project.add_classes(["cat", "dog", "bird"])
        page.locator("#next-btn").click()  # the page shows it again, now with the classes
        page.wait_for_function("() => document.querySelector('#canvas .gc-class')?.options.length === 3",
                               timeout=30_000)
        page.wait_for_selector(ROOT + "[data-image-ready='1']", timeout=30_000)
        page.locator("#canvas canvas.gc-canvas").scroll_into_view_if_needed()
        fit = View(page)
        assert fit.s < 0.2  # 3000x4000 shown about 560 px high: a screen pixel is several image pixels

        def objects():
            return project.objects(image.id)

        # a box at fit: its corners are the image points under the mouse, within one image pixel
        a, b = fit.page(600, 700), fit.page(1700, 1900)
        drag(page, a, b)
        (first,) = until(page, objects, "the first box")
        assert near(first.box, (*fit.image(*a), *fit.image(*b))), first.box
        assert first.class_name == "cat" and first.source == "manual"

        # x4 zoom with the wheel around a point, then a box there: still within one image pixel
        anchor = fit.page(2300, 3000)
        page.mouse.move(*anchor)
        for _ in range(4):
            page.mouse.wheel(0, -100 * dpr)  # the page gets deltaY / device_scale_factor: -50 at DPR 2
        zoomed = View(page)
        zoomed.zoom(4.0, anchor)
        page.wait_for_timeout(300)
        a, b = (anchor[0] - 40, anchor[1] - 30), (anchor[0] + 60, anchor[1] + 50)
        drag(page, a, b)
        second = until(page, lambda: [o for o in objects() if o.id != first.id], "the zoomed box")[0]
        assert near(second.box, (*zoomed.image(*a), *zoomed.image(*b))), second.box
        assert second.box[2] - second.box[0] == pytest.approx(100 / zoomed.s, abs=1.0)
        page.keyboard.press("f")  # back to fit
        page.wait_for_timeout(300)

        # brush (u) on the selected box: the stored mask is exactly the stroke rasterized here (radius 20 px)
        page.mouse.click(*fit.page(1150, 1300))  # select the first box
        page.wait_for_selector(f"{ROOT}[data-selected='{first.id}']", timeout=10_000)
        page.keyboard.press("u")
        a, b = fit.page(900, 1000), fit.page(1400, 1500)
        drag(page, a, b, steps=12)
        painted = until(page, lambda: next(o for o in objects() if o.id == first.id).mask, "the brushed mask")
        mask = rle_to_mask(painted)
        stroke = [fit.image(*a), fit.image(*b)]  # every sample lies on this segment: the same pixels
        inner, outer = brute_stroke_fast(stroke, 20.0 - 1e-3), brute_stroke_fast(stroke, 20.0 + 1e-3)
        assert (mask >= inner).all() and (mask <= outer).all(), (int((mask & ~outer).sum()), int((inner & ~mask).sum()))

        # move the masked box (b): box and mask move by the same whole-pixel offset
        page.keyboard.press("b")
        before = next(o for o in objects() if o.id == first.id)
        grab = fit.page(1600, 1800)
        drag(page, grab, (grab[0] + 15, grab[1] + 10))
        moved = until(page, lambda: next((o for o in objects() if o.id == first.id and o.box != before.box), None),
                      "the moved box")
        dx, dy = moved.box[0] - before.box[0], moved.box[1] - before.box[1]
        assert dx == round(dx) and dy == round(dy) and abs(dx - 15 / fit.s) <= 1 and abs(dy - 10 / fit.s) <= 1
        assert np.array_equal(rle_to_mask(moved.mask), shifted(rle_to_mask(before.mask), int(dx), int(dy)))

        # SAM clicks (k) on the selected box: the second click refines the same object without re-selecting
        page.keyboard.press("k")
        page.mouse.click(*fit.page(1300, 1500))
        until(page, lambda: (next(o for o in objects() if o.id == first.id).clicks or {}).get("points"), "a click")
        page.keyboard.down("Alt")  # a negative click
        page.mouse.click(*fit.page(1000, 1100))
        page.keyboard.up("Alt")
        clicked = until(page, lambda: next((o for o in objects() if o.id == first.id and o.clicks
                                            and len(o.clicks["points"]) == 2), None), "the second click")
        assert [p[2] for p in clicked.clicks["points"]] == [True, False] and len(objects()) == 2

        # keys on a selection: 3 gives the third class, Delete removes, Ctrl+Z brings back, Backspace removes
        page.keyboard.press("b")
        page.mouse.click(*zoomed_center(fit, second))
        page.wait_for_selector(f"{ROOT}[data-selected='{second.id}']", timeout=10_000)
        page.keyboard.press("3")
        until(page, lambda: any(o.id == second.id and o.class_name == "bird" for o in objects()), "bird")
        page.keyboard.press("Delete")
        until(page, lambda: all(o.id != second.id for o in objects()), "the deletion")
        page.keyboard.press("Control+z")
        until(page, lambda: any(o.id == second.id and o.class_name == "bird" for o in objects()), "the undo")
        page.wait_for_selector(ROOT + "[data-visible-boxes='2'][data-pending='0']", timeout=10_000)  # drawn again
        page.mouse.click(*zoomed_center(fit, second))
        page.wait_for_selector(f"{ROOT}[data-selected='{second.id}']", timeout=10_000)
        page.keyboard.press("Backspace")
        until(page, lambda: all(o.id != second.id for o in objects()), "the Backspace deletion")

        # undo and redo after a reload: the history is in the project
        page.reload(wait_until="load")
        page.wait_for_selector(ROOT + "[data-image-ready='1']", timeout=60_000)
        page.locator(ROOT).focus()
        page.keyboard.press("Control+z")
        until(page, lambda: any(o.id == second.id for o in objects()), "the undo after a reload")
        page.keyboard.press("Control+Shift+z")
        until(page, lambda: all(o.id != second.id for o in objects()), "the redo after a reload")

        # the score filter: model boxes under it are hidden; "Delete hidden" deletes exactly those
        project.replace_model_objects(image.id, [
            {"box": (100, 2500, 400, 2800), "class_name": "dog", "score": 0.2},
            {"box": (500, 2500, 800, 2800), "class_name": "dog", "score": 0.5},
            {"box": (900, 2500, 1200, 2800), "class_name": "dog", "score": 0.9}])
        page.locator("#next-btn").click()
        page.wait_for_selector(ROOT + "[data-visible-boxes='4']", timeout=30_000)
        slider = page.locator("#canvas .gc-threshold")
        slider.focus()
        for _ in range(60):  # 0.00 -> 0.60 in steps of 0.01, by the keyboard
            page.keyboard.press("ArrowRight")
        page.wait_for_selector(ROOT + "[data-hidden-boxes='2']", timeout=10_000)
        page.locator("#canvas .gc-delete-hidden").click()
        until(page, lambda: sorted(o.score for o in objects() if o.source == "model") == [0.9], "the deletion of hidden")
        assert any(o.id == first.id for o in objects())  # the person's box stays
        context.close()


def zoomed_center(view, obj):
    return view.page((obj.box[0] + obj.box[2]) / 2, (obj.box[1] + obj.box[3]) / 2)


def shifted(mask, dx, dy):
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    keep = (xs + dx >= 0) & (xs + dx < mask.shape[1]) & (ys + dy >= 0) & (ys + dy < mask.shape[0])
    out[ys[keep] + dy, xs[keep] + dx] = True
    return out


def brute_stroke_fast(points, radius):
    """tests/app/test_mask_edits.py's brute force, on the stroke's neighbourhood only (the image is 12 MP)."""
    (ax, ay), (bx, by) = points
    x0, y0 = max(0, math.floor(min(ax, bx) - radius - 2)), max(0, math.floor(min(ay, by) - radius - 2))
    x1, y1 = min(W, math.ceil(max(ax, bx) + radius + 2)), min(H, math.ceil(max(ay, by) + radius + 2))
    out = np.zeros((H, W), bool)
    local = [(ax - x0, ay - y0), (bx - x0, by - y0)]
    out[y0:y1, x0:x1] = brute_stroke(y1 - y0, x1 - x0, local, radius)
    return out
