"""`gdino export`: a project's labels and images in a training format (COCO, YOLO, YOLO-seg, Pascal VOC); also
what `gdino label --export` runs after labeling."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..formats.dataset import split_images
from ..formats.export import FORMATS, ExportError, dataset_from_project, export_dataset, export_zip
from ..store import Project
from .args import UsageError, add_split_flags, para


def add_parser(commands) -> None:
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
    add_split_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        return export_project(project, args.format, Path(args.out), reviewed_only=args.reviewed_only,
                       val_fraction=args.val_fraction, seed=args.seed, as_zip=args.zip, overwrite=args.overwrite)


def export_project(project: Project, fmt: str, out: Path, *, reviewed_only: bool, val_fraction: float, seed: int,
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
