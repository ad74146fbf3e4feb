"""The app in Chromium on a shared project whose images live in an object store (a real S3 endpoint: moto's
server), as `python app.py --project P --allow-uri s3://bucket/shelf/ok/?endpoint...` serves it: the allowed image
(an EXIF-rotated JPEG) is drawn upright in the canvas, a box dragged on it is stored in its pixels, an image
outside the allowed prefix shows as unreadable (never fetched for the page), and the page's COCO export holds the
allowed image, fetched from the store, upright. Checked in the project and in the zip (pycocotools)."""

import contextlib
import io
import json
import zipfile

import numpy as np
from app_harness import download_export, free_port, needs_browser, profile, start
from PIL import Image, ImageOps

from gdino.sources import size_of
from gdino.store import Project

pytestmark = needs_browser
ROOT = "#canvas .gc-root"


def _jpeg_rotated(seed):
    """A 400x300 JPEG with EXIF orientation 6: upright it is 300 wide, 400 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = np.random.default_rng(seed).integers(0, 255, (30, 40, 3), dtype=np.uint8).repeat(10, 0).repeat(10, 1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", exif=exif, quality=90)
    return buf.getvalue()


def test_object_store_images_in_the_browser(tiny_hf, tmp_path, object_store):
    from playwright.sync_api import sync_playwright

    object_store.put("shelf/ok/a.jpg", _jpeg_rotated(0))
    object_store.put("shelf/other/b.jpg", _jpeg_rotated(1))
    allowed, outside = object_store.uri("shelf/ok/a.jpg"), object_store.uri("shelf/other/b.jpg")
    project = Project.create(tmp_path / "shared", classes=["cat"])
    for uri in (allowed, outside):  # as `gdino label s3://...` adds them: measured upright, nothing copied
        project.add_reference(uri, *size_of(uri))
    a = project.find_image("a.jpg")
    assert (a.width, a.height) == (300, 400) and a.path is None

    demo, app = start(["--model", str(tiny_hf[1]), "--sam", "none", "--workspace", str(tmp_path / "ws"),
                       "--project", str(project.path), "--allow-uri", object_store.uri("shelf/ok/"),
                       "--port", str(free_port())])
    try:
        with sync_playwright() as pw:
            context = profile(pw, tmp_path / "profile")
            page = context.new_page()
            page.goto(demo.local_url, wait_until="load")
            page.wait_for_selector("#image-info >> text=a.jpg", timeout=60_000)
            page.wait_for_selector(ROOT + "[data-image-ready='1']", timeout=60_000)
            info = page.locator("#image-info").inner_text()
            assert "300x400" in info and "cannot be read" not in info
            # a box dragged on it lands in its upright pixels
            canvas = page.locator("#canvas canvas.gc-canvas")
            canvas.scroll_into_view_if_needed()
            r = canvas.bounding_box()
            s = min(r["width"] / 300, r["height"] / 400)
            left, top = r["x"] + (r["width"] - 300 * s) / 2, r["y"] + (r["height"] - 400 * s) / 2

            def at(x, y):
                return round(left + x * s), round(top + y * s)

            # what the canvas drew is the upright picture: the colour at the centre of some of its 10 px blocks
            upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(_jpeg_rotated(0)))).convert("RGB"))
            for x, y in ((15, 15), (285, 25), (35, 385), (255, 375), (155, 205), (105, 345)):
                drawn = page.evaluate("""([x, y]) => Array.from(document.querySelector('#canvas canvas.gc-canvas')
                    .getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3))""",
                                      [round(left - r["x"] + x * s), round(top - r["y"] + y * s)])
                assert np.abs(np.array(drawn) - upright[y, x]).max() <= 40, (x, y, drawn, upright[y, x])
            page.mouse.move(*at(50, 60))
            page.mouse.down()
            page.mouse.move(*at(200, 300), steps=8)
            page.mouse.up()
            for _ in range(200):
                if project.objects(a.id):
                    break
                page.wait_for_timeout(100)
            [box] = project.objects(a.id)
            tol = 1 / s + 0.5
            assert all(abs(u - v) <= tol for u, v in zip(box.box, (50, 60, 200, 300), strict=True)), box.box

            # the image outside --allow-uri: shown as unreadable, in the page's words
            page.locator("#next-btn").click()
            page.wait_for_selector("#image-info >> text=b.jpg", timeout=30_000)
            page.wait_for_selector("#image-info >> text=cannot be read", timeout=30_000)
            assert "127.0.0.1" not in page.locator("#image-info").inner_text()  # the endpoint is not shown

            # the page's COCO export: the allowed image, fetched from the store and upright, with its box
            path = download_export(page, tmp_path / "export.zip")
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.startswith("images/")]
                coco = json.loads(zf.read("annotations/instances_train.json"))
                pictures = {n: Image.open(io.BytesIO(zf.read(n))).size for n in names}
            assert list(pictures.values()) == [(300, 400)] and "a.jpg" in names[0], pictures
            from pycocotools.coco import COCO

            (tmp_path / "instances.json").write_text(json.dumps(coco))
            with contextlib.redirect_stdout(io.StringIO()):
                loaded = COCO(str(tmp_path / "instances.json"))
            [ann] = loaded.dataset["annotations"]
            x, y, w, h = ann["bbox"]
            assert np.allclose([x, y, x + w, y + h], box.box, atol=0.01)
            assert ".toast-body.error" not in page.content()
            context.close()
    finally:
        demo.close()
        app.sessions.close()
        project.close()
