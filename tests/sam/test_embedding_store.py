"""gdino/sam/store.py on real files: exact float16 round trips, and every hostile thing a folder can hold (torn,
foreign, lying or swapped-for-a-link files, a linked folder, a FIFO, leftovers), the bound and its order, and the
Segmenter over a store. Kills, two processes, a full disk and a read-only folder: test_embedding_store_kills.py."""

import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from store_faults import embedding, exact, key
from tiny_sam import make_tiny_sam

from gdino.sam.backend import Embedding
from gdino.sam.segmenter import Segmenter
from gdino.sam.store import PROJECT_FOLDER, SUFFIX, TEMP_PREFIX, EmbeddingStore, project_store

K = key(0, 1)


def new_project(tmp_path: Path) -> Path:
    (tmp_path / "project").mkdir()
    return tmp_path / "project"


@pytest.fixture
def store(tmp_path):
    return project_store(new_project(tmp_path))


def path_of(store: EmbeddingStore, k: str = K) -> Path:
    return store.folder / f"{k}{SUFFIX}"


def put_one(store: EmbeddingStore, i: int = 1) -> Path:
    assert store.put(key(0, i), embedding(0, i))
    return path_of(store, key(0, i))


def snapshot(folder: Path) -> dict:
    """Every entry under folder (links not followed): kind, bytes and modification time."""
    out = {}
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(dirpath) / name
            info = p.lstat()
            out[str(p.relative_to(folder))] = (info.st_mode, info.st_mtime_ns, p.read_bytes() if p.is_file() and
                                               not p.is_symlink() else os.readlink(p) if p.is_symlink() else None)
    return out


# -- what goes in comes out ------------------------------------------------------------------------------------


def test_round_trip_is_float16_exact_in_a_plain_safetensors_file(store):
    path = put_one(store)
    got = store.get(K)
    assert got is not None and exact(got, 0, 1)
    assert got.features["image"].dtype == torch.float16 and got.features["image"].device.type == "cpu"
    assert path.parent == store.folder == store.root.joinpath(*PROJECT_FOLDER)
    want = embedding(0, 1)
    with safe_open(str(path), "pt") as f:  # the safetensors library, an independent reader
        assert sorted(f.keys()) == sorted(want.features)
        for name, t in want.features.items():
            assert torch.equal(f.get_tensor(name), t.half())
        meta = f.metadata()
    assert meta["key"] == K and meta["original_size"] == "1201,899" and meta["input_size"] == "1024,768"


def test_several_tensors_and_float16_input(store):
    features = {"image": torch.randn(1, 16, 8, 8, dtype=torch.float16), "high_res_0": torch.randn(1, 4, 32, 32),
                "high_res_1": torch.randn(1, 8, 16, 16, dtype=torch.float64)}
    assert store.put("multi", Embedding(features, (1024, 1024), (480, 640)))
    got = store.get("multi")
    assert sorted(got.features) == sorted(features)
    for name, t in features.items():
        assert torch.equal(got.features[name], t.to(torch.float16))
    assert got.input_size == (1024, 1024) and got.original_size == (480, 640)


@pytest.mark.parametrize("k", ["sam2.1-tiny-0123abcd-" + "f" * 40, "a/../../escape", "with space:colon", "ünï", "",
                               "x" * 500, ".hidden", "..", "a\0b", "\udcff"])
def test_any_string_key_stays_inside_the_folder(tmp_path, k):
    store = project_store(new_project(tmp_path))
    assert store.put(k, embedding(0, 2))
    assert exact(store.get(k), 0, 2) and store.get(k) is not None
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].parent == store.folder and not files[0].name.startswith(".")
    assert store.get(k + "x") is None


def test_a_key_that_is_not_a_string_is_a_miss_not_an_error(store):
    assert store.get(None) is None and store.get(b"bytes") is None
    assert store.put(3, embedding(0, 1)) is False


