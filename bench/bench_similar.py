"""Find similar across a project: carried exemplars against the text prompt, on a synthetic set where the text is
ambiguous (one name, two looks).

    python bench/bench_similar.py --model facebook/sam3 [--images 12] [--seed 0]     # or a local SAM 3 copy
    python bench/bench_similar.py --tiny                                            # the plumbing only

The set (generated, seeded): every picture holds "mugs" of two looks on a textured background: look A red
rounded ones with a round handle, look B blue tall square ones with a square handle; both are "mug" to the text
encoder. The person wants look A. Three ways to label the pictures after the first, each scored against look A's
boxes only (COCO AP@0.5 and AP@[.5:.95] by pycocotools, recall at IoU 0.5):
- text: the class name alone ("mug"): it cannot tell the looks apart, so look B counts as false positives;
- exemplars: one look-A box of picture 0 carried as SAM 3 exemplar tokens (`Sam3Detector.exemplar_prompt` ->
  `detect_like`, what the app's Shift+X runs);
- exemplars + negative: the same plus one look-B box of picture 0 as a negative exemplar.
With random weights (--tiny) the numbers mean nothing: it checks the plumbing. The real comparison needs SAM 3's
weights (gated: `hf download facebook/sam3` after accepting the license, then --model that folder).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

SIZE = (480, 640)  # h, w


def picture(rng: np.random.Generator) -> tuple[Image.Image, list, list]:
    """One picture -> (image, look A boxes, look B boxes), boxes xyxy pixels."""
    h, w = SIZE
    noise = rng.integers(90, 170, (h // 8, w // 8, 3), dtype=np.uint8)
    img = Image.fromarray(noise).resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    draw = ImageDraw.Draw(img)
    placed: list = []
    a_boxes, b_boxes = [], []
    for look in ["a"] * int(rng.integers(1, 4)) + ["b"] * int(rng.integers(1, 4)):
        for _ in range(50):
            bw, bh = (int(rng.integers(50, 90)), int(rng.integers(50, 80))) if look == "a" else \
                (int(rng.integers(35, 60)), int(rng.integers(80, 120)))
            x0, y0 = int(rng.integers(5, w - bw - 25)), int(rng.integers(5, h - bh - 5))
            box = [x0, y0, x0 + bw + (20 if look == "a" else 16), y0 + bh]
            if all(box[2] < p[0] or box[0] > p[2] or box[3] < p[1] or box[1] > p[3] for p in placed):
                break
        placed.append(box)
        if look == "a":  # red, rounded body, a handle on the right
            draw.rounded_rectangle([x0, y0, x0 + bw, y0 + bh], radius=bw // 4, fill=(200, 40, 40), outline=(90, 10, 10))
            draw.ellipse([x0 + bw - 6, y0 + bh // 4, x0 + bw + 20, y0 + 3 * bh // 4], outline=(200, 40, 40), width=6)
            a_boxes.append(box)
        else:  # blue, tall, square, a square handle on the right
            draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=(40, 70, 200), outline=(10, 20, 90))
            draw.rectangle([x0 + bw - 4, y0 + bh // 3, x0 + bw + 16, y0 + 2 * bh // 3], outline=(40, 70, 200), width=6)
            b_boxes.append(box)
    return img, a_boxes, b_boxes


def coco_scores(truth: list[list], found: list) -> dict:
    """AP@0.5, AP@[.5:.95] and recall@0.5 of detections (per picture: Detections) against look A's boxes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": i + 1, "height": SIZE[0], "width": SIZE[1]} for i in range(len(truth))]
    anns = [{"id": k + 1, "image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0}
            for k, (i, b) in enumerate((i, b) for i, boxes in enumerate(truth) for b in boxes)]
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "mug"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dets = [{"image_id": i + 1, "category_id": 1, "score": float(s),
                 "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                for i, d in enumerate(found) for b, s in zip(d.xyxy, d.confidence, strict=True)]
        if not dets:
            return {"ap50": 0.0, "ap": 0.0, "recall50": 0.0, "found": 0}
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    recall = ev.eval["recall"][0, 0, 0, -1]  # IoU 0.5, all areas, 100 detections
    return {"ap50": float(ev.stats[1]), "ap": float(ev.stats[0]), "recall50": float(max(recall, 0.0)), "found": len(dets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SAM 3 weights: facebook/sam3 or a local copy")
    parser.add_argument("--tiny", action="store_true", help="a tiny random SAM 3 (the plumbing only)")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.3, help="score threshold of every method")
    args = parser.parse_args()
    if not args.model and not args.tiny:
        parser.error("give --model (SAM 3 weights) or --tiny")
    import gdino

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from sam3_models import save_tiny_sam3

            args.model = str(save_tiny_sam3(Path(tmp) / "tiny", confident=True))
        det = gdino.Detector.from_pretrained(args.model)
        rng = np.random.default_rng(args.seed)
        pictures = [picture(rng) for _ in range(args.images + 1)]
    (src, a0, b0), rest = pictures[0], pictures[1:]
    truth = [a for _, a, _ in rest]
    pixels = [np.asarray(img) for img, _, _ in rest]
    t = args.threshold
    positive = det.exemplar_prompt(np.asarray(src), [a0[0]])
    with_negative = det.exemplar_prompt(np.asarray(src), [a0[0], b0[0]], [True, False])
    rows = {
        "text 'mug'": [det.detect(p, classes=["mug"], box_threshold=t) for p in pixels],
        "1 exemplar (look A)": [det.detect_like(p, positive, class_name="mug", box_threshold=t) for p in pixels],
        "1 exemplar + 1 negative (look B)": [det.detect_like(p, with_negative, class_name="mug", box_threshold=t)
                                             for p in pixels],
    }
    n_a, n_b = sum(len(a) for a in truth), sum(len(b) for _, _, b in rest)
    print(f"{args.images} pictures {SIZE[1]}x{SIZE[0]}, {n_a} look-A mugs (wanted), {n_b} look-B mugs (not), "
          f"threshold {t}, model {'tiny random (numbers meaningless)' if args.tiny else args.model}\n")
    print("| prompt | AP@0.5 (look A) | AP@[.5:.95] | recall@0.5 | detections |")
    print("|---|---|---|---|---|")
    for name, found in rows.items():
        s = coco_scores(truth, found)
        print(f"| {name} | {s['ap50']:.3f} | {s['ap']:.3f} | {s['recall50']:.3f} | {s['found']} |")


if __name__ == "__main__":
    main()
