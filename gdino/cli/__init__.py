"""The `gdino` command: headless batch labeling, import, export, removal and a project summary.

    gdino label photos/ --classes "cat, remote control" --out myproject
    gdino import dataset.zip --out myproject
    gdino export myproject --format coco --out dataset/
    gdino rm myproject 'blurry_*.jpg'
    gdino info myproject

`label` runs the same pipeline as the app (gdino.labeling.label_images) and is resumable: images it
added before are found again (by source path, kept with each image), images that are not "unlabeled"
any more are skipped. Exit codes: 0 all fine, 1 some image failed (or nothing to export, or a dataset
refused), 2 usage and configuration errors (bad flags, weights that cannot be loaded, no images
matched), 130 interrupted.

torch is imported only by the commands that run a model, so `gdino --help`, usage errors, `info`,
`import`, `export` and `rm` start in well under a second.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .cli_args import UsageError, device_flag, fraction, nonnegative, para, positive_int, unit
from .cli_images import NoImagesError, Prefetcher, find_images
from .cli_train import add_train
from .formats.dataset import split_images
from .formats.export import FORMATS, ExportError, dataset_from_project, export_dataset, export_zip
from .formats.importing import import_path
from .formats.validate import DatasetError, ImportLimits
from .labeling import LabelSettings, label_images, parse_class_text
from .memory import keep_freed_memory
from .modeling.config import DEFAULT_MODEL
from .processing import ImageError
from .project import DB_NAME, STATUSES, ImageRecord, Project, ProjectError
from .project_schema import StoreError
from .prompts import PromptError, parse_classes
from .safezip import UnsafeZipError
from .sources import SourceError, check_uri, is_uri, name_of, read_image, size_of

DTYPES = ("float32", "bfloat16", "float16")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already tells the user what to do: printed as one line, exit code 2. The
    model-side ones are looked up only once their modules are loaded (they import torch)."""
    lazy = [("gdino.weights.hub", "WeightsError"), ("gdino.weights.keymap", "KeyMapError"), ("gdino.segment", "SegmenterError"),
            ("gdino.train.settings", "TrainingError"), ("gdino.ray_session", "RayEngineError")]
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



# -- the parser ---------------------------------------------------------------------------------------


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
    _add_label(commands)
    _add_import(commands)
    _add_import_results(commands)
    _add_export(commands)
    _add_rm(commands)
    _add_info(commands)
    _add_models(commands)
    add_train(commands)
    return parser


def _iou_or_off(text: str) -> float | None:
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        return unit(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an IoU between 0 and 1 nor 'off'") from None


def _add_label(commands) -> None:
    defaults = LabelSettings()
    p = commands.add_parser(
        "label", help="auto-label images into a project", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Add images to a project (created if missing) and auto-label the ones still unlabeled. "
                    "Resumable: a re-run adds only new files and labels only images still unlabeled; files "
                    "that failed before are tried again. Unreadable images are reported and skipped."),
        epilog="examples:\n"
               "  gdino label photos/ --classes \"cat, remote control\" --out myproject\n"
               "  gdino label 'shots/**/*.jpg' --classes \"car: car, automobile; person\" --out cars --sam vit_b\n"
               "  gdino label photos/ --prompt \"a cat on a red couch\" --out proj --export coco --export-dir coco/\n"
               "  gdino label --classes cat --out myproject     # label the images already in the project\n"
               "  gdino label photos/ --classes cat --out myproject --engine ray --actors 2   # on Ray (gdino[ray])\n\n"
               "exit codes: 0 all fine, 1 some images failed, 2 usage or model errors, 130 interrupted "
               "(run it again to resume)")
    p.add_argument("images", nargs="*", metavar="IMAGES",
                   help="image files, folders (searched recursively), glob patterns (quote them: 'a/**/*.png') or "
                        "object-store URIs (s3://bucket/photos/: referenced, not copied; credentials from the "
                        "environment); none: label the project's unlabeled images")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--classes", help="class names as in the app: \"cat, remote control\", or with synonyms "
                                        "\"car: car, automobile; person\"")
    what.add_argument("--prompt", help="free text instead of classes; the phrases found become classes")
    p.add_argument("--out", required=True, metavar="PROJECT_DIR", help="the project directory (created if missing)")
    p.add_argument("--sam", default="none", metavar="vit_b|vit_l|vit_h|PATH|none",
                   help="also segment each box with SAM (default: none, boxes only)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"hub id, local directory or .pth file (default: {DEFAULT_MODEL}); `gdino models` lists the "
                        "recommended checkpoints with their published accuracy")
    p.add_argument("--text-encoder", metavar="BERT", help="BERT directory or hub id for original .pth checkpoints")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="float16 is CUDA only (default: float32)")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="images per model call (default: 1)")
    p.add_argument("--box-threshold", type=unit, default=defaults.box_threshold, metavar="T",
                   help=f"keep boxes scoring above this (default: {defaults.box_threshold})")
    p.add_argument("--text-threshold", type=unit, default=defaults.text_threshold, metavar="T",
                   help=f"--prompt only: words scoring above this join a phrase (default: {defaults.text_threshold})")
    p.add_argument("--nms-iou", type=_iou_or_off, default=defaults.nms_iou, metavar="IOU|off",
                   help=f"merge boxes of one class that overlap more than this (default: {defaults.nms_iou})")
    p.add_argument("--cross-class-nms-iou", type=_iou_or_off, default=defaults.agnostic_nms_iou, metavar="IOU|off",
                   help="also merge boxes of different classes that overlap more than this, keeping the higher "
                        "score, for near classes such as car / truck (default: off)")
    p.add_argument("--copy", action=argparse.BooleanOptionalAction, default=True,
                   help="copy images into the project (default), or --no-copy to reference them where they are")
    p.add_argument("--add-removed", action="store_true",
                   help="also add back files whose images were removed from the project (gdino rm, the app); "
                        "by default a re-run leaves them out")
    p.add_argument("--export", choices=FORMATS, help="after labeling, export the project in this format")
    p.add_argument("--export-dir", metavar="DIR", help="where --export writes")
    p.add_argument("--overwrite", action="store_true", help="let --export replace a non-empty --export-dir whole")
    _add_split_flags(p)
    _add_ray_flags(p)
    p.set_defaults(run=cmd_label)


