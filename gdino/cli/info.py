"""`gdino info`: a project's images per status and objects per class (and phrase), as a table or JSON."""

from __future__ import annotations

import argparse
import json

from ..store import Project
from .args import para


def add_parser(commands) -> None:
    p = commands.add_parser(
        "info", help="count a project's images per status and objects per class",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Summarize a project: images per status (unlabeled, auto, reviewed, skipped) and objects "
                    "per class."),
        epilog="examples:\n  gdino info myproject\n  gdino info myproject --json | jq .status")
    p.add_argument("project", metavar="PROJECT", help="the project directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--images", action="store_true", help="also list every image: name, status, objects")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
