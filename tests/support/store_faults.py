"""Kill real processes that write an embedding store (gdino/sam/store.py) and check what they left.

Used by tests/sam/test_embedding_store_kills.py (a seeded, bounded run) and bench/embedding_store_faults.py
(hundreds of kills, by hand). Run as a script, this file is the child:

    python store_faults.py put FOLDER SEED START MAX_BYTES      # put embeddings START, START+1, ... until killed
    python store_faults.py mix FOLDER SEED NAME OTHER MARKS MAX_BYTES OPS   # random put / get / evict
    python store_faults.py disk|readonly FOLDER SEED COUNT   # puts on a full disk; a read-only folder (JSON out)
    python store_faults.py segment FOLDER SAM_PATH          # the Segmenter with a store that cannot write

The parent watches the folder from outside (the files that appear), never the child's memory: a kill comes
when a chosen embedding file has appeared, then at once, inside the next write (a temporary file of a chosen
size is there) or after a random spin within one put's measured time. After each kill every key must read
back as exactly the embedding put or None, every embedding file under its real name must be whole, and the
next eviction must remove the killed writer's temporary file and bring the folder within its bound.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gdino.sam.backend import Embedding  # noqa: E402
from gdino.sam.store import SUFFIX, TEMP_PREFIX, EmbeddingStore  # noqa: E402


def key(seed: int, i: int) -> str:
    return f"test-{seed}-{i:05d}"


def embedding(seed: int, i: int) -> Embedding:
    """The i-th test embedding of a seed: 1 or 2 float32 tensors, 128 KiB to 1 MiB once float16, sizes that
    vary so that the writes vary in length."""
    rng = np.random.default_rng([seed, i])
    channels = int(rng.integers(64, 513))
    features = {"image": torch.from_numpy(rng.standard_normal((1, channels, 32, 32), dtype=np.float32))}
    if i % 3 == 0:
        features["high_res_0"] = torch.from_numpy(rng.standard_normal((1, 8, 64, 64), dtype=np.float32))
    return Embedding(features, (1024, 768), (1200 + i % 7, 900 - i % 5))


def nbytes(seed: int, i: int) -> int:
    """The float16 size of the i-th embedding's tensors (its file is this plus a header < 1 KiB)."""
    return sum(t.numel() * 2 for t in embedding(seed, i).features.values())


def exact(got: Embedding | None, seed: int, i: int) -> bool:
    """True when `got` is None or, bit for bit, the float16 of the embedding put (expected values made here,
    by torch's own conversion, not by the store)."""
    if got is None:
        return True
    want = embedding(seed, i)
    return (sorted(got.features) == sorted(want.features)
            and all(got.features[k].dtype == torch.float16 and torch.equal(got.features[k], want.features[k].half())
                    for k in want.features)
            and tuple(got.input_size) == tuple(want.input_size) and tuple(got.original_size) == tuple(want.original_size))


def index_of(name: str, seed: int) -> int | None:
    prefix = f"test-{seed}-"
    if name.startswith(prefix) and name.endswith(SUFFIX):
        return int(name[len(prefix):-len(SUFFIX)])
    return None


def embeddings_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)) if folder.is_dir() else []


def newest(folder: Path, seed: int, start: int) -> int:
    """The highest index >= start among the embedding files in the folder now, or -1."""
    found = [index_of(n, seed) for n in os.listdir(folder)] if folder.is_dir() else []
    return max([i for i in found if i is not None and i >= start] or [-1])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place meanwhile
        return -1


def child_cmd(*args) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *map(str, args)]


# -- the parent: kills ---------------------------------------------------------------------------------------