def _add_ray_flags(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group("on Ray (pip install \"gdino[ray]\")", "detection on a Ray actor pool, locally or on a "
                               "cluster; this process stays the only writer of the project")
    ray.add_argument("--engine", choices=("plain", "ray"), default="plain",
                     help="plain: in this process (default); ray: on Ray Data actors")
    ray.add_argument("--address", metavar="auto|ray://HOST:10001",
                     help="join this Ray cluster (default: start a private local Ray for the run)")
    ray.add_argument("--actors", type=positive_int, metavar="N", help="model copies, each loaded once (default: 1)")
    ray.add_argument("--cpus-per-actor", type=nonnegative, metavar="C",
                     help="CPUs (and torch threads) per actor (default: this machine's CPUs shared by the actors; "
                          "1 on a cluster)")
    ray.add_argument("--gpus-per-actor", type=nonnegative, metavar="G", help="GPUs per actor, e.g. 1 or 0.5 (default: 0)")
    ray.add_argument("--results", metavar="DIR|URI",
                     help="the actors write results as Parquet shards here instead of into the project; "
                          "then `gdino import-results DIR --into PROJECT`. A re-run skips the images DIR holds")
    ray.add_argument("--verbose", action="store_true", help="show Ray's own progress bars and logs")


_RAY_FLAGS = ("address", "actors", "cpus_per_actor", "gpus_per_actor", "results")


def _add_split_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-fraction", type=fraction, default=0.0, metavar="F",
                   help="share of images in a 'val' split, by image, fixed by --seed (default: 0, all 'train')")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the train/val split (default: 0)")
    p.add_argument("--reviewed-only", action="store_true", help="export only images marked reviewed")


def _add_import_results(commands) -> None:
    p = commands.add_parser(
        "import-results", help="store the results that `gdino label --engine ray --results DIR` wrote",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Read a folder of result shards (Parquet, local or a URI) shard by shard and store each "
                          "image's objects in a project (created if missing), the way `gdino label` stores them. "
                          "Images the project lacks are added from their source file. Images already labeled are "
                          "left as they are, so importing twice adds nothing. A damaged shard is reported and the "
                          "others are imported."),
        epilog="example:\n  gdino import-results results/ --into myproject\n\n"
               "exit codes: 0 all imported, 1 some images failed or a shard could not be read, 2 usage errors")
    p.add_argument("results", metavar="DIR", help="the folder (or URI) --results wrote")
    p.add_argument("--into", required=True, metavar="PROJECT_DIR", help="the project directory (created if missing)")
    p.add_argument("--copy", action=argparse.BooleanOptionalAction, default=True,
                   help="copy images the project lacks into it (default), or --no-copy to reference them")
    p.set_defaults(run=cmd_import_results)


def _add_export(commands) -> None:
    p = commands.add_parser(
        "export", help="export a project as COCO, YOLO, YOLO-seg or Pascal VOC",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Write a project's labels and images (upright) in a training format. Skipped images are "
                    "never exported; unlabeled and auto-labeled ones are, unless --reviewed-only."),
        epilog="examples:\n"
               "  gdino export myproject --format coco --out coco/\n"
               "  gdino export myproject --format yolo-seg --out yolo/ --val-fraction 0.2 --reviewed-only\n"
               "  gdino export myproject --format voc --out voc.zip --zip")
    p.add_argument("project", metavar="PROJECT", help="the project directory")
    p.add_argument("--format", required=True, choices=FORMATS, help="the dataset format")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (with --zip: the zip file)")
    p.add_argument("--zip", action="store_true", help="write one .zip file instead of a folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty --out whole (without it, such a target is refused)")
    _add_split_flags(p)
    p.set_defaults(run=cmd_export)


def _add_import(commands) -> None:
    limits = ImportLimits()
    p = commands.add_parser(
        "import", help="import a labeled dataset (COCO, YOLO, zip) or images into a project",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Add a dataset to a project (created if missing) to continue labeling it: a zip, a COCO "
                    ".json (its images next to it or in images/), or a folder holding a COCO file, a YOLO data.yaml "
                    "or plain images. Each source is checked whole first and added all at once: one that has any "
                    "problem is refused with the list of problems, and nothing of it is added. Imported labels "
                    "count as reviewed (as auto when they carry scores)."),
        epilog="examples:\n"
               "  gdino import coco_export.zip --out myproject\n"
               "  gdino import dataset/annotations/instances_train.json --out myproject\n"
               "  gdino import yolo_dataset/ --out myproject\n\n"
               "exit codes: 0 all imported, 1 a source was refused (the others are imported), 2 usage errors")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="zip files, COCO .json files or dataset folders")
    p.add_argument("--out", required=True, metavar="PROJECT_DIR", help="the project directory (created if missing)")
    p.add_argument("--max-objects", type=positive_int, default=limits.max_objects, metavar="N",
                   help=f"refuse a source with more objects than this (default: {limits.max_objects})")
    p.add_argument("--max-images", type=positive_int, default=limits.max_images, metavar="N",
                   help=f"refuse a source with more images than this (default: {limits.max_images})")
    p.set_defaults(run=cmd_import)


