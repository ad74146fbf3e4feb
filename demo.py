"""A small command-line demo until the app lands: detect classes in one image and print the boxes.

    python demo.py IMAGE --classes "cat, remote control" [--model IDEA-Research/grounding-dino-tiny]
"""

from __future__ import annotations

import argparse
import sys

import torch

import gdino
from gdino.processing import boxes_to_pixels, preprocess_images, tokenize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="path to an image")
    parser.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat, remote control"')
    parser.add_argument("--model", default="IDEA-Research/grounding-dino-tiny",
                        help="hub id, transformers-layout directory or original .pth file")
    parser.add_argument("--text-encoder", default=None, help="BERT directory or hub id (for .pth checkpoints)")
    parser.add_argument("--box-threshold", type=float, default=0.35)
    args = parser.parse_args(argv)

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if not classes:
        parser.error("--classes needs at least one class name")
    try:
        model = gdino.load_model(args.model, text_encoder=args.text_encoder)
        batch = preprocess_images([args.image])
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    caption = " . ".join(classes) + " ."
    tokens = tokenize(model.tokenizer, caption)
    with torch.inference_mode():
        out = model(batch.pixel_values, pixel_mask=batch.pixel_mask, **tokens)
    # Each class owns the tokens of its phrase; a query's class is the phrase it scores highest on.
    ids = tokens["input_ids"][0].tolist()
    spans, start = [], 1
    for i, tok in enumerate(ids):
        if tok in model.config.special_token_ids and i > 0:
            if i > start:
                spans.append((start, i))
            start = i + 1
    probs = out.logits[0].sigmoid()
    per_class = torch.stack([probs[:, a:b].max(-1).values for a, b in spans[: len(classes)]], -1)
    scores, labels = per_class.max(-1)
    boxes = boxes_to_pixels(out.pred_boxes[0], batch.original_sizes[0])
    keep = (scores > args.box_threshold).nonzero().flatten().tolist()
    for q in sorted(keep, key=lambda q: -scores[q].item()):
        x0, y0, x1, y1 = (round(v, 1) for v in boxes[q].tolist())
        print(f"{classes[labels[q]]:>20s}  {scores[q].item():.3f}  [{x0}, {y0}, {x1}, {y1}]")
    print(f"{len(keep)} detections above {args.box_threshold}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
