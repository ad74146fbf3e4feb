"""`gdino import`: labeled datasets (COCO, YOLO, zips) or images into a project, each source checked whole
first and added all at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..formats.importing import import_path
from ..formats.validate import DatasetError, ImportLimits
from ..safezip import UnsafeZipError
from ..store import Project
from .args import UsageError, para, positive_int


def add_parser(commands) -> None:
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
