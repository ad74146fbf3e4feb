"""How fast the driver of `gdino label --engine ray` stores results: one transaction per image (how it
stored them before) vs `Project.batch()` (a transaction per batch, each image a savepoint), on this
machine's disk, synchronous=FULL as the project runs.

    python bench/bench_store.py [--images 2000] [--objects 10] [--batch 256]

The same synthetic result rows (random boxes, `--objects` per image) go into two fresh projects holding the
same images; the table gives rows stored per second. A cluster of GPUs returns tens to hundreds of images
per second: the driver's store rate is the ceiling of the whole run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gdino.labeling.results import make_row, store_row  # noqa: E402
from gdino.store import Project  # noqa: E402


def rows_for(ids: list[int], objects: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for image_id in ids:
        found = []
        for _ in range(objects):
            x0, y0 = rng.uniform(0, 400, 2)
            found.append({"box": [float(x0), float(y0), float(x0 + 50), float(y0 + 40)], "class_name": "cat",
                          "score": float(rng.uniform(0.3, 1)), "mask": None})
        rows.append(make_row(image_id, f"k{image_id}", f"{image_id}.png", objects=found,
                             run={"classes": ["cat"], "box_threshold": 0.3}, size=(640, 480)))
    return rows


def project_with(folder: Path, images: int) -> tuple[Project, list[int]]:
    project = Project.create(folder, ["cat"])
    pixel = np.zeros((480, 640, 3), dtype=np.uint8)
    first = project.add_image(pixel, name="0.png")
    with project.batch():  # the images themselves, quickly: not what is measured
        ids = [first.id] + [project.add_image(first.path, copy=False, name=f"{k}.png", key=f"img{k}").id
                            for k in range(1, images)]
    return project, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dir", default=None, help="where the projects go (default: the temp folder; give a "
                        "folder on the disk the projects will live on: a tmpfs makes every commit free)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="gdino-bench-store-", dir=args.dir) as tmp:
        for name in ("one transaction per image", f"batches of {args.batch}"):
            project, ids = project_with(Path(tmp) / name.replace(" ", "-"), args.images)
            rows = rows_for(ids, args.objects)
            start = time.perf_counter()
            if name.startswith("one"):
                for row in rows:
                    assert store_row(project, row["image_id"], row) == "labeled"
            else:
                for k in range(0, len(rows), args.batch):
                    with project.batch():
                        for row in rows[k:k + args.batch]:
                            assert store_row(project, row["image_id"], row) == "labeled"
            seconds = time.perf_counter() - start
            assert project.stats()["objects"] == args.images * args.objects
            project.close()
            results.append((name, seconds))
    print(f"\n{args.images} images, {args.objects} objects each, in {args.dir or tempfile.gettempdir()}\n")
    print("| driver stores | s | images/s |\n|---|---:|---:|")
    for name, seconds in results:
        print(f"| {name} | {seconds:.2f} | {args.images / seconds:.0f} |")


if __name__ == "__main__":
    main()