def _add_rm(commands) -> None:
    p = commands.add_parser(
        "rm", help="remove images (with their labels) from a project",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Remove images and their labels from a project, by name (shell-style patterns, any case) "
                    "and/or by status, in one step: all of them or none. Copies inside the project are deleted; "
                    "files referenced where they lie (--no-copy) are left alone."),
        epilog="examples:\n"
               "  gdino rm myproject cat_001.jpg cat_002.jpg\n"
               "  gdino rm myproject 'blurry_*'\n"
               "  gdino rm myproject --status skipped")
    p.add_argument("project", metavar="PROJECT", help="the project directory")
    p.add_argument("names", nargs="*", metavar="IMAGE", help="image names or patterns ('*.png'), as `gdino info "
                                                             "--images` lists them")
    p.add_argument("--status", choices=STATUSES, help="only images with this status (alone: all of them)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(run=cmd_rm)


def _add_info(commands) -> None:
    p = commands.add_parser(
        "info", help="count a project's images per status and objects per class",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Summarize a project: images per status (unlabeled, auto, reviewed, skipped) and objects "
                    "per class."),
        epilog="examples:\n  gdino info myproject\n  gdino info myproject --json | jq .status")
    p.add_argument("project", metavar="PROJECT", help="the project directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--images", action="store_true", help="also list every image: name, status, objects")
    p.set_defaults(run=cmd_info)


