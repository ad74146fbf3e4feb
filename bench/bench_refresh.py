"""How soon a second window shows a box drawn in the first (issue 25, item 10): the app on the tiny models, two
Chromium windows on one image; window 2 draws boxes one after another, and for each the time from the box being
stored in the project to window 1 drawing it is printed. Run alone: `python bench/bench_refresh.py [--boxes 10]`."""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from app_harness import browser, fresh_page, running_app  # noqa: E402
from test_editor_refresh_browser import at, photos, ready  # noqa: E402
from tiny_models import make_hf_model, make_tokenizer, save_hf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boxes", type=int, default=10)
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
            waits = []
            for k in range(args.boxes):
                x, y = 10 + 25 * (k % 10), 10 + 100 * (k // 10)
                second.mouse.move(*at(second, x, y))
                second.mouse.down()
                second.mouse.move(*at(second, x + 20, y + 20), steps=4)
                second.mouse.up()
                while len(project.objects(image.id)) < k + 1:
                    second.wait_for_timeout(5)
                stored = time.monotonic()
                ready(first, boxes=k + 1, timeout=60_000)
                waits.append(time.monotonic() - stored)
    print(f"| boxes | median s | max s |\n|---:|---:|---:|\n| {len(waits)} | {statistics.median(waits):.2f} | "
          f"{max(waits):.2f} |")


if __name__ == "__main__":
    main()
