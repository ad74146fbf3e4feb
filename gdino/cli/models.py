"""`gdino models`: the recommended checkpoints for --model with their published accuracy."""

from __future__ import annotations

import argparse

from ..modeling.config import DEFAULT_MODEL
from .args import para


def add_parser(commands) -> None:
    p = commands.add_parser(
        "models", help="list the recommended checkpoints for --model with their published accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("The checkpoints we recommend for --model, with their published zero-shot box AP on COCO "
                          "val2017 and LVIS minival. Each loads by its hub id (downloaded once into the Hugging Face "
                          "cache) or from a local copy of its folder or its mmdetection .pth file."),
        epilog="example:\n  gdino label photos/ --classes \"cat, dog\" --out myproject "
               "--model openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..weights.checkpoints import table

    print(f"recommended checkpoints (--model), published zero-shot box AP:\n{table()}\n"
          f"default: {DEFAULT_MODEL}")
    return 0
