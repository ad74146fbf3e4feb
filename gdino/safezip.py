"""Extract an uploaded zip without letting it write outside its folder or fill the disk.

Every entry is checked before the first byte is written (paths, symlinks, counts, declared sizes,
compression ratios), and the sizes are enforced again while streaming, since headers can lie. On any
failure the files and folders this call created are removed, so the target is as it was.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import stat
import unicodedata
import zipfile
import zlib
from pathlib import Path

CHUNK = 1 << 20
RATIO_MIN_BYTES = 1 << 20  # small entries may compress extremely well (a blank text file); only large ones are bombs
MAX_NAME_BYTES = 255  # per path part: what Linux, macOS and Windows file systems allow
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeZipError(ValueError):
    """A zip file that is corrupt, not a zip, or not safe to extract; the message names the entry and why."""


def extract_zip(zip_path: str | os.PathLike, target_dir: str | os.PathLike, *, max_files: int = 10_000,
                max_total_bytes: int = 2 * 1024**3, max_ratio: float = 200) -> list[Path]:
    """Extract the files of `zip_path` into `target_dir` (created if missing); returns their paths.

    Skips folder entries and macOS junk (`__MACOSX/`, `.DS_Store`, `._*`). Refuses, with UnsafeZipError
    and before writing anything: absolute paths, drive letters, `..` leading out of the target, NUL
    characters, path parts over MAX_NAME_BYTES, symlinks and other special files, encrypted entries,
    duplicate names (compared case- and Unicode-normalization-insensitively, as macOS and Windows do),
    more than `max_files` files, more than `max_total_bytes` declared in all, an entry over
    RATIO_MIN_BYTES that expands more than `max_ratio` times. Existing files are never overwritten.
    Messages name the zip by its file name and entries by their names in the zip, never a server path.
    """
    target = Path(target_dir).resolve()
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        raise UnsafeZipError(f"{Path(zip_path).name!r} is not a readable zip file: {_reason(err)}") from err
    with archive:
        plan = _plan(archive.infolist(), target, max_files, max_total_bytes, max_ratio)
        created_dirs: list[Path] = []
        written: list[Path] = []
        name, total = "", 0
        try:
            _mkdirs(target, created_dirs)
            for info, dest in plan:
                name = info.filename
                _mkdirs(dest.parent, created_dirs)
                total = _copy_entry(archive, info, dest, written, total, max_total_bytes)
        except BaseException as err:
            for path in reversed(written):
                path.unlink(missing_ok=True)
            for folder in reversed(created_dirs):  # innermost first; only ones left empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if isinstance(err, (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError)):
                raise UnsafeZipError(f"could not extract the zip entry {name!r}: {_reason(err)}") from err
            raise
    return [dest for _, dest in plan]


def _reason(err: BaseException) -> str:
    """An error's text without the file path an OSError carries (it would name a server folder)."""
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def _plan(infos: list[zipfile.ZipInfo], target: Path, max_files: int, max_total_bytes: int,
          max_ratio: float) -> list[tuple[zipfile.ZipInfo, Path]]:
    """The (entry, destination) pairs to extract, after every check that headers allow."""
    plan, seen, declared = [], set(), 0
    files = [info for info in infos if not info.is_dir()]
    if len(files) > max_files:
        raise UnsafeZipError(f"the zip holds {len(files)} files, more than the limit of {max_files}")
    for info in files:
        name = info.filename
        if "\0" in info.orig_filename:  # zipfile cuts the name there; other tools may not
            raise UnsafeZipError(f"the zip entry {info.orig_filename!r} has a NUL character in its name")
        if _is_junk(name):
            continue
        rel = _safe_relative(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeZipError(f"the zip entry {name!r} is a symbolic link; links are refused (they can point "
                                 "outside the folder)")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise UnsafeZipError(f"the zip entry {name!r} is not a regular file (mode {oct(mode)})")
        if info.flag_bits & 0x1:
            raise UnsafeZipError(f"the zip entry {name!r} is encrypted; upload a zip without a password")
        key = unicodedata.normalize("NFC", rel).casefold()
        if key in seen:
            raise UnsafeZipError(f"the zip holds {name!r} twice (names compared case-insensitively)")
        seen.add(key)
        declared += info.file_size
        if declared > max_total_bytes:
            raise UnsafeZipError(f"the zip expands to more than {max_total_bytes} bytes (reached at {name!r}); "
                                 "split it or raise max_total_bytes")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_MIN_BYTES and ratio > max_ratio:
            raise UnsafeZipError(f"the zip entry {name!r} expands {ratio:.0f} times ({info.compress_size} -> "
                                 f"{info.file_size} bytes), more than max_ratio={max_ratio}: a zip bomb?")
        dest = target.joinpath(*rel.split("/"))
        if not dest.resolve().is_relative_to(target):  # e.g. through a symlinked folder already in the target
            raise UnsafeZipError(f"the zip entry {name!r} would be written outside the target folder")
        if dest.exists() or dest.is_symlink():
            raise UnsafeZipError(f"the zip entry {name!r} would overwrite an existing file; extract into an empty folder")
        plan.append((info, dest))
    return plan


def _is_junk(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return "__MACOSX" in parts or parts[-1] == ".DS_Store" or parts[-1].startswith("._")


def _safe_relative(name: str) -> str:
    """A zip entry name -> a normalized relative posix path inside the target, or UnsafeZipError."""
    path = name.replace("\\", "/")  # zips made on Windows may use either separator
    if "\0" in path:
        raise UnsafeZipError(f"the zip entry {name!r} has a NUL character in its name")
    if path.startswith("/") or _DRIVE.match(path):
        raise UnsafeZipError(f"the zip entry {name!r} has an absolute path; only relative paths are extracted")
    path = posixpath.normpath(path)
    if path == ".." or path.startswith("../"):
        raise UnsafeZipError(f"the zip entry {name!r} climbs out of the target folder with '..'")
    if path in ("", "."):
        raise UnsafeZipError(f"the zip entry {name!r} has no file name")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in path.split("/")):
        raise UnsafeZipError(f"the zip entry {name[:80]!r}... has a file or folder name too long for a file system "
                             f"(over {MAX_NAME_BYTES} bytes)")
    return path


def _mkdirs(folder: Path, created: list[Path]) -> None:
    """mkdir -p, remembering which folders this call created (outermost first) so they can be removed."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        created.append(path)


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, written: list[Path], total: int,
                max_total_bytes: int) -> int:
    """Stream one entry to a new file (appended to `written` once created), counting the real bytes against
    the limits; returns the new total."""
    size = 0
    with archive.open(info) as src, open(dest, "xb") as out:  # "x": never overwrite, nor follow a planted symlink
        written.append(dest)
        while chunk := src.read(CHUNK):
            size += len(chunk)
            total += len(chunk)
            if size > info.file_size:
                raise UnsafeZipError(f"the zip entry {info.filename!r} holds more bytes than its header declares "
                                     f"({info.file_size}); the zip is corrupt or malicious")
            if total > max_total_bytes:
                raise UnsafeZipError(f"the zip expands to more than {max_total_bytes} bytes (reached at "
                                     f"{info.filename!r}); split it or raise max_total_bytes")
            out.write(chunk)
    return total
