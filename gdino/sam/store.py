"""Image embeddings kept on disk, so that a click on an image embedded before (by an auto-label run, a
prefetch, another process) runs only SAM's prompt decoder.

One file per (model, image content): `<key>.safetensors`, float16, its sizes and key in the header. Written
whole to a temporary file, synced, then renamed into place: a kill leaves the old state or the new file,
never a torn one under the real name; a torn or foreign file found anyway (a copy, a bad disk) reads as
missing and is removed, never a crash. Bounded: after each write the least recently used files go until the
folder holds at most `max_bytes`. Nothing here is a label: losing the folder costs only time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

import torch

from .backend import Embedding

PROJECT_FOLDER = (".cache", "sam")  # under a project's folder
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB: ~250 SAM 2.1 embeddings (8.4 MB each in float16), ~1000 of SAM 1 (2 MB)
MAX_FILE_BYTES = 64 << 20  # larger than any embedding: a bigger file is not ours
SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"


class EmbeddingStore:
    def __init__(self, folder: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)

    def _path(self, key: str) -> Path:
        if not key or not all(c.isalnum() or c in "-_" for c in key):
            raise ValueError(f"an embedding key is letters, digits, '-' and '_', got {key!r}")
        return self.folder / f"{key}{SUFFIX}"

    def get(self, key: str) -> Embedding | None:
        """The embedding kept under `key` (float16 tensors on the CPU), or None: absent, torn, not a regular
        file of ours (a link is never followed), or written for another key."""
        from safetensors.torch import load

        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
                return None
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            from safetensors import safe_open  # noqa: F401  (the header is read by load below)

            tensors = load(data)
            meta = _metadata(data)
            if meta.get("key") != key:
                raise ValueError("written for another key")
            emb = Embedding({k: v for k, v in tensors.items()}, _pair(meta["input_size"]), _pair(meta["original_size"]))
        except Exception:  # torn, foreign or damaged: recompute, and do not keep reading it
            self._drop(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path, follow_symlinks=False)  # most recently used
        return emb

    def put(self, key: str, emb: Embedding) -> bool:
        """Keep `emb` under `key` (float16). False when it could not be written (a full disk, a read-only
        folder): the caller goes on without it."""
        from safetensors.torch import save

        path = self._path(key)
        tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in emb.features.items()}
        meta = {"key": key, "input_size": "{},{}".format(*emb.input_size),
                "original_size": "{},{}".format(*emb.original_size)}
        temp = self.folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            data = save(tensors, metadata=meta)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            os.replace(temp, path)
        except OSError:
            temp.unlink(missing_ok=True)
            return False
        self.evict()
        return True

    def evict(self) -> int:
        """Remove the least recently used files until the folder holds at most max_bytes. Returns how many."""
        entries = []
        try:
            with os.scandir(self.folder) as it:
                for e in it:
                    if e.name.endswith(SUFFIX) and e.is_file(follow_symlinks=False):
                        info = e.stat(follow_symlinks=False)
                        entries.append((info.st_mtime, info.st_size, Path(e.path)))
        except OSError:
            return 0
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            self._drop(path)
            total -= size
            removed += 1
        return removed

    @staticmethod
    def _drop(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()


def project_store(project_path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> EmbeddingStore:
    """The embedding store in a project's folder (PROJECT_FOLDER)."""
    return EmbeddingStore(Path(project_path).joinpath(*PROJECT_FOLDER), max_bytes)


def _metadata(data: bytes) -> dict:
    import json
    import struct

    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def _pair(text: str) -> tuple[int, int]:
    a, b = (int(v) for v in text.split(","))
    return a, b
