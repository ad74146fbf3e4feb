"""Edit-to-paint latency of the labeling canvas (ui/canvas) in headless Chromium (Debian's chromium + playwright):
the time from the pointer-up that ends an edit to the frame that draws the server's answer.

    python bench/bench_canvas.py [--runs 20] [--handler-delay-ms 0] [--size 4000x3000] [--points 2000] [--app]

--app times the whole app instead (`python app.py` with a tiny random model, SAM off): the real edit protocol,
the project store on disk (one transaction and an undo entry per edit), the canvas value with the picture and
the palette overlay written as the app writes them, and the other outputs of an edit (image line, list, counter).

Two edits, each timed `--runs` times after one warm-up:
- a box drawn with the box tool (Shift+drag: always a new box): pointer-up -> the frame that draws the new
  value (the canvas' `data-painted-at`, performance.now() in the requestAnimationFrame callback that drew it);
- a brush stroke of `--points` real pointer moves: pointer-up -> the frame that draws the new value, and -> the
  frame that draws its new mask overlay (the server rasterizes the stroke and writes a palette PNG of the whole
  image, as the app would). The handler's own time is listed too.
`--handler-delay-ms` adds a sleep to every edit (a stand-in for the project store's work).
Prints a markdown table of medians and 90th percentiles in ms.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

CLASSES = [{"name": "cat", "color": [255, 0, 0]}, {"name": "dog", "color": [0, 0, 255]}]
ROOT = "#canvas .gc-root"


class Store:
    """The server in miniature: boxes in a dict, masks in one index image, an overlay PNG per revision."""

    def __init__(self, folder: Path, width: int, height: int, delay_s: float):
        self.folder, self.w, self.h, self.delay_s = folder, width, height, delay_s
        self.image = folder / "photo.jpg"
        yy, xx = np.mgrid[:height, :width]
        rgb = np.stack([xx * 200 // width + 30, yy * 160 // height + 40, np.full_like(xx, 90)], -1).astype(np.uint8)
        Image.fromarray(rgb).save(self.image, quality=90)
        self.objects, self.index, self.overlay = {}, Image.new("L", (width, height), 0), None
        self.revision, self.next_id, self.handler_ms, self.stroke_points = 1, 1, [], []
        self.lock = threading.Lock()

    def value(self, selected=None, seq=None):
        fd = lambda p: {"path": str(p), "meta": {"_type": "gradio.FileData"}}  # noqa: E731
        return {"image_id": 1, "revision": self.revision, "image": fd(self.image), "width": self.w, "height": self.h,
                "objects": list(self.objects.values()), "classes": CLASSES,
                "overlay": fd(self.overlay) if self.overlay else None, "selected": selected,
                "can_undo": True, "can_redo": False, "seq": seq, "message": None}

    def create(self, box, class_name, has_mask=False):
        o = {"id": self.next_id, "class_name": class_name or "cat", "phrase": False, "box": box, "score": None,
             "source": "manual", "color": CLASSES[0]["color"], "has_mask": has_mask, "clicks": []}
        self.objects[o["id"]] = o
        self.next_id += 1
        return o["id"]

    def edit(self, p):
        t = time.perf_counter()
        with self.lock:
            time.sleep(self.delay_s)
            selected = None
            if p["kind"] == "add":
                selected = self.create(p["box"], p["class_name"])
            elif p["kind"] == "stroke":
                self.stroke_points.append(len(p["points"]))
                oid = p["object_id"]
                if oid is None:
                    oid = selected = self.create([0, 0, 1, 1], p["class_name"], has_mask=True)
                k = list(self.objects).index(oid) + 1  # overlay value k = objects[k - 1]
                draw = ImageDraw.Draw(self.index)
                r, pts = p["radius"], [tuple(q) for q in p["points"]]
                draw.line(pts, fill=0 if p["erase"] else k, width=round(2 * r), joint="curve")
                for x, y in (pts[0], pts[-1]):
                    draw.ellipse([x - r, y - r, x + r, y + r], fill=0 if p["erase"] else k)
                from ui.canvas import mask_index_to_overlay

                self.overlay = self.folder / f"overlay-{self.revision + 1}.png"
                mask_index_to_overlay(np.asarray(self.index)).save(self.overlay, compress_level=1)
            self.revision += 1
            out = self.value(selected=selected, seq=p["seq"])
        self.handler_ms.append((time.perf_counter() - t) * 1000)
        return out


MOVES = """([ax, ay, bx, by, n]) => {
  const c = document.querySelector('#canvas canvas');
  for (let i = 1; i < n; i++) {
    const t = i / n;
    c.dispatchEvent(new PointerEvent('pointermove', {pointerId: window.downId, pointerType: 'mouse', isPrimary: true,
      clientX: ax + (bx - ax) * t, clientY: ay + (by - ay) * t, buttons: 1, bubbles: true}));
  }
}"""


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--handler-delay-ms", type=float, default=0.0)
    parser.add_argument("--size", default="4000x3000", help="image WxH in px")
    parser.add_argument("--points", type=int, default=2000, help="pointer moves per brush stroke")
    parser.add_argument("--no-input", action="store_true", help="wire the listener without the canvas as its input")
    parser.add_argument("--app", action="store_true", help="the whole app and its project store, not a stand-in")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr
    from app_harness import free_port, profile
    from playwright.sync_api import sync_playwright

    from ui.canvas import make_canvas

    # gradio serves files in its own cache as they are; elsewhere it hashes and copies them on every reply
    folder = Path(gr.utils.get_upload_folder()) / f"canvas-bench-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    store = Store(folder, width, height, args.handler_delay_ms / 1000)
    if args.app:
        return bench_app(args, width, height, store.image, folder)

    def on_edit(value, evt: gr.EventData):
        return store.edit(evt._data)

    def on_edit_only(evt: gr.EventData):
        return store.edit(evt._data)

    with gr.Blocks() as demo:
        canvas = make_canvas(elem_id="canvas", height=600)
        if args.no_input:
            canvas.edit(on_edit_only, None, [canvas], show_progress="hidden", trigger_mode="multiple")
        else:
            canvas.edit(on_edit, [canvas], [canvas], show_progress="hidden", trigger_mode="multiple")
        demo.load(lambda: store.value(), None, canvas)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)

    rows = {}
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        context = profile(pw, Path(tmp) / "profile")
        page = context.new_page()
        page.on("pageerror", lambda e: print("page error:", e))
        page.goto(demo.local_url, wait_until="load")
        page.wait_for_selector(f"{ROOT}[data-image-ready='1']", state="attached", timeout=60_000)
        page.evaluate("""() => {
          addEventListener('pointerup', () => { window.upAt = performance.now(); }, true);
          addEventListener('pointerdown', (e) => { window.downId = e.pointerId; }, true);
        }""")
        def finished(revision, attr="revision"):
            page.wait_for_selector(f"{ROOT}[data-{attr}='{revision}']", state="attached", timeout=60_000)
            key = "paintedAt" if attr == "revision" else "overlayPaintedAt"
            return page.evaluate(f"() => document.querySelector('{ROOT}').dataset.{key} - window.upAt")

        rows.update(measure(page, args, width, height, lambda: store.revision + 1, finished, store))
        context.close()
    demo.close()
    shutil.rmtree(folder, ignore_errors=True)

    print(f"\nCanvas edit latency, {width}x{height} image, handler delay {args.handler_delay_ms:g} ms, "
          f"canvas {'not ' if args.no_input else ''}an input, "
          f"{args.runs} runs, {os.cpu_count()} CPUs; points per stroke sent: {min(store.stroke_points)}-"
          f"{max(store.stroke_points)}\n")
    print("| measure | median ms | p90 ms |")
    print("|---|---:|---:|")
    for name, xs in rows.items():
        print(f"| {name} | {statistics.median(xs):.0f} | {percentile(xs, 0.9):.0f} |")


def measure(page, args, width, height, next_revision, finished, store=None) -> dict:
    """Time `--runs` box draws and brush strokes on the open page; {measure: [ms, ...]}."""
    rows = {}
    r = page.locator("#canvas canvas").bounding_box()
    s = min(r["width"] / width, r["height"] / height)
    left, top = r["x"] + (r["width"] - width * s) / 2, r["y"] + (r["height"] - height * s) / 2
    at = lambda fx, fy: (round(left + fx * width * s), round(top + fy * height * s))  # noqa: E731
    rng = np.random.default_rng(0)

    def phases():  # pointer-up -> edit sent -> value received (watch) -> value painted, ms
        d = page.evaluate(f"() => Object.assign({{}}, document.querySelector('{ROOT}').dataset)")
        sent, got, painted = (float(d[k]) for k in ("sentAt", "receivedAt", "paintedAt"))
        up = page.evaluate("() => window.upAt")
        return sent - up, got - sent, painted - got

    box_ms, box_phases = [], []
    for i in range(args.runs + 1):
        x, y = rng.uniform(0.05, 0.8), rng.uniform(0.05, 0.8)
        revision = next_revision()
        page.mouse.move(*at(x, y))
        page.keyboard.down("Shift")
        page.mouse.down()
        page.mouse.move(*at(x + 0.1, y + 0.1), steps=4)
        page.mouse.up()
        page.keyboard.up("Shift")
        ms = finished(revision)
        if i:
            box_ms.append(ms)
            box_phases.append(phases())
    rows["box drawn: pointer-up -> value painted"] = box_ms
    for k, name in enumerate(("pointer-up -> edit sent", "edit sent -> value received", "value received -> painted")):
        rows[f"box drawn, phase: {name}"] = [p[k] for p in box_phases]

    page.keyboard.press("u")
    page.keyboard.press("Escape")
    value_ms, overlay_ms, handler_ms, stroke_phases = [], [], [], []
    for i in range(args.runs + 1):
        x, y = rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.6)
        revision, n_before = next_revision(), len(store.handler_ms) if store else 0
        (ax, ay), (bx, by) = at(x, y), at(x + 0.3, y + 0.3)
        page.mouse.move(ax, ay)
        page.mouse.down()
        # the moves in between are dispatched in the page for the real pointer (CDP waits a frame per move:
        # 2,000 of them would take half a minute); the down and the timed up are real
        page.evaluate(MOVES, [ax, ay, bx, by, args.points - 1])
        page.mouse.move(bx, by)
        page.mouse.up()
        v = finished(revision)
        o = finished(revision, "overlay-revision")
        if i:
            stroke_phases.append(phases())
            value_ms.append(v)
            overlay_ms.append(o)
            if store is not None:
                handler_ms.append(store.handler_ms[n_before])
    rows[f"{args.points}-point stroke: pointer-up -> value painted"] = value_ms
    rows[f"{args.points}-point stroke: pointer-up -> overlay painted"] = overlay_ms
    if handler_ms:
        rows[f"{args.points}-point stroke: handler (rasterize + PNG)"] = handler_ms
    for k, name in enumerate(("pointer-up -> edit sent", "edit sent -> value received", "value received -> painted")):
        rows[f"{args.points}-point stroke, phase: {name}"] = [p[k] for p in stroke_phases]
    return rows


def bench_app(args, width, height, picture: Path, folder: Path) -> None:
    """The same timings against the whole app and its project store."""
    import tempfile

    from app_harness import free_port, profile, start
    from playwright.sync_api import sync_playwright
    from tiny_models import make_hf_model, make_tokenizer, save_hf

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        model = save_hf(make_hf_model("tiny", seed=0), make_tokenizer(), Path(tmp) / "tiny")
        demo, app = start(["--model", str(model), "--sam", "none", "--workspace", str(Path(tmp) / "ws"),
                           "--port", str(free_port())])
        context = profile(pw, Path(tmp) / "profile")
        page = context.new_page()
        page.goto(demo.local_url, wait_until="load")
        page.wait_for_selector("#image-info >> text=No images yet", timeout=60_000)
        page.locator("#uploads input[type=file]").set_input_files([str(picture)])
        page.wait_for_selector(f"#image-info >> text={picture.name}", timeout=120_000)
        [project] = [p for p in app.sessions.open_projects() if p.images()]
        project.add_classes(["cat", "dog"])
        page.locator("#next-btn").click()
        page.wait_for_function("() => document.querySelector('#canvas .gc-class')?.options.length === 2", timeout=60_000)
        page.wait_for_selector(f"{ROOT}[data-image-ready='1']", state="attached", timeout=60_000)
        page.evaluate("""() => {
          addEventListener('pointerup', () => { window.upAt = performance.now(); }, true);
        }""")

        def finished(_revision, attr="revision"):
            key = "paintedAt" if attr == "revision" else "overlayPaintedAt"
            js_attr = "revision" if attr == "revision" else "overlayRevision"
            page.wait_for_function(f"() => Number(document.querySelector('{ROOT}').dataset.{js_attr}) > window.mark_{js_attr}",
                                   timeout=60_000)
            return page.evaluate(f"() => document.querySelector('{ROOT}').dataset.{key} - window.upAt")

        def mark():  # the revisions shown before the edit: the app's revisions are its own
            page.evaluate(f"""() => {{ const d = document.querySelector('{ROOT}').dataset;
                window.mark_revision = Number(d.revision || 0);
                window.mark_overlayRevision = Number(d.overlayRevision || 0); }}""")
            return None

        rows = measure(page, args, width, height, mark, finished)
        objects = sum(len(project.objects(r.id)) for r in project.images())
        context.close()
        demo.close()
        app.sessions.close()
    shutil.rmtree(folder, ignore_errors=True)
    print(f"\nCanvas edit latency in the whole app (project store on disk, {objects} objects at the end), "
          f"{width}x{height} image, {args.runs} runs, {os.cpu_count()} CPUs\n")
    print("| measure | median ms | p90 ms |")
    print("|---|---:|---:|")
    for name, xs in rows.items():
        print(f"| {name} | {statistics.median(xs):.0f} | {percentile(xs, 0.9):.0f} |")


if __name__ == "__main__":
    main()