def test_what_float16_cannot_hold_is_not_kept(store):
    big = Embedding({"image": torch.full((1, 2, 4, 4), 1e6)}, (4, 4), (4, 4))  # float16 tops out at 65504
    nan = Embedding({"image": torch.full((1, 2, 4, 4), float("nan"))}, (4, 4), (4, 4))
    empty = Embedding({"image": torch.zeros(1, 0, 4, 4)}, (4, 4), (4, 4))
    scalar = Embedding({"image": torch.tensor(1.0)}, (4, 4), (4, 4))
    for bad in (big, nan, empty, scalar, Embedding({}, (4, 4), (4, 4)), Embedding({"image": "x"}, (4, 4), (4, 4)),
                Embedding({"image": torch.zeros(1, 2)}, (0, 4), (4, 4))):
        assert store.put("bad", bad) is False
    assert not store.folder.exists() or not any(store.folder.iterdir())


# -- files that are not what they claim ------------------------------------------------------------------------


def good_bytes(store: EmbeddingStore, i: int = 1) -> bytes:
    return put_one(store, i).read_bytes()


def test_torn_and_truncated_files_read_as_missing_then_are_replaced(store):
    data = good_bytes(store)
    (n,) = struct.unpack("<Q", data[:8])
    for cut in (0, 1, 7, 8, 9, 8 + n // 2, 8 + n, 8 + n + 1, len(data) // 2, len(data) - 1):
        path_of(store).write_bytes(data[:cut])
        assert store.get(K) is None, cut
    path_of(store).write_bytes(data + b"\0")  # one byte too many
    assert store.get(K) is None
    flipped = bytearray(data)
    flipped[-100] ^= 1  # one bit of the tensors: the CRC
    path_of(store).write_bytes(bytes(flipped))
    assert store.get(K) is None
    zeroed = data[: 8 + n] + bytes(len(data) - 8 - n)  # what a power cut can leave without a sync
    path_of(store).write_bytes(zeroed)
    assert store.get(K) is None
    assert store.put(K, embedding(0, 1)) and exact(store.get(K), 0, 1) and store.get(K) is not None


def header_file(path: Path, header, body: bytes = b"", length: int | None = None) -> None:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + body)


def test_garbage_and_lying_headers_read_as_missing(store):
    data = good_bytes(store)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    p = path_of(store)
    cases = {
        "random": lambda: p.write_bytes(np.random.default_rng(0).bytes(5000)),
        "huge header length": lambda: header_file(p, header, body, length=2 ** 63),
        "header longer than file": lambda: header_file(p, header, body, length=len(data)),
        "header 64 MiB": lambda: header_file(p, header, body, length=64 << 20),
        "not json": lambda: header_file(p, b"{not json at all", body),
        "a json list": lambda: header_file(p, [1, 2, 3], body),
        "deep json": lambda: header_file(p, b"[" * 50000 + b"]" * 50000, body),
        "no metadata": lambda: header_file(p, {k: v for k, v in header.items() if k != "__metadata__"}, body),
        "other format": lambda: header_file(p, {**header, "__metadata__": {**header["__metadata__"], "format": "x/2"}},
                                            body),
        "no key": lambda: header_file(p, {**header, "__metadata__": {k: v for k, v in header["__metadata__"].items()
                                                                      if k != "key"}}, body),
    }
    for field, value in [("original_size", "0,5"), ("original_size", "-1,5"), ("original_size", "a,b"),
                         ("input_size", "1,2,3"), ("input_size", 5), ("tensors", ""), ("crc32", "00000000")]:
        cases[f"{field}={value}"] = (lambda f=field, v=value: header_file(
            p, {**header, "__metadata__": {**header["__metadata__"], f: v}}, body))
    name = "image"
    entry = header[name]
    for what, change in [("dtype F32", {"dtype": "F32"}), ("dtype BF16", {"dtype": "BF16"}),
                         ("bigger shape", {"shape": [1, entry["shape"][1] + 1, 32, 32]}),
                         ("other rank, same count", {"shape": [entry["shape"][1], 32, 32]}),
                         ("offsets past the end", {"data_offsets": [entry["data_offsets"][0], len(body) + 2]}),
                         ("zero dim", {"shape": [1, 0, 32, 32]}), ("bool dims", {"shape": [True, 1, 1, 1]})]:
        cases[what] = (lambda c=change: header_file(p, {**header, name: {**entry, **c}}, body))
    for what, make in cases.items():
        make()
        got = store.get(K)
        assert got is None, what