def check_after_kill(folder: Path, store: EmbeddingStore, seed: int, upto: int) -> dict:
    """The checks after one kill (assertions). Returns what was found: hits, misses, the leftover temporary
    files before the cleanup."""
    left = temps(folder)
    assert len(left) <= 1, f"one writer was killed, yet {left} are left"
    present = {i for p in folder.iterdir() if (i := index_of(p.name, seed)) is not None}
    hits = 0
    for i in range(upto):
        got = store.get(key(seed, i))
        assert exact(got, seed, i), f"key {i}: the store gave an embedding that is not the one put"
        assert (got is not None) == (i in present), f"key {i}: a kill left a torn file under the real name"
        hits += got is not None
    store.evict()
    assert temps(folder) == [], f"the next eviction left {temps(folder)}"
    assert embeddings_bytes(folder) <= store.max_bytes
    return {"hits": hits, "misses": upto - hits, "leftover": len(left)}


def kill_rounds(folder: Path, rounds: int, seed: int, max_bytes: int, per_round: int = 6,
                timeout: float = 120) -> dict:
    """`rounds` children, each putting embeddings from where the last one's range half-overlaps, SIGKILLed at a
    seeded random moment (see the module's docstring). Returns counts: kills, kills with a temporary file
    present (inside a write), hits, misses, leftovers cleaned."""
    rng = random.Random(seed)
    store = EmbeddingStore(folder, max_bytes)
    stats = {"kills": 0, "inside_write": 0, "hits": 0, "misses": 0, "leftover": 0}
    put_time = 0.05
    seen_max = -1
    for r in range(rounds):
        start = r * per_round // 2
        target = start + rng.randrange(per_round)
        mode = rng.choice(["at-file", "in-write", "spin"])
        fraction = rng.random()
        proc = subprocess.Popen(child_cmd("put", folder, seed, start, max_bytes), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + timeout
            first = None

            while newest(folder, seed, start) < target:  # wait on the files, not on the clock
                assert proc.poll() is None, f"the child ended: {proc.stderr.read().decode()[-2000:]}"
                assert time.monotonic() < deadline, "the child wrote nothing"
                if first is None and newest(folder, seed, start) >= start:
                    first = time.monotonic()
                time.sleep(0.0005)
            if first is not None and target > start:
                put_time = (time.monotonic() - first) / (target - start)
            if mode == "in-write":
                want = fraction * nbytes(seed, target + 1)
                while newest(folder, seed, start) <= target and not any(_size(folder / t) >= want for t in temps(folder)):
                    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # no sleep: a write is ~ms
            elif mode == "spin":
                until = time.perf_counter() + fraction * put_time
                while time.perf_counter() < until:
                    pass
            proc.kill()
        finally:
            proc.kill()
            proc.wait()
        stats["kills"] += 1
        stats["inside_write"] += bool(temps(folder))
        seen_max = max(seen_max, target + 2, newest(folder, seed, start) + 1)
        found = check_after_kill(folder, store, seed, seen_max + 1)  # + 1: a key never written reads None
        for k in ("hits", "misses", "leftover"):
            stats[k] += found[k]
    return stats


# -- the parent: two processes at once ------------------------------------------------------------------------


def run_pair(folder: Path, marks: Path, seed: int, max_bytes: int, ops: int, timeout: float = 300) -> list[str]:
    """Two `mix` children on one folder at once, each going on until both did `ops` operations. Returns their
    stderr; asserts both exited 0 (every get exact or None, no exception)."""
    marks.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(child_cmd("mix", folder, seed, me, other, marks, max_bytes, ops), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other in (("a", "b"), ("b", "a"))]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        outs.append(out)
        assert p.returncode == 0, f"a child failed ({p.returncode}): {err[-3000:]}"
    return outs


# -- the children ---------------------------------------------------------------------------------------------


def child_put(folder: str, seed: int, start: int, max_bytes: int) -> int:
    store = EmbeddingStore(folder, max_bytes)
    for i in range(start, start + 1000):
        if not store.put(key(seed, i), embedding(seed, i)):
            print(f"put {i} failed", file=sys.stderr)
            return 4
    return 0


def child_mix(folder: str, seed: int, me: str, other: str, marks: str, max_bytes: int, ops: int) -> int:
    """Random puts, gets and evictions over 12 keys until this child did `ops` and the other one is done too."""
    rng = random.Random(f"{seed}-{me}")
    store = EmbeddingStore(folder, max_bytes)
    done = 0
    counts = {"put": 0, "get": 0, "hit": 0, "evict": 0}
    while done < ops or not (Path(marks) / other).exists():
        i = rng.randrange(12)
        op = rng.choice(["put", "get", "get", "evict"])
        if op == "put":
            store.put(key(seed, i), embedding(seed, i))
        elif op == "get":
            got = store.get(key(seed, i))
            if not exact(got, seed, i):
                print(f"{me}: key {i} read back wrong", file=sys.stderr)
                return 3
            counts["hit"] += got is not None
        else:
            store.evict()
        counts[op] += 1
        done += 1
        if done == ops:
            (Path(marks) / me).touch()
    print(counts)
    return 0


def child_disk(folder: str, seed: int, count: int) -> dict:
    """Put embeddings 0..count-1 into a folder on a small disk (or under a small file-size limit); report each
    put's result, the temporary files left, and whether every key reads back exactly or None."""
    store = EmbeddingStore(folder, 1 << 40)
    puts = [store.put(key(seed, i), embedding(seed, i)) for i in range(count)]
    got = [store.get(key(seed, i)) for i in range(count)]
    return {"puts": puts, "temps": temps(Path(folder)), "exact": all(exact(g, seed, i) for i, g in enumerate(got)),
            "read": [g is not None for g in got]}


def child_readonly(folder: str, seed: int, count: int) -> dict:
    """On a folder already holding embeddings 0..count-1, now read-only: reads, a new put, a put over an existing
    key, an eviction to zero bytes."""
    store = EmbeddingStore(folder, 1 << 40)
    before = [exact(g, seed, i) and g is not None for i, g in enumerate(store.get(key(seed, i)) for i in range(count))]
    new_put = store.put(key(seed, count), embedding(seed, count))
    again_put = store.put(key(seed, 0), embedding(seed, 0))
    removed = EmbeddingStore(folder, 0).evict()
    after = [exact(g, seed, i) and g is not None for i, g in enumerate(store.get(key(seed, i)) for i in range(count))]
    return {"before": before, "new_put": new_put, "again_put": again_put, "removed": removed, "after": after,
            "new_get": store.get(key(seed, count)) is None, "temps": temps(Path(folder))}


def child_segment(folder: str, sam_path: str) -> dict:
    """The Segmenter with and without a store in `folder` (whose writes fail here): the same masks and scores."""
    from gdino.sam.segmenter import Segmenter

    image = np.random.default_rng(5).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = [[10, 10, 90, 100], [40, 20, 150, 110]]
    plain = Segmenter.from_pretrained(sam_path, device="cpu").segment(image, boxes)
    seg = Segmenter.from_pretrained(sam_path, device="cpu").using(EmbeddingStore(folder, 1 << 30))
    kept = seg.segment(image, boxes)
    key_ = seg.embedding_key(image)
    return {"same_masks": bool(np.array_equal(plain.masks, kept.masks)),
            "same_scores": bool(np.array_equal(plain.scores, kept.scores)), "masks_any": bool(kept.masks.any()),
            "encoder_calls": seg.encoder_calls, "stored": seg.store.get(key_) is not None,
            "files": sorted(os.listdir(folder)) if os.path.isdir(folder) else []}


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "put":
        sys.exit(child_put(args[0], int(args[1]), int(args[2]), int(args[3])))
    if mode == "mix":
        sys.exit(child_mix(args[0], int(args[1]), args[2], args[3], args[4], int(args[5]), int(args[6])))
    if mode in ("disk", "readonly"):
        print(json.dumps((child_disk if mode == "disk" else child_readonly)(args[0], int(args[1]), int(args[2]))))
        sys.exit(0)
    if mode == "segment":
        print(json.dumps(child_segment(args[0], args[1])))
        sys.exit(0)
    sys.exit(f"unknown mode {mode}")
