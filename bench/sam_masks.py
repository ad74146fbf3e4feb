"""Cost of SAM masks on one image: 1 box vs 20 boxes (each a full `segment` call, embedding included)
and one refine click (embedding cached). Random weights of the real architecture, no download.

    python bench/sam_masks.py [--model vit_b] [--size 1200x800] [--repeats 3]

Goals: 20 boxes cost at most 1.2x one box; a refine click under 10% of a full segment call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from gdino.sam.segmenter import Segmenter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--size", default="1200x800", help="image WxH")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    seg = Segmenter(sam_model_registry[args.model]().eval(), cache_size=0)  # no cache: every segment embeds
    w, h = (int(v) for v in args.size.split("x"))
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 0.6, (20, 2)) * [w, h]
    boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.4, (20, 2)) * [w, h]], 1)

    with torch.inference_mode():
        one = median_time(lambda: seg.segment(image, boxes[:1]), args.repeats)
        twenty = median_time(lambda: seg.segment(image, boxes), args.repeats)
        seg.cache_size = 4
        seg.segment(image, boxes[:1])  # embedding cached from here on
        click = median_time(lambda: seg.refine(image, points=[(w / 2, h / 2)], labels=[1]), args.repeats)

    print(f"SAM {args.model}, image {w}x{h}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"| {'call':<28} | {'seconds':>8} | {'ratio':>12} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 14}|")
    print(f"| {'segment, 1 box':<28} | {one:8.3f} | {'1.00x':>12} |")
    print(f"| {'segment, 20 boxes':<28} | {twenty:8.3f} | {twenty / one:11.2f}x |")
    print(f"| {'refine click (cached)':<28} | {click:8.3f} | {100 * click / one:10.1f} % |")
    print(f"goal 20 boxes <= 1.2x one box: {'met' if twenty <= 1.2 * one else 'NOT met'}; "
          f"goal click < 10% of segment: {'met' if click < 0.1 * one else 'NOT met'}")


if __name__ == "__main__":
    main()