def resave(path: Path, change) -> None:
    """Rewrite an embedding's file with the safetensors library (a valid safetensors file), its tensors changed
    by `change` and its metadata kept."""
    with safe_open(str(path), "pt") as f:
        names = f.keys()
        tensors = {k: f.get_tensor(k) for k in names}
        meta = f.metadata()
    save_file(change(tensors), str(path), metadata=meta)


@pytest.mark.parametrize("what, change", [
    ("float32 where float16 is expected", lambda ts: {k: v.float() for k, v in ts.items()}),
    ("bfloat16", lambda ts: {k: v.bfloat16() for k, v in ts.items()}),
    ("a tensor added", lambda ts: {**ts, "extra": torch.zeros(1, 2, 2, 2, dtype=torch.float16)}),
    ("a tensor dropped", lambda ts: {k: v for k, v in list(ts.items())[1:]}),
    ("a tensor renamed", lambda ts: {f"x{k}": v for k, v in ts.items()}),
    ("another rank", lambda ts: {k: v[0] for k, v in ts.items()}),
    ("transposed", lambda ts: {k: v.transpose(-1, -2).contiguous() for k, v in ts.items()}),
    ("other values, same shapes", lambda ts: {k: v + 1 for k, v in ts.items()}),
])
def test_a_valid_safetensors_file_that_is_not_the_one_written_is_refused(store, what, change):
    path = put_one(store, 3)  # 3: two tensors
    assert store.get(key(0, 3)) is not None
    resave(path, change)
    assert store.get(key(0, 3)) is None, what


def test_a_file_for_another_key_or_another_backend_is_refused(store):
    mine = key(0, 1)
    other_image = key(0, 4)
    other_backend = "sam1-" + "b" * 16 + "-" + mine.split("-")[-1]
    path_of(store, other_image).write_bytes(put_one(store, 1).read_bytes())  # a copy under another image's name
    assert store.get(other_image) is None
    path_of(store, other_backend).write_bytes(path_of(store, mine).read_bytes())
    assert store.get(other_backend) is None
    assert store.get(mine) is not None


# -- not a regular file of ours ----------------------------------------------------------------------------------


def test_a_link_in_place_of_a_file_is_never_followed(store, tmp_path):
    elsewhere = EmbeddingStore(tmp_path / "elsewhere" / "sam")
    target = put_one(elsewhere, 1)  # a valid embedding for this very key, outside the store
    store.folder.mkdir(parents=True)
    path_of(store).symlink_to(target)
    assert store.get(K) is None
    path_of(store, "devzero").symlink_to("/dev/zero")
    assert store.get("devzero") is None
    before = snapshot(tmp_path / "elsewhere")
    assert store.put(K, embedding(0, 5)) is True  # replaces the link itself
    assert not path_of(store).is_symlink() and snapshot(tmp_path / "elsewhere") == before
    assert exact(elsewhere.get(K), 0, 1)


def test_a_hard_link_is_not_read(store, tmp_path):
    outside = tmp_path / "user_file"
    outside.write_bytes(good_bytes(store))
    path_of(store).unlink()
    os.link(outside, path_of(store))
    assert store.get(K) is None
    assert store.put(K, embedding(0, 1)) and store.get(K) is not None
    assert outside.read_bytes() == path_of(store).read_bytes() and os.stat(outside).st_nlink == 1


