"""What every `gdino` command's parser shares: the usage error, description wrapping, the --device check, and
the number flags' types (argparse prints their message after the flag: "--batch-size: must be ...").

A module of its own so that the commands' modules (cli.py, cli_train.py) use one copy without importing
each other. No torch at import.
"""

from __future__ import annotations

import argparse
import math
import textwrap


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
    if not math.isfinite(value):
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
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text}")
    return value


def fraction(text: str) -> float:
    """A flag type: a number from 0 up to, not including, 1."""
    value = number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value
