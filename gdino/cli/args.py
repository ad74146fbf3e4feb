"""What the `gdino` commands' parsers share: the usage error, description wrapping, the --device check, the
number flags' types (argparse prints their message after the flag: "--batch-size: must be ..."), the split
flags of `label` and `export`, and the --results folder of `label` and `import-results`.

A module of its own so that the commands' modules use one copy without importing each other. No torch at
import.
"""

from __future__ import annotations

import argparse
import textwrap

from .. import checks
from ..sources import SourceError, check_uri, is_uri


class UsageError(ValueError):
    """A flag combination or input the command cannot work with; exit code 2."""


def para(text: str) -> str:
    return textwrap.fill(text, 90)  # descriptions wrap; the raw formatter keeps the epilog's example lines as written


def device_flag(name: str | None):
    """--device as a torch.device (None: not given), checked before anything is loaded; UsageError names the
    flag. Imports torch."""
    import torch

    if not name:
        return None
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def whole(low: int):
    """A flag type: a whole number >= low."""
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return check


positive_int = whole(1)


def number(text: str) -> float:
    """A flag type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not checks.finite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def rate(text: str) -> float:
    """A flag type: a number > 0."""
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonnegative(text: str) -> float:
    """A flag type: a number >= 0."""
    value = number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def unit(text: str) -> float:
    """A flag type: a number between 0 and 1."""
    value = number(text)
    if not checks.in_unit_interval(value):
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text}")
    return value


def fraction(text: str) -> float:
    """A flag type: a number from 0 up to, not including, 1."""
    value = number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def add_split_flags(p: argparse.ArgumentParser) -> None:
    """The train/val split and --reviewed-only of an export (`gdino export`, `gdino label --export`)."""
    p.add_argument("--val-fraction", type=fraction, default=0.0, metavar="F",
                   help="share of images in a 'val' split, by image, fixed by --seed (default: 0, all 'train')")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the train/val split (default: 0)")
    p.add_argument("--reviewed-only", action="store_true", help="export only images marked reviewed")


def results_folder(value: str) -> str:
    """--results / import-results' folder: a local folder, or an object-store URI in its canonical spelling.
    A URI with credentials, or of a scheme gdino does not read, is a usage error that does not repeat it."""
    if is_uri(value):
        try:
            return check_uri(value)
        except SourceError as err:
            raise UsageError(f"--results: {err}") from None
    scheme = value.split("://", 1)[0] if "://" in value else None
    if scheme is not None and scheme.lower() != "file":
        raise UsageError(f"--results: {scheme}:// is not a store gdino writes to; use a local folder or s3://, gs://, ...")
    return value
