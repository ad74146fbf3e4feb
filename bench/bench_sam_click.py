"""The app's SAM click in the browser (issue 27): pointer-up -> the click's mask drawn on the canvas, for the first
click on an image reached with Next after the app embedded it in the background (its prefetch), and, to compare,
the first click on an image reached with the prefetch held (the click computes the embedding itself).

    python bench/bench_sam_click.py [--sam PATH|NAME] [--runs 5] [--size 1200x800] [--device cpu]

The whole app (`python app.py`, tiny random Grounding DINO; `--sam` as the app takes it, default a tiny random
SAM 1 file), one project of 3 * runs + 3 random pictures, headless Chromium (Debian's chromium + playwright),
real pointer events with the SAM click tool. Each click is on a new image, at its centre. The time is the page's
own clock: pointer-up (a capturing listener) to the canvas' `data-overlay-painted-at` (performance.now() in the
requestAnimationFrame callback that first drew the new mask overlay); pointer-down, when the click is sent, is
listed too. The server's encoder calls during the clicks are counted (0 after a prefetch). Prints a table (ms).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))
sys.path.insert(0, str(ROOT_DIR / "tests" / "support"))

ROOT = "#canvas .gc-root"
LISTEN = """() => {
  if (window.samBench) return;
  window.samBench = true;
  addEventListener('pointerdown', () => { window.downAt = performance.now(); }, true);
  addEventListener('pointerup', () => { window.upAt = performance.now(); }, true);
}"""


def pictures(folder: Path, n: int, width: int, height: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        small = rng.integers(0, 255, (height // 40 + 1, width // 40 + 1, 3), dtype=np.uint8)  # blocks: something to segment
        pixels = small.repeat(40, 0).repeat(40, 1)[:height, :width]
        path = folder / f"img{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def centre(page, width: int, height: int) -> tuple[int, int]:
    r = page.locator("#canvas canvas.gc-canvas").bounding_box()
    s = min(r["width"] / width, r["height"] / height)
    return (round(r["x"] + (r["width"] - width * s) / 2 + width / 2 * s),
            round(r["y"] + (r["height"] - height * s) / 2 + height / 2 * s))


def next_image(page) -> int:
    """Press Next; the new image's id once the canvas shows it."""
    shown = page.locator(ROOT).get_attribute("data-image-id")
    page.locator("#next-btn").click()
    page.wait_for_function(f"() => {{ const d = document.querySelector('{ROOT}').dataset; "
                           f"return d.imageId !== '{shown}' && d.imageReady === '1'; }}", timeout=120_000)
    return int(page.locator(ROOT).get_attribute("data-image-id"))


