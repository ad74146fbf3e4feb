"""Hundreds of seeded SIGKILLs of real processes writing an embedding store, by hand
(tests/sam/test_embedding_store_kills.py runs 10).

    python bench/embedding_store_faults.py [--kills 200] [--seed 0] [--max-mib 3] [--pairs 5]

Each kill's checks are those of tests/support/store_faults.py: every key reads back as exactly the float16
embedding put or None (never an error), every embedding file under its real name is whole, at most one
temporary file is left (the killed writer's), and the next eviction removes it and brings the folder within its
bound. Then `--pairs` rounds of two processes putting, getting and evicting one folder at once. Any failed check
stops the run with its assertion. Prints the kills, how many landed inside a write, and the time taken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from store_faults import kill_rounds, run_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="kills (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-mib", type=float, default=3.0, help="the store's bound in MiB (default 3: evictions)")
    parser.add_argument("--pairs", type=int, default=5, help="rounds of two processes at once (default 5)")
    args = parser.parse_args()
    max_bytes = int(args.max_mib * (1 << 20))
    with tempfile.TemporaryDirectory(prefix="gdino-store-faults-") as tmp:
        start = time.monotonic()
        stats = kill_rounds(Path(tmp) / "store", args.kills, args.seed, max_bytes)
        took = time.monotonic() - start
        print(f"kills: {stats['kills']}, inside a write: {stats['inside_write']}, keys read back: {stats['hits']} "
              f"exact, {stats['misses']} missing, leftovers cleaned: {stats['leftover']}; {took:.0f} s")
        start = time.monotonic()
        for p in range(args.pairs):
            outs = run_pair(Path(tmp) / f"pair{p}", Path(tmp) / f"marks{p}", args.seed + p, max_bytes, ops=200)
            print(f"pair {p}: " + " | ".join(out.strip() for out in outs))
        print(f"pairs: {args.pairs}, all reads exact or missing; {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
