"""Where a project keeps its files, and the crash-safe ways it places and removes them.

A file is complete and synced before a row refers to it, and deleted only after no committed row does: a
crash leaves at worst an unreferenced (hidden, or orphan) file, never a row pointing at a missing or partial
one. Old leftovers of killed processes are cleaned when a project is opened.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from ..processing import ImageError, to_rgb
from .db import Database
from .durable import fsync

IMAGES_DIR = "images"
TRASH_DIR = ".removed"  # removed images' files, one folder per journal entry, until the entry is dropped
ABANDONED_AFTER_S = 86_400  # an add's temporary copy older than this belongs to a process that was killed


def decoded_size(path: Path, name: str | None = None) -> tuple[int, int]:
    """(width, height) of the image file as `to_rgb` returns it (upright), decoding every pixel: a
    truncated or corrupt file is refused here with an ImageError, not later in a run or an export."""
    try:
        rgb = to_rgb(path)
    except ImageError as err:
        if name is None:
            raise
        raise ImageError(str(err).replace(repr(os.fspath(path)), repr(name))) from None
    return rgb.width, rgb.height


def remove_abandoned(folder: Path) -> None:
    """Delete the hidden temporary copies (".adding-*") that killed adds and imports left in images/. Only
    old ones: a live process's copy exists for seconds, never a day."""
    now = time.time()
    for path in folder.glob(".adding-*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > ABANDONED_AFTER_S:
                path.unlink()


def remove_abandoned_trash(folder: Path, db: sqlite3.Connection) -> None:
    """Delete trash folders that no journal entry holds (a removal killed before its commit, an entry dropped
    by a process killed before it deleted the folder). Only old ones, as in `remove_abandoned`."""
    if not folder.is_dir():
        return
    try:
        held = {json.loads(e).get("trash") for (e,) in db.execute("SELECT entry FROM journal")}
    except sqlite3.Error:
        return
    now = time.time()
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            if path.name not in held and now - path.stat().st_mtime > ABANDONED_AFTER_S:
                shutil.rmtree(path)


def keep(source: Path, dest: Path) -> None:
    """Give the file a second name (a hard link; a synced copy where the file system has none). A missing
    source (a file that broke or went) is left missing."""
    if not source.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except FileExistsError:
        if not same_bytes(dest, source):
            raise
    except OSError:
        shutil.copyfile(source, dest)
        fsync(dest)


def same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.is_file() and not a.is_symlink() and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def free_name(db: sqlite3.Connection, name: str, folder: Path | None, pixels: Path | None = None) -> str:
    """`name`, or name_1, name_2, ... : the first not used by an image, nor by a file in `folder`, except
    a file that no image uses and that holds the same bytes as `pixels`: the copy a killed process
    had placed but not yet recorded (the caller holds the write lock, so no live process is between
    placing and recording one), which the caller then replaces. A resumed run thus gives an image the
    name an uninterrupted run would have."""
    stem, suffix = os.path.splitext(name)
    candidate, k = name, 0
    while db.execute("SELECT 1 FROM images WHERE name = ?", (candidate,)).fetchone() or (
            folder is not None and (folder / candidate).exists()
            and not (pixels is not None and same_bytes(folder / candidate, pixels))):
        k += 1
        candidate = f"{stem}_{k}{suffix}"
    return candidate


class Files:
    """Deleting a project's files once the transaction that let them go has committed (or failed)."""

    def __init__(self, database: Database):
        self._db = database
        self.images = database.directory / IMAGES_DIR  # copied-in images
        self.trash = database.directory / TRASH_DIR  # removed images' files, per journal entry

    def remove_unreferenced(self, placed: list[Path]) -> None:
        """After a failed add: delete the files it put under their final names that no image references.
        Under the write lock, so that another process cannot meanwhile have given one of those names to its
        own copy (it reuses a same-bytes orphan's name inside its transaction); a reference means the add
        committed after all (Ctrl-C right after the commit). If the database cannot be asked, the files
        stay: an unreferenced file does no harm, a deleted referenced one loses an image."""
        try:
            with self._db.write() as db:
                for path in placed:
                    if not db.execute("SELECT 1 FROM images WHERE path = ?", (f"{IMAGES_DIR}/{path.name}",)).fetchone():
                        path.unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - see above: keep them
            pass

    def unlink_unreferenced(self, files: list[Path]) -> None:
        """Delete removed images' files from images/ after the commit (a crash in between leaves an orphan file,
        not a row without pixels), under the write lock, sparing a file that an image added or restored
        meanwhile took over (same name, same bytes)."""
        if not files:
            return
        directory = self._db.directory
        with self._db.write() as db:
            for path in files:
                relative = path.relative_to(directory).as_posix() if path.is_relative_to(directory) else None
                if not db.execute("SELECT 1 FROM images WHERE copied = 1 AND path = ?", (relative,)).fetchone():
                    path.unlink(missing_ok=True)

    def drop_trash(self, entries: Iterable[dict]) -> None:
        """Delete the trash folders of journal entries that are gone or undone (after the commit that did it)."""
        for entry in entries:
            if entry.get("trash"):
                shutil.rmtree(self.trash / entry["trash"], ignore_errors=True)

    def discard(self, placed: list[Path]) -> None:
        """After a step that did not commit: what it placed goes (files no image references, trash folders)."""
        self.remove_unreferenced([p for p in placed if not p.is_dir()])
        for folder in (p for p in placed if p.is_dir()):
            shutil.rmtree(folder, ignore_errors=True)