def _add_models(commands) -> None:
    p = commands.add_parser(
        "models", help="list the recommended checkpoints for --model with their published accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("The checkpoints we recommend for --model, with their published zero-shot box AP on COCO "
                          "val2017 and LVIS minival. Each loads by its hub id (downloaded once into the Hugging Face "
                          "cache) or from a local copy of its folder or its mmdetection .pth file."),
        epilog="example:\n  gdino label photos/ --classes \"cat, dog\" --out myproject "
               "--model openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det")
    p.set_defaults(run=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from .weights.checkpoints import table

    print(f"recommended checkpoints (--model), published zero-shot box AP:\n{table()}\n"
          f"default: {DEFAULT_MODEL}")
    return 0


# -- label --------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """The images a run works on, in input order: files to add, and images already in the project."""

    todo: list[Path | str | ImageRecord] = field(default_factory=list)  # to add (Path, or a URI: str) or to label
    done: int = 0  # inputs already in the project and no longer unlabeled: skipped
    sources: dict[int, str] = field(default_factory=dict)  # image id -> the input it was found by (todo records)
    removed: int = 0  # inputs whose image a person removed from the project: left out


@dataclass
class _Run:
    added: int = 0
    added_elsewhere: int = 0  # files another run (or the app) added while this one went on: not counted as added
    labeled: int = 0
    objects: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    label_ids: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # image id -> its name, for the report
    uris: list[str] = field(default_factory=list)  # --engine ray: object-store images, added when their result comes
    keys: dict[int, str] = field(default_factory=dict)  # image id -> its source (the input file), where known
    kept: int = 0  # images a person marked (skipped, reviewed) while the run went on: left as they were
    labeled_elsewhere: int = 0  # images another run labeled first while this one went on
    gone: list[str] = field(default_factory=list)  # images removed from the project (gdino rm, the app) meanwhile
    seconds: float = 0.0  # labeling only
    first_result: float | None = None  # --engine ray: seconds to the first result (Ray's and the actors' start)
    aborted: str | None = None  # --engine ray: why the Ray job failed before the end


def cmd_label(args: argparse.Namespace) -> int:
    settings = _settings(args)  # the classes are checked before anything is loaded or written
    if args.export and not args.export_dir:
        raise UsageError("--export needs --export-dir DIR")
    _check_engine(args)
    out = Path(args.out).expanduser().resolve()
    sources = find_images(args.images, exclude=out)
    project = Project.open(out) if (out / DB_NAME).is_file() else None
    if not args.images and project is None:
        raise UsageError(f"{out} is not a project yet: name the images to label (files, folders or glob patterns)")
    try:
        plan = _plan(project, sources, add_removed=args.add_removed)
        if plan.removed:
            print(f"left out {plan.removed} file(s) removed from the project earlier (gdino rm or the app); "
                  "--add-removed adds them again")
        if not plan.todo:
            print(f"nothing to do: no unlabeled images; {plan.done} image(s) already labeled or skipped in {out}")
            return _export_after(project, args) if args.export else 0
        detector, segmenter = _load_models(args)  # with Ray too: a bad --model or --sam is exit code 2, before any write
        _check_prompt(detector, settings)  # words the model's tokenizer does not know: before any file is copied
        if args.engine == "ray":
            del detector, segmenter  # the actors load their own
        if project is None:
            project = Project.create(out, exist_ok=True)
        run = _Run()
        try:
            _add(project, plan, args.copy, run, defer_uris=args.engine == "ray")
            if args.engine == "ray":
                _label_on_ray(project, settings, args, run)
            else:
                _label(project, detector, segmenter, settings, args.batch_size, run)
        except KeyboardInterrupt:
            unlabeled = {r.id for r in project.images(status="unlabeled")}
            done = sum(1 for image_id in run.label_ids if image_id not in unlabeled)
            print(f"\ngdino label: interrupted after adding {run.added} and labeling {done} image(s); every image "
                  "is stored whole. Run the same command again to resume.", file=sys.stderr)
            return 130
        _print_summary(run, plan.done, project.path, args.results)
        code = 1 if run.failed or run.aborted else 0
        if args.export:
            code = max(code, _export_after(project, args))
        return code
    finally:
        if project is not None:
            project.close()


def _settings(args: argparse.Namespace) -> LabelSettings:
    classes = None
    if args.classes is not None:
        try:
            classes = parse_class_text(args.classes)
            parse_classes(classes)  # duplicates, names without words
        except PromptError as err:
            raise UsageError(f"--classes: {err}") from None
    if args.prompt is not None and not args.prompt.strip():
        raise UsageError("--prompt is empty: give the text to look for, e.g. --prompt \"a cat on a couch\"")
    return LabelSettings(classes=classes, prompt=args.prompt, box_threshold=args.box_threshold,
                         text_threshold=args.text_threshold, nms_iou=args.nms_iou,
                         agnostic_nms_iou=args.cross_class_nms_iou, masks=args.sam.lower() != "none")


def _plan(project: Project | None, sources: list[Path], *, add_removed: bool = False) -> _Plan:
    """Match each source file to the image it became in an earlier run: through the source recorded in
    the project (copies), or the image's own path (--no-copy, or a file inside the project)."""
    plan = _Plan()
    if project is None:
        plan.todo = list(sources)
        return plan
    records = {r.id: r for r in project.images(order="added")}
    if not sources:  # no inputs: the project's own unlabeled images
        plan.todo = [r for r in records.values() if r.status == "unlabeled"]
        plan.done = len(records) - len(plan.todo)
        return plan
    by_path = {r.path: r for r in records.values()}
    removed = set() if add_removed else project.removed_keys(map(str, sources))
    seen: set[int] = set()
    for source in sources:
        record = project.image_by_key(str(source)) or by_path.get(source)
        if record is None and str(source) in removed:
            plan.removed += 1
        elif record is None:
            plan.todo.append(source)
        elif record.id not in seen:
            seen.add(record.id)
            if record.status == "unlabeled":
                plan.todo.append(record)
                plan.sources[record.id] = str(source)
            else:
                plan.done += 1
    return plan


def _load_models(args: argparse.Namespace):
    """(Detector, Segmenter or None), as the flags ask; torch is imported here, not before."""
    import torch

    from .detector import Detector
    from .ops import describe
    from .segment import Segmenter

    device = device_flag(args.device)
    dtype = getattr(torch, args.dtype)
    if dtype == torch.float16 and (device or torch.device("cuda" if torch.cuda.is_available() else "cpu")).type != "cuda":
        raise UsageError("--dtype float16 is for CUDA only; use --dtype bfloat16 on CPU")
    try:  # every ValueError here is about the files named by --model / --text-encoder / --sam
        print(f"loading {args.model} ...", file=sys.stderr)
        detector = Detector.from_pretrained(args.model, text_encoder=args.text_encoder, device=device, dtype=dtype)
        segmenter = None
        if args.sam.lower() != "none":
            print(f"loading SAM {args.sam} ...", file=sys.stderr)
            segmenter = Segmenter.from_pretrained(args.sam, device=device)
    except ValueError as err:
        raise UsageError(str(err)) from err
    weight = next(detector.model.parameters())
    print(f"deformable attention: {describe(weight.device, weight.dtype, build=True)}", file=sys.stderr)
    return detector, segmenter


def _check_prompt(detector, settings: LabelSettings) -> None:
    """The classes or prompt against the loaded model's tokenizer (unknown words, too long)."""
    try:
        detector.check_prompt(settings.classes, prompt=settings.prompt)
    except PromptError as err:
        raise UsageError(f"{'--classes' if settings.prompt is None else '--prompt'}: {err}") from None


def _add(project: Project, plan: _Plan, copy: bool, run: _Run, *, defer_uris: bool = False) -> None:
    """Add the new files (a bad one is reported and left out: the next run tries it again) and list the
    ids to label, in input order. Object-store URIs are referenced, never copied: measured here (fetched
    once), or with defer_uris (Ray) listed in run.uris, to be added by the driver when the actor that
    read them sends their result."""
    new = sum(isinstance(item, (Path, str)) for item in plan.todo)
    with tqdm(total=new, desc="adding", unit="img", file=sys.stderr, disable=None if new else True) as bar:
        for item in plan.todo:
            if isinstance(item, ImageRecord):
                run.label_ids.append(item.id)
                run.names[item.id] = item.name
                if item.id in plan.sources:
                    run.keys[item.id] = plan.sources[item.id]
                continue
            if isinstance(item, str) and defer_uris:
                run.uris.append(item)
                bar.update()
                continue
            try:
                record = project.image_by_key(str(item))  # another run added it since this one planned
                if record is None:
                    size = size_of(item) if isinstance(item, str) else None  # fetched (and decoded) outside the deferral
                    with _sigint_deferred():  # the image and the note of its source: one transaction, both or neither
                        if size is not None:
                            record = project.add_reference(item, *size, key=item)
                        else:
                            record = project.add_image(item, copy=copy, key=str(item))
                    run.added += not record.existed  # else another run added it while this one decoded it
                    run.added_elsewhere += record.existed
                else:
                    run.added_elsewhere += 1
            except StoreError:  # the project failed (busy, disk full): the run stops
                raise
            except (ImageError, OSError, ProjectError) as err:  # this file (a name, a size the store refuses)
                _fail(run, bar, _display(item), err)
            else:
                run.label_ids.append(record.id)
                run.names[record.id] = record.name
                run.keys[record.id] = str(item)
            bar.update()


def _label(project: Project, detector, segmenter, settings: LabelSettings, batch_size: int, run: _Run) -> None:
    records = {r.id: r for r in project.images(order="added")}
    run.gone = [run.names[image_id] for image_id in run.label_ids if image_id not in records]  # removed already
    run.label_ids = [image_id for image_id in run.label_ids if image_id in records]
    items = [(image_id, records[image_id].location) for image_id in run.label_ids]
    start = time.perf_counter()
    with (tqdm(total=len(items), desc="labeling", unit="img", file=sys.stderr, disable=None) as bar,
          Prefetcher(items, depth=2 * batch_size + 2, decode=read_image) as prefetch):

        def read(image_id: int):
            try:
                return prefetch(image_id)
            except (ImageError, OSError) as err:  # reported now; label_images records it and goes on
                if not project.has_image(image_id):  # removed meanwhile (gdino rm): not a failure of the file
                    raise ProjectError(f"image {image_id} was removed from the project") from None
                _fail(run, bar, records[image_id].name, err)
                raise

        summary = label_images(project, detector, run.label_ids, settings, segmenter=segmenter, batch_size=batch_size,
                               progress=lambda done, _total: bar.update(done - bar.n), images=read,
                               if_status=("unlabeled",))  # a person's decision made meanwhile is kept
    run.seconds = time.perf_counter() - start
    run.labeled, run.objects = len(summary.labeled), summary.objects
    for image_id in summary.kept:  # not unlabeled any more: another run labeled it, or a person decided
        if _status(project, image_id) == "auto":
            run.labeled_elsewhere += 1
        else:
            run.kept += 1
    run.gone += [records[image_id].name for image_id in summary.gone]
    reported = {name for name, _ in run.failed}
    for image_id, why in summary.failed.items():  # failures inside the model call were not seen by `read`
        if not project.has_image(image_id):
            run.gone.append(records[image_id].name)
        elif records[image_id].name not in reported:
            run.failed.append((records[image_id].name, why))


def _status(project: Project, image_id: int) -> str | None:
    try:
        return project.image(image_id).status
    except ProjectError:  # removed meanwhile
        return None


def _results_folder(value: str) -> str:
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


def _check_engine(args: argparse.Namespace) -> None:
    if args.results is not None:
        args.results = _results_folder(args.results)
    given = [f"--{name.replace('_', '-')}" for name in _RAY_FLAGS if getattr(args, name) is not None]
    if args.engine != "ray" and given:
        raise UsageError(f"{', '.join(given)} only apply with --engine ray")
    if args.results is not None and args.export:
        raise UsageError(f"--export with --results: the labels stay in {args.results} until `gdino import-results`; "
                         "export after importing them")
    if args.engine == "ray" and args.device is not None and args.device.startswith("cuda") and not args.gpus_per_actor:
        raise UsageError(f"--device {args.device} with --engine ray needs --gpus-per-actor (a GPU for each actor)")


STORE_EVERY_S = 1.0  # --engine ray: the driver stores the results that came in, one transaction, at least this often
STORE_AT_MOST = 256  # ... or once this many are waiting


def _label_on_ray(project: Project, settings: LabelSettings, args: argparse.Namespace, run: _Run) -> None:
    """Detection on Ray actors; this process stores the results as they stream back, a batch per
    transaction (`Project.batch`; each image still whole, only while it is still unlabeled, as the plain
    engine stores it: `results.store_row`), or with --results leaves them in the shards the actors wrote.
    Object-store images (run.uris) are added to the project by their URI with their result."""
    from .ray_engine import NEW_IMAGE, ModelSpec, RayOptions, RayRunError, Task, label_on_ray
    from .results import done_keys, store_row

    records = {r.id: r for r in project.images(order="added")}
    run.gone = [run.names[image_id] for image_id in run.label_ids if image_id not in records]  # removed already
    run.label_ids = [image_id for image_id in run.label_ids if image_id in records]
    tasks = [Task(i, run.keys.get(i, str(records[i].location)), records[i].name, str(records[i].location))
             for i in run.label_ids]
    tasks += [Task(NEW_IMAGE, uri, name_of(uri), uri) for uri in run.uris]
    if args.results is not None:  # resume: what the folder holds is done
        done = done_keys(args.results)
        run.kept = sum(task.key in done for task in tasks)
        tasks = [task for task in tasks if task.key not in done]
    elif settings.classes is not None:
        project.add_classes(settings.labels())  # as label_images does: the listed classes are the dataset's
    spec = ModelSpec(args.model, args.text_encoder, args.device, args.dtype, None if args.sam.lower() == "none" else args.sam)
    options = RayOptions(address=args.address, actors=args.actors or 1, cpus_per_actor=args.cpus_per_actor,
                         gpus_per_actor=args.gpus_per_actor or 0.0, batch_size=args.batch_size, results=args.results,
                         verbose=args.verbose)
    start = time.perf_counter()
    waiting: list[dict] = []
    stored_at = [time.monotonic()]

    def store_waiting() -> None:
        if not waiting:
            return
        with _sigint_deferred(), project.batch():
            for row in waiting:
                try:
                    outcome = store_row(project, int(row["image_id"]), row)
                except StoreError:  # the project failed (disk full): the batch is lost, the run stops
                    raise
                except ProjectError as err:  # this row's own content (a box outside its image): listed, not stored
                    run.failed.append((row["name"], str(err)))
                    continue
                if outcome == "labeled":
                    run.labeled += 1
                    run.objects += len(json.loads(row["objects"]))
                    run.added += int(row["image_id"]) == NEW_IMAGE
                elif outcome == "kept" and _status(project, int(row["image_id"])) == "auto":
                    run.labeled_elsewhere += 1
                elif outcome == "kept":
                    run.kept += 1
                elif outcome == "gone":
                    run.gone.append(row["name"])
        waiting.clear()
        stored_at[0] = time.monotonic()

    with tqdm(total=len(tasks), desc="labeling on ray", unit="img", file=sys.stderr, disable=None) as bar:

        def on_row(row: dict) -> None:
            if run.first_result is None:
                run.first_result = time.perf_counter() - start
            if row["error"]:
                _fail(run, bar, row["name"], row["error"])
            elif args.results is not None:
                run.labeled += 1
            else:
                waiting.append(row)
                if len(waiting) >= STORE_AT_MOST or time.monotonic() - stored_at[0] >= STORE_EVERY_S:
                    store_waiting()
            bar.update()
            bar.set_postfix(failed=len(run.failed), refresh=False)

        try:
            label_on_ray(tasks, spec, settings.to_run(), options, on_row)
        except RayRunError as err:
            run.aborted = str(err)
        finally:
            store_waiting()  # what came in before an error or Ctrl-C is kept
    run.seconds = time.perf_counter() - start


def _fail(run: _Run, bar: tqdm, name: str, err: Exception) -> None:
    run.failed.append((name, str(err)))
    bar.write(f"gdino label: skipping {name}: {err}", file=sys.stderr)


def _display(path: Path | str) -> str:
    if isinstance(path, str):  # a URI
        return path
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block is done (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[object] = []
    previous = signal.signal(signal.SIGINT, lambda *sig: caught.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _print_summary(run: _Run, skipped: int, project_dir: Path, results: str | None = None) -> None:
    if results is not None:
        print(f"labeled {run.labeled} image(s) in {run.seconds:.1f} s, {run.labeled / max(run.seconds, 1e-9):.2f} images/s, "
              f"into {results}; {run.kept} were there already (store them: gdino import-results {results} --into "
              f"{project_dir})")
    elif run.labeled:
        print(f"labeled {run.labeled} image(s), {run.objects} object(s) in {run.seconds:.1f} s, "
              f"{run.labeled / max(run.seconds, 1e-9):.2f} images/s")
    else:
        print("labeled 0 image(s)")
    if run.aborted is not None:
        print(f"the Ray run failed before the end: {run.aborted}\nthe results stored so far are kept; run the same "
              "command again to resume (--verbose shows Ray's logs)")
    if run.first_result is not None:
        print(f"the first result came {run.first_result:.1f} s after the start (Ray and the actors starting, the first "
              "batch)")
    print(f"added {run.added} new image(s); skipped {skipped} already labeled")
    if run.added_elsewhere:
        print(f"{run.added_elsewhere} file(s) were added by another run meanwhile (each is in the project once)")
    if run.labeled_elsewhere:
        print(f"left {run.labeled_elsewhere} image(s) as they were: another run labeled them first")
    if run.kept:
        print(f"left {run.kept} image(s) as they were: someone marked them skipped or reviewed during the run")
    if run.gone:
        print(f"not labeled {len(run.gone)} image(s) removed from the project during the run: "
              f"{', '.join(run.gone[:5])}{' ...' if len(run.gone) > 5 else ''}")
    if run.failed:
        print(f"failed {len(run.failed)} image(s) (fix or remove them; a re-run tries them again):")
        for name, why in run.failed:
            print(f"  {name}: {why}")
    print(f"project: {project_dir}  (gdino info {project_dir})")


# -- export -------------------------------------------------------------------------------------------


def _export_after(project: Project, args: argparse.Namespace) -> int:
    return _export(project, args.export, Path(args.export_dir), reviewed_only=args.reviewed_only,
                   val_fraction=args.val_fraction, seed=args.seed, as_zip=False, overwrite=args.overwrite,
                   flag="--export-dir")


def cmd_export(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        return _export(project, args.format, Path(args.out), reviewed_only=args.reviewed_only,
                       val_fraction=args.val_fraction, seed=args.seed, as_zip=args.zip, overwrite=args.overwrite)


def _export(project: Project, fmt: str, out: Path, *, reviewed_only: bool, val_fraction: float, seed: int,
            as_zip: bool, overwrite: bool, flag: str = "--out") -> int:
    """Exit code 0, or 1 when there was nothing to export or some images could not be exported (left out)."""
    phrases: dict[str, int] = {}
    by_status: dict[str, list[str]] = {}
    dataset = dataset_from_project(project, reviewed_only=reviewed_only, left_out=phrases, not_exported=by_status)
    if not dataset.images:
        which = "reviewed images (--reviewed-only)" if reviewed_only else "images that are not skipped"
        print(f"gdino export: nothing to export: {project.path} has no {which}", file=sys.stderr)
        return 1
    out = out.expanduser()
    if as_zip and out.suffix.lower() != ".zip":
        out = out.with_name(out.name + ".zip")
    skipped: list[tuple[str, str]] = []
    inexact: list[tuple[str, int | None, float]] = []
    try:
        with tqdm(total=len(dataset.images), desc="exporting", unit="img", file=sys.stderr, disable=None) as bar:
            options = {"val_fraction": val_fraction, "seed": seed, "overwrite": overwrite, "skipped": skipped,
                       "progress": lambda done, _total: bar.update(done - bar.n), "keep": [project.path],
                       "inexact": inexact}
            written = (export_zip if as_zip else export_dataset)(dataset, out, fmt, **options)
    except ExportError as err:
        hint = f"choose another {flag}" + (", or pass --overwrite to replace it whole" if err.overwritable else "")
        raise UsageError(f"{flag} {out}: {err.reason}; {hint}") from None
    left_out = {name for name, _ in skipped}
    exported = [image for image in dataset.images if image.file_name not in left_out]
    splits = split_images(dataset.images, val_fraction, seed)
    counts = ", ".join(f"{name} {sum(im.file_name not in left_out for im in images)}" for name, images in splits.items())
    objects = sum(len(image.objects) for image in exported)
    print(f"exported {len(exported)} image(s) ({counts}), {objects} object(s) as {fmt} to {written}")
    if by_status.get("skipped"):
        print(f"left out {len(by_status['skipped'])} image(s) marked skipped (skipped images are never exported; "
              "mark one reviewed in the app to include it)", file=sys.stderr)
    if inexact:  # yolo-seg: one polygon per object
        worst = ", ".join(f"{name} object {i} (IoU {iou:.2f})" for name, i, iou in sorted(inexact, key=lambda t: t[2])[:3])
        print(f"YOLO keeps one polygon per object: {len(inexact)} mask(s) too detailed for one polygon come back "
              f"approximate (worst: {worst}); export coco for exact masks", file=sys.stderr)
    if phrases:  # the app's free-text prompts: labels that are no category until someone maps them
        listed = ", ".join(f"{phrase!r} ({n})" for phrase, n in phrases.items())
        print(f"left out {sum(phrases.values())} object(s) labeled with free-text phrases not mapped to a class: "
              f"{listed}; map them to classes in the app (Free text: map a found phrase) to export them", file=sys.stderr)
    if skipped:
        print(f"left out {len(skipped)} image(s) that could not be exported (fix or remove them: gdino rm):")
        for name, why in skipped:
            print(f"  {name}: {why}")
        return 1
    return 0


# -- import -------------------------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser().resolve()
    sources = [Path(s).expanduser() for s in args.sources]
    for source in sources:
        if not source.exists():
            raise UsageError(f"{source}: no such file or folder")
    limits = ImportLimits(max_objects=args.max_objects, max_images=args.max_images)
    code = 0
    with Project.create(out, exist_ok=True) as project:
        for source in sources:
            try:
                # all or nothing even on Ctrl-C: the check writes nothing and the adding is one transaction
                report = import_path(project, source, limits, keyed=True)  # again: adds only what is new
            except (DatasetError, UnsafeZipError) as err:
                print(f"gdino import: {source}: refused, nothing of it was added: {err}", file=sys.stderr)
                code = 1
                continue
            print(f"imported {report.images} image(s), {report.objects} object(s) from {source}")
            for note in report.problems:
                print(f"  note: {note}")
        print(f"project: {project.path}  (gdino info {project.path})")
    return code


def _import_row(project: Project, row: dict, by_path: dict, counts: dict, failed: dict, classes_added: set) -> None:
    """One result row into the project; its image is in it already (`_add_missing`), or is an object-store
    image, added by its URI with the size the actor read. A damaged row is listed as failed."""
    from .results import NEW_IMAGE, store_row

    if row["error"]:
        failed.setdefault(row["key"], (row["name"], row["error"]))
        return
    if is_uri(row["key"]):  # as add_reference stores it: one spelling per object
        try:
            row = {**row, "key": check_uri(row["key"])}
        except SourceError as err:
            failed[row["key"]] = (row["name"], str(err))
            return
    record = project.image_by_key(row["key"]) or by_path.get(row["key"])
    if record is None and not is_uri(row["key"]):
        return  # its file could not be added: listed by _add_missing
    try:
        if row["run"] not in classes_added:  # as `gdino label`: a run's classes are the dataset's
            project.add_classes(LabelSettings.from_run(json.loads(row["run"])).labels())
            classes_added.add(row["run"])
        counts[store_row(project, record.id if record is not None else NEW_IMAGE, row)] += 1
    except StoreError:  # the project failed (busy, disk full): the import stops, this shard's batch is not stored
        raise
    except ProjectError as err:  # the project refuses the row's content (a size, a mask): its own words say why
        failed[row["key"]] = (row["name"], f"a damaged result row: {err}")
        return
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # json, a run or objects of the wrong shape
        failed[row["key"]] = (row["name"], f"a damaged result row ({type(err).__name__}: {err})")
        return
    failed.pop(row["key"], None)


def _add_missing(project: Project, rows: list[dict], copy: bool, by_path: dict, failed: dict) -> None:
    """The local files of a shard's rows that the project lacks, added as `gdino label` adds them, each in
    its own transaction, before the shard's batch (a batch does not take back files it placed)."""
    for row in rows:
        key = row["key"]
        if row["error"] or is_uri(key) or project.image_by_key(key) or by_path.get(key):
            continue
        try:
            record = project.add_image(key, copy=copy, key=key)
        except (ImageError, OSError) as err:
            failed[key] = (row["name"], f"not in the project, and its file cannot be added: {err}")
            continue
        by_path[str(record.path)] = record


def cmd_import_results(args: argparse.Namespace) -> int:
    """Store a --results folder's rows, a shard per transaction; see _add_import_results."""
    from .results import ShardError, read_shards, shard_paths

    args.results = _results_folder(args.results)
    try:
        shards = shard_paths(args.results)
    except (OSError, ValueError) as err:  # pyarrow: an unknown URI scheme, no credentials
        raise UsageError(f"{args.results}: {err}") from None
    if not shards:
        raise UsageError(f"{args.results}: no result shards (*.parquet) there; `gdino label --engine ray --results DIR` "
                         "writes them")
    counts = {"labeled": 0, "kept": 0, "gone": 0}
    failed: dict[str, tuple[str, str]] = {}  # key -> (name, why); a later row of the same image may succeed
    bad_shards: list[ShardError] = []
    classes_added: set[str] = set()
    with Project.create(Path(args.into).expanduser().resolve(), exist_ok=True) as project:
        by_path = {str(r.path): r for r in project.images() if r.path is not None}
        with tqdm(total=len(shards), desc="importing", unit="shard", file=sys.stderr, disable=None) as bar:
            for rows in read_shards(args.results):
                bar.update()
                if isinstance(rows, ShardError):
                    bad_shards.append(rows)
                    bar.write(f"gdino import-results: cannot read {rows.shard}: {rows.why}", file=sys.stderr)
                    continue
                _add_missing(project, rows, args.copy, by_path, failed)
                with _sigint_deferred(), project.batch():  # a shard's results per transaction
                    for row in rows:
                        _import_row(project, row, by_path, counts, failed, classes_added)
        print(f"imported the results of {counts['labeled']} image(s) from {len(shards) - len(bad_shards)} shard(s); "
              f"{counts['kept']} were labeled already (left as they are)")
        if failed:
            print(f"failed {len(failed)} image(s) (a re-run of gdino label --engine ray --results tries them again):")
            for name, why in failed.values():
                print(f"  {name}: {why}")
        if bad_shards:
            print(f"could not read {len(bad_shards)} shard(s) (their images are not imported; a re-run of gdino label "
                  "--results redoes them once the damaged files are removed):")
            for bad in bad_shards:
                print(f"  {bad.shard}: {bad.why}")
        print(f"project: {project.path}  (gdino info {project.path})")
    return 1 if failed or bad_shards else 0


# -- rm -----------------------------------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace) -> int:
    if not args.names and args.status is None:
        raise UsageError("name the images to remove (names or patterns), or give --status")
    with Project.open(args.project) as project:
        images = project.images(status=args.status, order="name")
        if args.names:
            hits = {n: {r.id for r in images if fnmatch.fnmatch(r.name.casefold(), n.casefold())} for n in args.names}
            unmatched = [n for n, ids in hits.items() if not ids]
            if unmatched:
                raise UsageError(f"no image{' with --status ' + args.status if args.status else ''} matches "
                                 f"{', '.join(map(repr, unmatched))}; list them with gdino info {args.project} --images")
            chosen = set().union(*hits.values())
            images = [r for r in images if r.id in chosen]
        if not images:
            print(f"nothing to remove: no image has status {args.status}")
            return 0
        if args.dry_run:
            print(f"would remove {len(images)} image(s):")
        else:
            project.remove_images([r.id for r in images])
            print(f"removed {len(images)} image(s) and their labels:")
        for record in images:
            print(f"  {record.name}")
    return 0


# -- info ---------------------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        stats = project.stats()
        records = project.images(order="name") if args.images else []
        if args.json:
            listing = {"images_list": [{"name": r.name, "status": r.status, "objects": r.num_objects} for r in records]}
            print(json.dumps({"project": str(project.path), **stats, **(listing if args.images else {})}, indent=2))
            return 0
        print(f"project  {project.path}")
        print(f"images   {stats['images']}\nobjects  {stats['objects']}\n")
        _table("status", "images", stats["status"])
        print()
        _table("class", "objects", stats["classes"] or {"(none yet)": 0})
        if stats["phrases"]:
            print()
            _table("phrase", "objects", stats["phrases"])
        if records:
            print()
            width = max(len("image"), *(len(r.name) for r in records))
            print(f"{'image':<{width}}  {'status':<9}  objects")
            for r in records:
                print(f"{r.name:<{width}}  {r.status:<9}  {r.num_objects:>7}")
    return 0


def _table(key: str, value: str, rows: dict[str, int]) -> None:
    width = max(len(key), *(len(k) for k in rows))
    print(f"{key:<{width}}  {value:>7}")
    for name, count in rows.items():
        print(f"{name:<{width}}  {count:>7}")


if __name__ == "__main__":
    sys.exit(main())
