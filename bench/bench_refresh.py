"""How soon a second window shows a box drawn in the first (issue 25, item 10): the app on the tiny models, two
Chromium windows on one image; window 2 draws boxes one after another, and for each the time from the box being
stored in the project to window 1 drawing it is printed; every other box is written by another writer of the
project instead (a run, a script) at a random moment, whose commit time is exact.
Run alone: `python bench/bench_refresh.py [--boxes 10]`."""

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests" / "support"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent / "browser"))  # the refresh test's helpers

from app_harness import browser, fresh_page, running_app  # noqa: E402
from test_editor_refresh_browser import at, photos, ready  # noqa: E402
from tiny_models import make_hf_model, make_tokenizer, save_hf  # noqa: E402

from gdino.store import ObjectState  # noqa: E402
from ui.layout import TICK_S  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of two idle windows to measure the tick's cost")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "hf").mkdir()
        tiny_hf = (None, save_hf(make_hf_model("tiny", seed=0), make_tokenizer(), tmp / "hf"))
        with running_app(tiny_hf, tmp) as (url, app), browser(tmp) as context:
            first = fresh_page(context, url)
            first.locator("#uploads input[type=file]").set_input_files([str(p) for p in photos(tmp / "up", 1)])
            first.wait_for_selector("#image-info >> text=shot00.png", timeout=60_000)
            [project] = app.sessions.open_projects()
            [image] = project.images()
            project.add_classes(["cat"])
            first.locator("#next-btn").click()
            second = context.new_page()
            second.goto(url, wait_until="load")
            for page in (first, second):
                ready(page, boxes=0)
                page.locator("#canvas canvas.gc-canvas").scroll_into_view_if_needed()
            first.bring_to_front()  # the window a person looks at: Chromium draws a background tab 2 times a second
            waits = {"second window": [], "another writer": []}
            pause = random.Random(0)
            for k in range(2 * args.boxes):
                second.wait_for_timeout(pause.uniform(0, 1500))  # a change at any phase of the pages' ticks
                x, y = 10 + 25 * (k % 10), 10 + 50 * (k // 10)
                if k % 2 == 0:  # drawn in the second window (a background tab here: its events may wait a frame)
                    second.mouse.move(*at(second, x, y))
                    second.mouse.down()
                    second.mouse.move(*at(second, x + 20, y + 20), steps=4)
                    second.mouse.up()
                    while len(project.objects(image.id)) < k + 1:
                        second.wait_for_timeout(5)
                    stored = time.time()
                else:  # written by another writer of the project (a run, a script): its commit time is exact
                    project.edit_objects(image.id, new=[ObjectState("cat", (x, y, x + 20.0, y + 20.0))])
                    stored = time.time()
                ready(first, boxes=k + 1, timeout=60_000)
                # the page's own clock says when it drew the new value (Playwright's polling would add its own wait)
                painted = first.evaluate("() => (performance.timeOrigin + Number(document.querySelector("
                                         "'#canvas .gc-root').dataset.paintedAt)) / 1000")
                waits["second window" if k % 2 == 0 else "another writer"].append(painted - stored)
            # what the polling costs: this process's CPU (the server; the browsers are other processes) while the
            # two windows sit idle on the image
            cpu0, wall0 = time.process_time(), time.monotonic()
            first.wait_for_timeout(args.idle * 1000)
            idle_cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    print("| tick s | the change | boxes | median s | max s |\n|---:|---|---:|---:|---:|")
    for what, seconds in waits.items():
        print(f"| {TICK_S} | {what} | {len(seconds)} | {statistics.median(seconds):.2f} | {max(seconds):.2f} |")
    print(f"\nserver CPU while two windows sit idle on the image: {100 * idle_cpu:.1f}% of a core")


if __name__ == "__main__":
    main()
