"""Image embeddings kept on disk, so that a click on an image embedded before (by an auto-label run, a
prefetch, another process) runs only SAM's prompt decoder. Nothing here is a label: losing the folder costs
only time, and the store never raises for what it finds on disk.

One file per (model, image content): `<key>.safetensors` (a plain safetensors file), float16, batch-first
tensors, and in its header: the key, the sizes, the tensor list (names, dtype, shapes) and a CRC-32 of the
tensor bytes. A file is read back only when all of it agrees: a torn, truncated, foreign (another key, another
backend, another dtype) or damaged file reads as missing, and the put that follows the recompute replaces it.

Safe against kills and power cuts: a file is written whole under a temporary name (`.tmp-<host>-<pid>-...`),
synced, then renamed into place, so the real name holds the old state or the new file, never part of one.
A temporary file left by a killed process is removed by the next eviction (its process is gone, or it is
older than TEMP_MAX_AGE_S) and never read or counted as an embedding.

Never follows a link: the folder's own components below `root` (for a project: `.cache` and `sam`) must be
real directories, and every file is opened relative to the folder's descriptor without following links. A
link, a hard link (more than one name), a FIFO (opened without blocking), a directory or anything that is not
a regular file of ours reads as missing and is never written through.

Bounded: after each put the least recently used files (a get refreshes) go until the folder's embeddings take
at most `max_bytes`; an embedding larger than the bound is not kept at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import threading
import time
import zlib
from pathlib import Path

import torch

from .backend import Embedding

PROJECT_FOLDER = (".cache", "sam")  # under a project's folder
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB: ~250 SAM 2.1 embeddings (8.4 MB each in float16), ~1000 of SAM 1 (2 MB)
MAX_FILE_BYTES = 64 << 20  # larger than any embedding: a bigger file is not ours
MAX_HEADER_BYTES = 64 << 10  # our headers are < 1 KiB
MAX_RANK = 8
SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
TEMP_MAX_AGE_S = 600  # a temporary file this old is a leftover whatever its process (a write takes < 1 s)
FORMAT = "gdino-sam-embedding/1"

_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_HASHED = re.compile(r"_[0-9a-f]{64}")  # the name of a key that is not a plain name
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
# descriptor-relative calls (os.replace takes them where os.rename does) keep a swapped-in link out;
# without them the store stays off
_SUPPORTED = {os.open, os.mkdir, os.unlink, os.rename} <= os.supports_dir_fd and os.scandir in os.supports_fd


def file_name(key: str) -> str | None:
    """The file an embedding key is kept in: the key itself where it is a plain name (letters, digits, '.',
    '-', '_', not starting with a dot, <= 200 characters), else '_' + its SHA-256. None for a non-string."""
    if not isinstance(key, str):
        return None
    if _SAFE_KEY.fullmatch(key):
        return key + SUFFIX
    return "_" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest() + SUFFIX


class EmbeddingStore:
    def __init__(self, folder: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES, *,
                 root: str | os.PathLike | None = None):
        """folder: where the files go; created on the first put. root: the part of `folder`'s path that may
        hold links: every component below it must be a real directory, never a link. By default the folder's
        parent, created with the folder; given (a project's folder), never created: a project that is gone is
        not brought back by a put. max_bytes: the bound on the embeddings' total size (>= 0)."""
        self.folder = Path(folder)
        self.root = Path(root) if root is not None else self.folder.parent
        self._make_root = root is None
        self._parts = self.folder.relative_to(self.root).parts
        if not self._parts or any(p in ("", ".", "..") for p in self._parts):
            raise ValueError(f"the embedding folder {self.folder} must lie below {self.root}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes is a whole number of bytes >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._last_stamp = 0

    # ------------------------------------------------------------------------------------------ reading

    def get(self, key: str) -> Embedding | None:
        """The embedding kept under `key` (float16 tensors on the CPU, exactly as put), or None: absent,
        torn, written for another key, not a regular file of ours, or the folder unusable."""
        name = file_name(key)
        if name is None or not _SUPPORTED:
            return None
        try:
            folder = self._open_folder(create=False)
        except OSError:
            return None
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=folder)
        except OSError:
            os.close(folder)
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or not 8 < info.st_size <= MAX_FILE_BYTES:
                return None
            data = _read_all(fd, info.st_size)
            emb = decode(data, key) if data is not None else None
            if emb is not None:
                stamp = self._stamp()
                with contextlib.suppress(OSError):  # a read-only folder: still a good embedding
                    os.utime(fd, ns=(stamp, stamp))  # most recently used
            return emb
        except OSError:
            return None
        finally:
            os.close(fd)
            os.close(folder)

    # ------------------------------------------------------------------------------------------ writing

    def put(self, key: str, emb: Embedding) -> bool:
        """Keep `emb` under `key` (as float16). True when it was written whole; False when not (a full disk,
        a read-only or linked folder, larger than the bound, not float16-representable): nothing partial is
        left under the key, and the caller goes on with the embedding it has."""
        name = file_name(key)
        if name is None or not _SUPPORTED:
            return False
        data = encode(key, emb)
        if data is None or len(data) > min(self.max_bytes, MAX_FILE_BYTES):
            return False
        temp = f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            folder = self._open_folder(create=True)
        except OSError:
            return False
        placed = False
        try:
            fd = os.open(temp, _WRITE_FLAGS, 0o600, dir_fd=folder)
            try:
                _write_all(fd, data)
                os.fsync(fd)
                stamp = self._stamp()
                os.utime(fd, ns=(stamp, stamp))
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            placed = True
            with contextlib.suppress(OSError):
                os.fsync(folder)  # the rename itself survives a power cut
        except OSError:
            return False
        finally:
            if not placed:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=folder)
            os.close(folder)
        self.evict()
        return True

    # ----------------------------------------------------------------------------------------- the bound

    def evict(self) -> int:
        """Remove the least recently used embeddings until they take at most max_bytes, and the temporary
        files of writers that are gone. Only regular files named like ours are counted or removed; links,
        directories and other names are left alone. Returns how many embeddings were removed."""
        if not _SUPPORTED:
            return 0
        try:
            folder = self._open_folder(create=False)
        except OSError:
            return 0
        try:
            kept = []
            now = time.time()
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if entry.name.startswith(TEMP_PREFIX):
                        if _leftover(entry.name, info, now):
                            _unlink(entry.name, folder)
                    elif _ours(entry.name) and stat.S_ISREG(info.st_mode):
                        kept.append((info.st_mtime_ns, entry.name, info.st_size))
            total = sum(size for _, _, size in kept)
            removed = 0
            for _, name, size in sorted(kept):
                if total <= self.max_bytes:
                    break
                removed += _unlink(name, folder)
                total -= size
            return removed
        except OSError:
            return 0
        finally:
            os.close(folder)

    # ----------------------------------------------------------------------------------------- helpers

    def _open_folder(self, create: bool) -> int:
        """A descriptor of the folder, reached from `root` one component at a time without following a link
        (O_NOFOLLOW on each). Raises OSError when a component is missing (and not created), a link, or not a
        directory."""
        if create and self._make_root:
            os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            for part in self._parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)  # private, like a workspace project
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _stamp(self) -> int:
        """Now, in ns, strictly after every stamp this store gave before: the least-recently-used order of
        this process's puts and gets is exact even where the clock's grain is coarser than their pace."""
        with self._lock:
            self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
            return self._last_stamp


