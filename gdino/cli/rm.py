"""`gdino rm`: remove images (with their labels) from a project, by name pattern and/or status, all or none."""

from __future__ import annotations

import argparse
import fnmatch

from ..store import STATUSES, Project
from .args import UsageError, para


def add_parser(commands) -> None:
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
