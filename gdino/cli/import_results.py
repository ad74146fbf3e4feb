"""`gdino import-results`: store the result shards that `gdino label --engine ray --results DIR` wrote
(`labeling.import_results`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..labeling.import_results import import_results
from ..store import Project
from .args import UsageError, para, results_folder
from .bars import Bars


def add_parser(commands) -> None:
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Store a --results folder's rows, a shard per transaction; see add_parser."""
    from ..labeling.results import shard_paths

    folder = results_folder(args.results)
    try:
        shards = shard_paths(folder)
    except (OSError, ValueError) as err:  # pyarrow: an unknown URI scheme, no credentials
        raise UsageError(f"{folder}: {err}") from None
    if not shards:
        raise UsageError(f"{folder}: no result shards (*.parquet) there; `gdino label --engine ray --results DIR` "
                         "writes them")
    with Project.create(Path(args.into).expanduser().resolve(), exist_ok=True) as project:
        report = import_results(project, folder, len(shards), copy=args.copy,
                                reporter=Bars("gdino import-results: cannot read {name}: {why}"))
        counts, failed, bad_shards = report.counts, report.failed, report.bad_shards
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
