"""SAM backends on this machine, random weights of the real architectures (no download), one image of 1200x800:

    python bench/bench_sam.py [--backends vit_b,sam2.1-tiny,edgetam,sam3] [--size 1200x800] [--repeats 5]

Per backend, each in its own process (peak memory is the process's): the image embedding (the encoder, what a
first click on a new image waits for), a click on an embedded image (prompt decoder + upscaling to the image),
20 boxes to masks on an embedded image (one decoder call), and the process's peak resident memory. Ratios are
against SAM 1 vit_b measured in the same run. The issue's goals: the CPU default's embedding <= 0.2x vit_b's,
a click <= 100 ms. Run it alone: the machine's other load moves every number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
from timing import median_time, peak_mb  # noqa: E402

DEFAULT_BACKENDS = "vit_b,sam2.1-tiny,sam2.1-small,edgetam"


def build(name: str, folder: Path):
    """A Segmenter of `name`'s full-size architecture with random weights, loaded through the real loaders."""
    import torch

    from gdino.sam.catalog import load_backend
    from gdino.sam.segmenter import Segmenter

    torch.manual_seed(0)
    if name in ("vit_b", "vit_l", "vit_h"):
        from segment_anything import sam_model_registry

        path = folder / f"{name}.pth"
        torch.save(sam_model_registry[name]().state_dict(), path)
    elif name.startswith("sam2.1-"):
        from sam2_models import write_official_pt

        path = write_official_pt(name.removeprefix("sam2.1-"), folder / f"{name}.pt", seed=0)
    elif name == "edgetam":
        from sam2_models import random_edgetam_folder

        path = random_edgetam_folder(folder / name, seed=0)
    elif name == "sam3":  # built in memory: its loaders read the 3.4 GB sam3.pt or facebook/sam3's folder (tested)
        from transformers import Sam3TrackerConfig, Sam3TrackerModel

        from gdino.sam.sam3 import Sam3TrackerBackend

        return Segmenter(Sam3TrackerBackend(Sam3TrackerModel(Sam3TrackerConfig()).eval().requires_grad_(False), name),
                         cache_size=0)
    else:
        raise SystemExit(f"unknown backend {name!r}")
    return Segmenter(load_backend(path, device="cpu"), cache_size=0)


def measure(name: str, size: tuple[int, int], repeats: int) -> dict:
    import torch

    w, h = size
    with tempfile.TemporaryDirectory() as tmp:
        seg = build(name, Path(tmp))
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 0.6, (20, 2)) * [w, h]
    boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.4, (20, 2)) * [w, h]], 1)
    with torch.inference_mode():
        embed = median_time(lambda: seg.embed(image), repeats)  # cache_size 0: every call embeds
        seg._shared.cache_size = 1  # from here on the embedding is kept, as in the app
        seg.embed(image)
        click = median_time(lambda: seg.refine(image, points=[(w / 2, h / 2)], labels=[1]), repeats)
        twenty = median_time(lambda: seg.segment(image, boxes), repeats)
    return {"name": name, "embed": embed, "click": click, "twenty": twenty, "peak_mb": peak_mb(),
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"comma-separated (default {DEFAULT_BACKENDS})")
    parser.add_argument("--size", default="1200x800", help="image WxH")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: measure one backend, print JSON
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.one:
        print(json.dumps(measure(args.one, size, args.repeats)))
        return
    names = [n for n in args.backends.split(",") if n]
    if "vit_b" not in names:
        names.insert(0, "vit_b")
    rows = []
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--size", args.size, "--repeats",
                              str(args.repeats)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["name"] == "vit_b"), None)
    print(f"image {args.size}, CPU, {rows[0]['threads'] if rows else '?'} threads, median of {args.repeats}, "
          "random weights of the real architectures")
    print(f"| {'backend':<16} | {'embedding s':>11} | {'vs vit_b':>8} | {'click ms':>8} | {'20 boxes ms':>11} | "
          f"{'peak MB':>7} |")
    print(f"|{'-' * 18}|{'-' * 13}|{'-' * 10}|{'-' * 10}|{'-' * 13}|{'-' * 9}|")
    for r in rows:
        ratio = f"{r['embed'] / base['embed']:.2f}x" if base else "-"
        print(f"| {r['name']:<16} | {r['embed']:11.2f} | {ratio:>8} | {1000 * r['click']:8.0f} | "
              f"{1000 * r['twenty']:11.0f} | {r['peak_mb']:7.0f} |")


if __name__ == "__main__":
    main()
