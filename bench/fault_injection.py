"""Hundreds of seeded random SIGKILLs of real `gdino` processes, by hand (tests/store/test_faults.py runs 10 a phase).

    python bench/fault_injection.py [--kills 100] [--seed 0] [--phases label,import,export,similar]

Each phase's checks are those of tests/support/fault_harness.py: after every kill the database passes PRAGMA
integrity_check, no file is in the project twice, no image holds part of its objects, an import left
all or nothing, an export target is exactly the previous export or exactly the new one; after a final
uninterrupted run the project equals one that was never interrupted; find similar across a project (the
app's job) leaves each image as it was or with exactly what the run adds there, as one undo step. Any failed
check stops the run with its assertion. Prints the kills that landed per phase and the time taken. No weights
are needed: the label and similar phases build the tests' tiny random models in a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from fault_harness import export_kills, import_kills, label_kills, similar_kills  # noqa: E402
from tiny_models import make_hf_model, make_tokenizer, save_hf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="kills per phase (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", default="label,import,export,similar",
                        help="comma-separated: label, import, export, similar")
    args = parser.parse_args()
    phases = args.phases.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="gdino-faults-") as tmp:
        tmp = Path(tmp)
        if "label" in phases:
            model = save_hf(make_hf_model("tiny", seed=0), make_tokenizer(), tmp / "model")
            start = time.monotonic()
            kills = label_kills(tmp / "label", model, args.kills, args.seed)
            rows += [("adding", kills["adding"], time.monotonic() - start), ("labeling", kills["labeling"], None)]
        if "import" in phases:
            start = time.monotonic()
            rows.append(("importing", import_kills(tmp / "import", args.kills, args.seed), time.monotonic() - start))
        if "export" in phases:
            for as_zip in (False, True):
                start = time.monotonic()
                landed = export_kills(tmp / f"export{int(as_zip)}", args.kills, args.seed, as_zip)
                rows.append(("exporting " + ("zip" if as_zip else "folder"), landed, time.monotonic() - start))
        if "similar" in phases:
            from sam3_models import save_tiny_sam3

            model = save_tiny_sam3(tmp / "sam3", confident=True)
            start = time.monotonic()
            rows.append(("finding similar", similar_kills(tmp / "similar", model, args.kills, args.seed),
                         time.monotonic() - start))
    print(f"\n{'phase':<18} {'kills':>6} {'seconds':>8}   (every check passed after every kill)")
    for phase, kills, seconds in rows:
        print(f"{phase:<18} {kills:>6} {'' if seconds is None else f'{seconds:.0f}':>8}")


if __name__ == "__main__":
    main()
