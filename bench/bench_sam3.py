"""SAM 3 per image on this machine, beside Grounding DINO Swin-T (the app's default), same picture, same classes.

    python bench/bench_sam3.py [--size 800x1200] [--repeats 2] [--device cpu|cuda]

Builds a random full-size SAM 3 image detector (transformers' Sam3Model with its default, published sizes:
840 M parameters) and a random full-size Grounding DINO Swin-T, saves both in the hub layout under /dev/shm
(writing 3.4 GB to this VM's disk costs minutes of kernel time), and times each through `gdino.Detector` in its
own process: a new image with 3 classes (what auto-labeling costs per image), the same image re-prompted (the
image side cached), and for SAM 3 find similar with one exemplar box on a cached image (what pressing x costs
after Detect) and on a new image. Grounding DINO runs in its CPU default ("fast") and "exact".
Random weights: speed is what is measured, not accuracy. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))
from timing import median_time, peak_mb  # noqa: E402

CLASSES = ["cat", "remote control", "dog"]
OTHER = ["car", "person", "couch"]  # words the tests' tiny BERT vocabulary knows too


def child(kind: str, model_dir: str, h: int, w: int, repeats: int, device: str, precision: str) -> dict:
    import numpy as np

    import gdino

    det = gdino.Detector.from_pretrained(model_dir, device=device, precision=precision)
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    out = {}
    with torch.inference_mode():
        out["detect"] = median_time(lambda: (det.clear_cache(), det.detect(image, classes=CLASSES)), repeats)
        det.detect(image, classes=CLASSES)
        out["reprompt"] = median_time(lambda: det.detect(image, classes=OTHER), repeats)
        if kind == "sam3":
            box = [[w * 0.2, h * 0.2, w * 0.4, h * 0.5]]
            out["similar_cached"] = median_time(lambda: det.find_similar(image, box, class_name="cat"), repeats)
            out["similar_new"] = median_time(lambda: (det.clear_cache(), det.find_similar(image, box, class_name="cat")),
                                             repeats)
    out["peak_mb"] = peak_mb()
    return out


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="800x1200", help="HxW of the picture")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    if args.child is not None:
        kind, model_dir, precision = args.child
        print(json.dumps(child(kind, model_dir, h, w, args.repeats, args.device, precision)))
        return

    from sam3_models import perturb_parameters, write_bpe_files
    from tiny_models import make_hf_model, make_tokenizer, save_hf
    from transformers import Sam3Config, Sam3Model

    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    tmp = Path(tempfile.mkdtemp(prefix="bench-sam3-", dir=base))
    try:
        torch.manual_seed(0)
        sam3 = perturb_parameters(Sam3Model(Sam3Config()), seed=0)
        sam3.save_pretrained(tmp / "sam3")
        write_bpe_files(tmp / "sam3")
        del sam3
        gd = str(save_hf(make_hf_model("swin_t", seed=0), make_tokenizer(), tmp / "gdino"))
        rows = []
        for name, kind, model, precision in (("Grounding DINO Swin-T, fast", "gdino", gd, "fast"),
                                             ("Grounding DINO Swin-T, exact", "gdino", gd, "exact"),
                                             ("SAM 3 (840 M)", "sam3", str(tmp / "sam3"), "exact")):
            rows.append((name, run_child(kind, model, precision)))
            print(f"{name}: {json.dumps(rows[-1][1])}", file=sys.stderr, flush=True)  # kept if a later row fails
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown") if os.path.exists("/proc/cpuinfo") else "unknown"
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{cpu}, {torch.get_num_threads()} threads"
    print(f"picture {h}x{w}, classes {CLASSES} (re-prompt {OTHER}), {where}, median of {args.repeats}\n")
    print("| model | new image, 3 classes (s) | re-prompt, image cached (s) | find similar, cached (s) "
          "| find similar, new image (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        similar = [f"{r[k]:.2f}" if k in r else "-" for k in ("similar_cached", "similar_new")]
        print(f"| {name} | {r['detect']:.2f} | {r['reprompt']:.2f} | {similar[0]} | {similar[1]} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