def click_once(page, app, project, width: int, height: int, held: bool, settle: bool = False
               ) -> tuple[float, float, int, list[float]]:
    """Next, then one SAM click at the new image's centre -> (pointer-up -> mask drawn ms, pointer-down -> mask
    drawn ms, the server's encoder calls during the click: the prefetch of the image after it, not the click's own,
    when the click ran only the decoder, [sent -> the server's answer received, received -> the overlay loaded,
    loaded -> painted] ms)."""
    if not held:  # the image Next shows was queued when this one was shown: let its embedding finish first
        assert app.prefetch.wait_idle(600)
    image_id = next_image(page)
    if settle:  # a person who looks at the picture a few seconds first: the next image's embedding is done
        queued = time.perf_counter() + 10  # its request is queued when the page shows this image: see it start
        while not (app.prefetch.waiting() or not app.prefetch.wait_idle(0)) and time.perf_counter() < queued:
            time.sleep(0.01)
        assert app.prefetch.wait_idle(600)
    # then click at once: the embedding of the image after it starts meanwhile (at a low priority), as when a
    # person clicks right after Next
    seg = app.hub.loaded_segmenter()
    before = seg.encoder_calls if seg is not None else 0
    page.evaluate(f"() => {{ window.markOverlay = document.querySelector('{ROOT}').dataset.overlayRevision || ''; }}")
    page.mouse.click(*centre(page, width, height))
    page.wait_for_function(f"() => (document.querySelector('{ROOT}').dataset.overlayRevision || '') !== "
                           "window.markOverlay", timeout=600_000)
    up, down, *parts = page.evaluate(
        f"() => {{ const d = document.querySelector('{ROOT}').dataset; const at = Number(d.overlayPaintedAt); "
        "return [at - window.upAt, at - window.downAt, d.receivedAt - d.sentAt, d.overlayLoadedAt - d.receivedAt, "
        "at - d.overlayLoadedAt]; }")
    assert project.objects(image_id), "the click stored no object"
    return up, down, app.hub.loaded_segmenter().encoder_calls - before, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam", default=None, help="the app's --sam: a name (vit_b, sam2.1-tiny, ...), a file or a "
                                                    "folder (default: a tiny random SAM 1)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", default="1200x800", help="WxH of the pictures (default 1200x800)")
    parser.add_argument("--device", default=None, help="the app's --device (default: cuda when available)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from app_harness import free_port, profile, start
    from playwright.sync_api import sync_playwright
    from tiny_models import make_hf_model, make_tokenizer, save_hf
    from tiny_sam import save_tiny_sam

    rows: dict[str, list[tuple[float, float, int, list[float]]]] = {
        "after its prefetch, at once (the next one's embedding under way)": [],
        "after its prefetch, once the next one's is done too": [],
        "prefetch held (no embedding yet)": []}
    with tempfile.TemporaryDirectory() as tmp_name, sync_playwright() as pw:
        tmp = Path(tmp_name)
        model = save_hf(make_hf_model("tiny", seed=0), make_tokenizer(), tmp / "tiny")
        sam = args.sam or str(save_tiny_sam(tmp / "tiny_sam.pth"))
        flags = ["--model", str(model), "--sam", sam, "--sams", "none", "--workspace", str(tmp / "ws"),
                 "--port", str(free_port())] + (["--device", args.device] if args.device else [])
        demo, app = start(flags)
        t = time.perf_counter()
        app.hub.segmenter()  # loaded before the clock starts, as the app does at start
        load_s = time.perf_counter() - t
        try:
            context = profile(pw, tmp / "profile")
            page = context.new_page()
            page.goto(demo.local_url, wait_until="load")
            page.wait_for_selector("#image-info >> text=No images yet", timeout=60_000)
            page.locator("#uploads input[type=file]").set_input_files(pictures(tmp / "up", len(rows) * args.runs + 3, width,
                                                                               height))
            page.wait_for_selector("#image-info >> text=img00.png", timeout=600_000)
            [project] = [p for p in app.sessions.open_projects() if p.images()]
            project.add_classes(["cat"])
            page.locator("#next-btn").click()  # the page reads the classes again (and shows img01)
            page.wait_for_function("() => document.querySelector('#canvas .gc-class')?.options.length === 1",
                                   timeout=60_000)
            page.evaluate(LISTEN)
            page.locator("#canvas .gc-tool[data-tool='click']").click()
            for name in rows:
                if name.startswith("prefetch held"):
                    app.prefetch.wait_idle(600)
                    app.prefetch.hold()
                    next_image(page)  # past the image the last prefetch embedded
                for _ in range(args.runs):
                    rows[name].append(click_once(page, app, project, width, height, name.startswith("prefetch held"),
                                                  settle="once the next" in name))
            app.prefetch.release()
            app.prefetch.wait_idle(600)
            context.close()
        finally:
            demo.close()
            app.sessions.close()
    seg_name = app.hub.sam_default_key
    print(f"\nSAM click in the app: pointer-up -> its mask drawn, {width}x{height} pictures, SAM {seg_name} on "
          f"{app.hub.device} (loaded in {load_s:.1f} s), {args.runs} clicks each, each the first on its image, "
          f"{os.cpu_count()} CPUs\n")
    print("| first click on an image reached with Next | median ms | min ms | max ms | pointer-down -> drawn, median ms "
          "| encoder calls during the clicks |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, got in rows.items():
        up = [g[0] for g in got]
        down = [g[1] for g in got]
        print(f"| {name} | {statistics.median(up):.0f} | {min(up):.0f} | {max(up):.0f} | {statistics.median(down):.0f} "
              f"| {sum(g[2] for g in got)} |")
    parts = [g[3] for name, got in rows.items() if not name.startswith("prefetch held") for g in got]
    print("\nwhere the time goes, median ms over the clicks after a prefetch: sent -> the server's answer received, -> the mask "
          "overlay loaded, -> painted:", [round(statistics.median(p[i] for p in parts)) for i in range(3)])


if __name__ == "__main__":
    main()
