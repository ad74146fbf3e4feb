"""The `gdino` command: headless batch labeling, import, export, removal and a project summary.

    gdino label photos/ --classes "cat, remote control" --out myproject
    gdino import dataset.zip --out myproject
    gdino export myproject --format coco --out dataset/
    gdino rm myproject 'blurry_*.jpg'
    gdino info myproject

`label` runs the labeling package's run (the app's pipeline, gdino.labeling.label_images) and is
resumable: images it added before are found again (by source path, kept with each image), images that
are not "unlabeled" any more are skipped. Exit codes: 0 all fine, 1 some image failed (or nothing to export, or a dataset
refused), 2 usage and configuration errors (bad flags, weights that cannot be loaded, no images
matched), 130 interrupted.

One module per command, each `add_parser(commands)` (which sets `run(args)` as the parser's default) and
`run(args) -> exit code`; the namespace stops there. torch is imported only by the commands that run a
model, so `gdino --help`, usage errors, `info`, `import`, `export` and `rm` start in well under a second.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from ..formats.export import ExportError
from ..formats.validate import DatasetError
from ..labeling.inputs import NoImagesError
from ..memory import keep_freed_memory
from ..prompts import PromptError
from ..safezip import UnsafeZipError
from ..store import ProjectError
from . import export, import_results, importing, info, label, models, rm, train
from .args import UsageError, para

COMMANDS = (label, importing, import_results, export, rm, info, models, train)  # in `gdino --help`'s order


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already tells the user what to do: printed as one line, exit code 2. The
    model-side ones are looked up only once their modules are loaded (they import torch)."""
    lazy = [("gdino.weights.hub", "WeightsError"), ("gdino.weights.keymap", "KeyMapError"),
            ("gdino.sam.prompts", "SegmenterError"), ("gdino.train.settings", "TrainingError"),
            ("gdino.labeling.ray_session", "RayEngineError")]
    loaded = tuple(getattr(sys.modules[module], name) for module, name in lazy if module in sys.modules)
    return (UsageError, NoImagesError, ProjectError, PromptError, ExportError, *loaded)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (never raises SystemExit, so tests can call it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or argparse's usage error
        return int(stop.code or 0)
    try:
        keep_freed_memory()  # before any thread allocates: see gdino/memory.py
    except ValueError as err:  # a mistyped GDINO_MALLOC
        print(f"gdino {args.command}: error: {err}", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (DatasetError, UnsafeZipError) as err:  # a dataset refused whole: nothing was added
        print(f"gdino {args.command}: error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"gdino {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gdino info p | head`: the reader left; not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (stays open: Python flushes stdout at exit)
        return 0
    except OSError as err:  # disk full, permission denied: the message names the file
        print(f"gdino {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ngdino {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdino", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Open-set auto-labeling with Grounding DINO (+ SAM masks): label folders of images into a "
                    "project, export it for training, or summarize it."),
        epilog="examples:\n"
               "  gdino label photos/ --classes \"cat, remote control\" --out myproject\n"
               "  gdino import dataset.zip --out myproject\n"
               "  gdino export myproject --format yolo --out dataset/ --val-fraction 0.2\n"
               "  gdino rm myproject 'blurry_*.jpg'\n"
               "  gdino info myproject\n"
               "  gdino train myproject --out models/myproject-v1\n"
               "  gdino models\n\n"
               "Run `gdino COMMAND --help` for a command's options.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)  # each sets its own `run(args)` as the parser's default
    return parser
