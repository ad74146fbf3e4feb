"""What every `gdino` command's parser shares: the usage error, description wrapping, the --device check.

A module of its own so that the commands' modules (cli.py, cli_train.py) use one copy without importing
each other. No torch at import.
"""

from __future__ import annotations

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