def test_a_fifo_does_not_block(store):
    store.folder.mkdir(parents=True)
    os.mkfifo(path_of(store))
    got = []
    reader = threading.Thread(target=lambda: got.append(store.get(K)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "get blocked on a FIFO"
    assert got == [None]
    assert store.evict() == 0 and path_of(store).exists()  # not ours to remove, not counted
    assert store.put(K, embedding(0, 1)) and store.get(K) is not None


def test_a_directory_with_an_embeddings_name(store):
    path_of(store).mkdir(parents=True)
    (path_of(store) / "inside").write_text("keep")
    assert store.get(K) is None
    assert store.put(K, embedding(0, 1)) is False
    assert sorted(p.name for p in store.folder.iterdir()) == [path_of(store).name]  # no temporary file left
    assert (path_of(store) / "inside").read_text() == "keep" and EmbeddingStore(store.folder, 0).evict() == 0


@pytest.mark.parametrize("linked", [".cache", ".cache/sam", "the store's folder"])
def test_a_linked_folder_is_never_read_written_or_emptied(tmp_path, linked):
    user = tmp_path / "user"
    inside = user / "sam" if linked == ".cache" else user
    real = EmbeddingStore(inside, 1 << 30)
    put_one(real, 1)  # a valid embedding for the key, as if the user's folder had been a store
    (inside / f"{TEMP_PREFIX}host-1-old").write_bytes(b"x" * 10)
    os.utime(inside / f"{TEMP_PREFIX}host-1-old", (0, 0))  # a leftover by every rule
    (user / "notes.txt").write_text("mine")
    before = snapshot(user)
    project = tmp_path / "project"
    (project / ".cache").mkdir(parents=True)
    if linked == "the store's folder":
        (project / "sam").symlink_to(user)
        store = EmbeddingStore(project / "sam", 0)  # root: its parent
    else:
        if linked == ".cache":
            (project / ".cache").rmdir()
        (project / linked).symlink_to(user)
        store = project_store(project, 0)
    assert store.get(K) is None
    assert store.put(K, embedding(0, 1)) is False and store.put(key(0, 9), embedding(0, 9)) is False
    assert store.evict() == 0
    assert snapshot(user) == before


def test_a_project_that_is_gone_is_not_made_again(tmp_path):
    store = project_store(tmp_path / "gone")
    assert store.put(K, embedding(0, 1)) is False and store.get(K) is None and store.evict() == 0
    assert not (tmp_path / "gone").exists()


def test_the_folder_must_lie_below_its_root(tmp_path):
    for folder, root in [(tmp_path, tmp_path), (tmp_path / "a" / ".." / "b", tmp_path / "a")]:
        with pytest.raises(ValueError):
            EmbeddingStore(folder, root=root)
    with pytest.raises(ValueError):
        EmbeddingStore(tmp_path / "s", -1)


# -- the bound --------------------------------------------------------------------------------------------------


def sizes_on_disk(store: EmbeddingStore) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in store.folder.iterdir() if p.name.endswith(SUFFIX)}


def test_bound_and_least_recently_used_order(tmp_path):
    probe = EmbeddingStore(tmp_path / "probe")
    size = put_one(probe, 1).stat().st_size
    features = embedding(0, 1).features
    store = EmbeddingStore(tmp_path / "s", 3 * size)
    names = ["a", "b", "c", "d", "e"]
    for n in names[:3]:
        assert store.put(n, Embedding(features, (8, 8), (8, 8)))
    assert store.get("a") is not None  # a is now the most recently used: b goes first
    assert store.put("d", Embedding(features, (8, 8), (8, 8)))
    assert sorted(sizes_on_disk(store)) == ["a.safetensors", "c.safetensors", "d.safetensors"]
    assert store.get("c") is not None
    assert store.put("e", Embedding(features, (8, 8), (8, 8)))
    assert sorted(sizes_on_disk(store)) == ["c.safetensors", "d.safetensors", "e.safetensors"]
    assert sum(sizes_on_disk(store).values()) <= store.max_bytes


def test_the_bound_holds_after_every_put_and_leaves_other_names_alone(tmp_path):
    store = EmbeddingStore(tmp_path / "s", 2 << 20)
    store.folder.mkdir()
    (store.folder / "README.txt").write_bytes(b"x" * (3 << 20))  # not ours: not counted, not removed
    (store.folder / ".hidden.safetensors").write_bytes(b"x" * 100)
    for i in range(12):
        assert store.put(key(0, i), embedding(0, i))
        assert sum(sizes_on_disk(store).values()) - 100 <= 2 << 20
        assert store.get(key(0, i)) is not None  # the newest is always kept
    assert (store.folder / "README.txt").stat().st_size == 3 << 20 and (store.folder / ".hidden.safetensors").exists()


@pytest.mark.parametrize("bound", [0, 1000])
def test_a_bound_smaller_than_one_file_keeps_nothing_at_once(tmp_path, bound):
    store = EmbeddingStore(tmp_path / "s", bound)
    start = time.perf_counter()
    assert store.put(K, embedding(0, 1)) is False
    assert time.perf_counter() - start < 5
    assert store.get(K) is None and not (store.folder.exists() and any(store.folder.iterdir()))
    big = EmbeddingStore(tmp_path / "s", 1 << 30)
    put_one(big, 1)
    assert store.evict() == 1 and not any(store.folder.iterdir())


# -- leftovers --------------------------------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: its pid names no process now
    return proc.pid


def test_leftovers_of_gone_writers_are_removed_and_never_counted(tmp_path):
    from gdino.sam import store as store_module

    store = EmbeddingStore(tmp_path / "s", 1 << 30)
    put_one(store, 1)
    host = store_module._HOST
    dead = f"{TEMP_PREFIX}{host}-{dead_pid()}-aaaa"
    live = f"{TEMP_PREFIX}{host}-{os.getpid()}-bbbb"
    old_live = f"{TEMP_PREFIX}{host}-{os.getpid()}-cccc"
    other_host = f"{TEMP_PREFIX}otherhost-{dead_pid()}-dddd"
    for name in (dead, live, old_live, other_host):
        (store.folder / name).write_bytes(good_bytes(store))
    os.utime(store.folder / old_live, (time.time() - 3600, time.time() - 3600))
    assert EmbeddingStore(store.folder, path_of(store).stat().st_size).evict() == 0  # temporaries are not counted
    assert sorted(p.name for p in store.folder.iterdir() if p.name.startswith(TEMP_PREFIX)) == sorted([live, other_host])
    assert store.get(live[len(TEMP_PREFIX):]) is None  # a key never names a temporary file


# -- the Segmenter over a store ---------------------------------------------------------------------------------


def photo(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (150, 200, 3), dtype=np.uint8)


BOXES = [[10, 10, 120, 100], [60, 40, 190, 140]]


def test_a_second_segmenter_reads_the_first_ones_embedding(tmp_path):
    store = project_store(new_project(tmp_path))
    first = Segmenter(make_tiny_sam(0)).using(store)
    first.segment(photo(), BOXES)
    assert first.encoder_calls == 1 and first.store_hits == 0
    want = first.backend.embed(photo()).features["image"].half()  # the encoder's output, computed again
    got = store.get(first.embedding_key(photo()))
    assert got is not None and torch.equal(got.features["image"], want)
    second = Segmenter(make_tiny_sam(0)).using(store)
    again = second.segment(photo(), BOXES)
    assert second.encoder_calls == 0 and second.store_hits == 1
    assert again.masks.shape == (2, 150, 200) and again.masks.any()


def test_a_cache_of_another_backend_is_not_used(tmp_path):
    store = project_store(new_project(tmp_path))
    a = Segmenter(make_tiny_sam(0)).using(store)
    b = Segmenter(make_tiny_sam(1)).using(store)
    assert a.backend.identity != b.backend.identity
    a.segment(photo(), BOXES)
    key_a, key_b = a.embedding_key(photo()), b.embedding_key(photo())
    path_of(store, key_b).write_bytes(path_of(store, key_a).read_bytes())  # a's file under b's name
    plain = Segmenter(make_tiny_sam(1)).segment(photo(), BOXES)
    got = b.segment(photo(), BOXES)
    assert b.encoder_calls == 1 and b.store_hits == 0
    assert np.array_equal(got.masks, plain.masks) and np.array_equal(got.scores, plain.scores)
    assert store.get(key_b) is not None and store.get(key_a) is not None  # b's own file replaced the copy