def project_store(project_path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> EmbeddingStore:
    """The embedding store in a project's folder (PROJECT_FOLDER): `.cache` and `sam` below the project must be
    real directories (a link there makes the store unusable, never followed)."""
    return EmbeddingStore(Path(project_path).joinpath(*PROJECT_FOLDER), max_bytes, root=project_path)


# ------------------------------------------------------------------------------------------- the format

def encode(key: str, emb: Embedding) -> bytes | None:
    """An embedding -> the bytes of its file (safetensors: u64 header length, JSON header padded to 8 bytes,
    the float16 tensors in name order). None where it cannot be kept exactly: not tensors, a rank outside
    1..MAX_RANK, an empty tensor, or a value that float16 cannot hold (it would come back as inf)."""
    try:
        tensors = {}
        for name in sorted(emb.features):
            t = emb.features[name].detach().to("cpu", torch.float16).contiguous()
            if not isinstance(name, str) or not name or not 1 <= t.dim() <= MAX_RANK or t.numel() == 0:
                return None
            if not bool(torch.isfinite(t).all()):
                return None
            tensors[name] = t
        sizes = [_size_text(emb.input_size), _size_text(emb.original_size)]
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    if not tensors:
        return None
    header: dict = {}
    offset = 0
    for name, t in tensors.items():
        header[name] = {"dtype": "F16", "shape": list(t.shape), "data_offsets": [offset, offset + 2 * t.numel()]}
        offset += 2 * t.numel()
    body = b"".join(t.view(torch.uint8).reshape(-1).numpy().tobytes() for t in tensors.values())
    header["__metadata__"] = {"format": FORMAT, "key": key, "input_size": sizes[0], "original_size": sizes[1],
                              "tensors": _describe(header), "crc32": f"{zlib.crc32(body):08x}"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + body


def decode(data: bytearray, key: str) -> Embedding | None:
    """The bytes of a file -> its embedding, if and only if it is a whole file of ours written for `key`:
    the format and key in the header, every tensor F16 with its stated shape, the tensors laid end to end
    over exactly the rest of the file, the tensor list and the CRC-32 as recorded. The tensors share `data`."""
    try:
        if len(data) < 8:
            return None
        (n,) = struct.unpack_from("<Q", data, 0)
        start = 8 + n
        if n > MAX_HEADER_BYTES or start > len(data) or start % 8:
            return None
        header = json.loads(bytes(data[8:start]))
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
            return None
        input_size, original_size = _size(meta.get("input_size")), _size(meta.get("original_size"))
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        if input_size is None or original_size is None or not entries or meta.get("tensors") != _describe(entries):
            return None
        features, offset = {}, 0
        for name in sorted(entries):  # written in name order, end to end
            e = entries[name]
            shape = e.get("shape") if isinstance(e, dict) else None
            if (e.get("dtype") != "F16" or not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK
                    or not all(type(d) is int and d >= 1 for d in shape)):
                return None
            size = 2 * math.prod(shape)
            if e.get("data_offsets") != [offset, offset + size] or start + offset + size > len(data):
                return None
            features[name] = (start + offset, shape)
            offset += size
        if start + offset != len(data) or meta.get("crc32") != f"{zlib.crc32(memoryview(data)[start:]):08x}":
            return None
        tensors = {name: torch.frombuffer(data, dtype=torch.float16, count=math.prod(shape), offset=at).reshape(shape)
                   for name, (at, shape) in features.items()}
        return Embedding(tensors, input_size, original_size)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError, struct.error):
        return None


def _describe(entries: dict) -> str:
    """'name:dtype:1x256x64x64;...' in name order: the tensor list a header must keep."""
    parts = []
    for name in sorted(k for k in entries if k != "__metadata__"):
        e = entries[name]
        if not isinstance(e, dict) or not isinstance(e.get("shape"), list):
            return ""
        parts.append(f"{name}:{e.get('dtype')}:{'x'.join(str(d) for d in e['shape'])}")
    return ";".join(parts)


def _size_text(size) -> str:
    h, w = (int(v) for v in size)
    if not (0 < h < 1 << 20 and 0 < w < 1 << 20):
        raise ValueError(f"bad size {size}")
    return f"{h},{w}"


def _size(text) -> tuple[int, int] | None:
    """'h,w' -> (h, w) of positive whole numbers, else None."""
    if not isinstance(text, str) or not re.fullmatch(r"[1-9][0-9]{0,6},[1-9][0-9]{0,6}", text):
        return None
    h, w = (int(v) for v in text.split(","))
    return h, w


# -------------------------------------------------------------------------------------------- the folder

def _ours(name: str) -> bool:
    """A name the store writes embeddings under (never a temporary file, never a dot file)."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
    return _SAFE_KEY.fullmatch(stem) is not None or _HASHED.fullmatch(stem) is not None


def _leftover(name: str, info: os.stat_result, now: float) -> bool:
    """A temporary file no writer will rename: older than TEMP_MAX_AGE_S, or written on this host by a process
    that is gone."""
    if now - info.st_mtime > TEMP_MAX_AGE_S:
        return True
    host, _, rest = name[len(TEMP_PREFIX):].partition("-")
    pid = rest.partition("-")[0]
    if host != _HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False


def _unlink(name: str, folder: int) -> bool:
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:  # gone already (another process evicted it), a read-only folder
        return False
    return True


def _read_all(fd: int, size: int) -> bytearray | None:
    """Exactly `size` bytes from the start of fd, or None if the file is shorter now."""
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = os.preadv(fd, [view[got:]], got) if hasattr(os, "preadv") else os.readv(fd, [view[got:]])
        if n <= 0:
            return None
        got += n
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
