"""A small command-line demo until the app lands: detect classes (or free text) in one image.

    python demo.py IMAGE --classes "cat, remote control" [--model IDEA-Research/grounding-dino-tiny]
    python demo.py IMAGE --prompt "a cat sitting on a red couch"
"""

from __future__ import annotations

import argparse
import sys

import gdino


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="path to an image")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--classes", help='comma-separated class names, e.g. "cat, remote control"')
    what.add_argument("--prompt", help='free text, e.g. "a cat sitting on a red couch"')
    parser.add_argument("--model", default=gdino.detector.DEFAULT_MODEL,
                        help="hub id, transformers-layout directory or original .pth file")
    parser.add_argument("--text-encoder", default=None, help="BERT directory or hub id (for .pth checkpoints)")
    parser.add_argument("--box-threshold", type=float, default=0.35)
    parser.add_argument("--text-threshold", type=float, default=0.25)
    args = parser.parse_args(argv)

    classes = [c.strip() for c in args.classes.split(",")] if args.classes is not None else None
    try:
        detector = gdino.Detector.from_pretrained(args.model, text_encoder=args.text_encoder)
        dets = detector.detect(args.image, classes, prompt=args.prompt, box_threshold=args.box_threshold,
                               text_threshold=args.text_threshold)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for name, score, box in zip(dets.data["class_name"], dets.confidence, dets.xyxy, strict=True):
        print(f"{name:>20s}  {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]")
    print(f"{len(dets)} detections above {args.box_threshold}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
