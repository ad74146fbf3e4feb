"""The labeling project store: images, classes, objects and review state in one SQLite file.

A project is a directory holding `project.sqlite` and `images/` (images copied in). Images can also be
referenced where they lie (`copy=False`), by absolute path, or in an object store by URI
(`add_reference`, `gdino.sources`). Every public mutating call is one transaction, committed before it
returns: a process killed at any moment loses at most the change in flight, and the database is never
left half-written. `batch()` groups many calls into one commit (each call still all or nothing).

Coordinates: boxes are xyxy in pixels of the UPRIGHT image (EXIF orientation applied, the frame
`gdino.processing.to_rgb` returns), clipped to [0, width] x [0, height]. Masks are COCO RLE dicts
`{"size": [height, width], "counts": ...}` of that same frame; the store checks their shape, not their
contents.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import history
from .durable import fsync
from .processing import MAX_PIXELS, ImageError, to_rgb
from .project_schema import (
    MIGRATIONS,
    SOURCES,
    STATUSES,
    ProjectError,
    StoreError,
    check_box,
    check_score,
    check_source,
    check_status,
    class_names,
    connect,
    drop_unused_phrases,
    image_name,
    mask_json,
    migrate,
    next_class_position,
    show_name,
    to_json,
    translate,
)
from .sources import SourceError, check_uri, is_uri, name_of

__all__ = ["ImageRecord", "NewImage", "ObjectRecord", "Project", "ProjectError", "STATUSES", "SOURCES", "ORDERS"]

ORDERS = ("name", "added", "confidence")
DB_NAME = "project.sqlite"
IMAGES_DIR = "images"
TRASH_DIR = ".removed"  # removed images' files, one folder per journal entry, until the entry is dropped

_UNSET: Any = object()  # "argument not given", so that mask=None can mean "remove the mask"


@dataclass(frozen=True)
class ImageRecord:
    id: int
    name: str  # unique within the project (case-insensitively), e.g. the file name
    path: Path | None  # absolute path of the pixels; None for an image in an object store (then `uri`)
    width: int  # upright frame: EXIF orientation applied
    height: int
    status: str  # one of STATUSES
    min_score: float | None  # lowest score among its model objects; None without any
    num_objects: int
    uri: str | None = None  # an object-store URI (s3://...) for an image referenced there (`gdino.sources`)
    # returned by add_image / add_reference: True when the key was already taken (this call added nothing)
    existed: bool = field(default=False, compare=False, repr=False)

    @property
    def location(self) -> Path | str:
        """Where the pixels are: the local path, or the URI (`gdino.sources.read_image` reads both)."""
        return self.uri if self.uri is not None else self.path


@dataclass(frozen=True)
class ObjectRecord:
    id: int
    image_id: int
    class_name: str  # the class, or for a phrase object the phrase
    box: tuple[float, float, float, float]  # xyxy, pixels of the upright image
    score: float | None
    source: str  # "model" or "manual"
    mask: dict | None  # COCO RLE {"size": [h, w], "counts": ...} of the upright image
    phrase: bool = False  # labeled with a free-text phrase not yet mapped to a class (see Project.phrases)
    clicks: dict | None = None  # SAM clicks behind the mask: {"box": xyxy prompt or None, "points": [[x, y, positive]]}


# sees objects of an edit, undo or redo as stored at one moment of its transaction (None: absent); raising refuses it
Guard = Callable[[dict[int, "ObjectRecord | None"]], None]


@dataclass(frozen=True)
class ObjectState:
    """What an edit makes an object (`Project.edit_objects`): its label, box and the rest, as stored."""

    class_name: str  # a class (added if the project lacks it), or the object's own phrase
    box: tuple[float, float, float, float]  # xyxy, pixels of the upright image
    score: float | None = None
    source: str = "manual"
    mask: dict | None = None
    clicks: dict | None = None

    @classmethod
    def of(cls, record: ObjectRecord) -> ObjectState:
        return cls(record.class_name, record.box, record.score, record.source, record.mask, record.clicks)


@dataclass(frozen=True)
class NewImage:
    """One image of a bulk add (`Project.add_labeled`): a file already decoded and checked by the caller,
    with the labels it comes with. objects: dicts with box (xyxy upright pixels), class_name, optional
    score and mask (COCO RLE of the upright image)."""

    path: Path
    name: str
    width: int  # upright
    height: int
    status: str = "unlabeled"
    objects: tuple[dict, ...] = ()
    source: str = "manual"  # the objects' source
    key: str | None = None  # as in Project.add_image: an image whose key the project has is not added again


_IMAGE_SELECT = """
    SELECT i.id, i.name, i.path, i.copied, i.width, i.height, i.status,
           (SELECT MIN(o.score) FROM objects o WHERE o.image_id = i.id AND o.source = 'model') AS min_score,
           (SELECT COUNT(*) FROM objects o WHERE o.image_id = i.id) AS num_objects
    FROM images i"""
_ORDER_BY = {
    "name": "i.name COLLATE NOCASE, i.id",
    "added": "i.id",
    "confidence": "min_score IS NULL, min_score, i.id",  # least confident first, images without model objects last
}
_OBJECT_SELECT = """
    SELECT o.id, o.image_id, c.name, o.x0, o.y0, o.x1, o.y1, o.score, o.source, o.mask, c.kind, o.clicks
    FROM objects o JOIN classes c ON c.id = o.class_id"""


class Project:
    """An open project. Use `Project.create` / `Project.open`, ideally as a context manager.

    One connection, guarded by a lock, so the app's worker threads may share an instance. Several
    processes may open the same project: writes take SQLite's write lock (BEGIN IMMEDIATE).
    """

    def __init__(self, directory: Path, db: sqlite3.Connection, *, read_only: bool = False):
        self._dir = directory
        self._db: sqlite3.Connection | None = db
        self._lock = threading.RLock()
        self._batch_depth = 0  # > 0 inside batch(): writes are savepoints of its one transaction
        self._batch_lost: str | None = None  # why the batch's transaction ended early (a full disk): refuse the rest
        self.read_only = read_only  # on read-only storage: every read works, every change is refused

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | os.PathLike, classes: Iterable[str] = (), *, exist_ok: bool = False) -> Project:
        """Make a new project in `directory` (created if missing). With exist_ok, an existing project is
        opened instead and `classes` missing from it are added."""
        classes = class_names(classes)  # before anything is written
        directory = Path(directory).expanduser().resolve()
        if (directory / DB_NAME).exists() and not exist_ok:
            raise ProjectError(f"{directory} already holds a project; use Project.open({str(directory)!r}) "
                               "or pass exist_ok=True")
        if directory.exists() and not directory.is_dir():
            raise ProjectError(f"{directory} is a file, not a directory; choose a directory for the project")
        try:
            (directory / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _os_error(err, directory) from err
        project = cls._connect(directory)
        if project.read_only:
            project.close()
            raise ProjectError(f"{directory} is on read-only storage; a project can only be created on writable storage")
        if classes:
            try:
                project.add_classes(classes)
            except BaseException:
                project.close()
                raise
        return project

    @classmethod
    def open(cls, directory: str | os.PathLike) -> Project:
        """Open an existing project, migrating its database if an older gdino wrote it."""
        directory = Path(directory).expanduser().resolve()
        if not (directory / DB_NAME).is_file():
            raise ProjectError(f"{directory} is not a gdino project (it has no {DB_NAME})")
        return cls._connect(directory)

    @classmethod
    def _connect(cls, directory: Path) -> Project:
        path = directory / DB_NAME
        db = None
        try:
            db = connect(path)
            migrate(db)
        except sqlite3.OperationalError as err:
            if db is not None:
                db.close()
            if path.is_file() and not os.access(directory, os.W_OK):  # read-only storage: open it for reading
                return cls._connect_read_only(directory)
            raise translate(err, directory) from err
        except sqlite3.DatabaseError as err:
            if db is not None:
                db.close()
            raise ProjectError(f"{path} is not a readable project database ({err})") from err
        except BaseException:
            if db is not None:
                db.close()
            raise
        _remove_abandoned(directory / IMAGES_DIR)
        _remove_abandoned_trash(directory / TRASH_DIR, db)
        return cls(directory, db)

    @classmethod
    def _connect_read_only(cls, directory: Path) -> Project:
        wal = directory / (DB_NAME + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            raise ProjectError(f"{directory} is on read-only storage and its last changes are still in {wal.name}, "
                               "which only writable storage can read back: copy the folder to a writable disk")
        try:
            db = connect(directory / DB_NAME, read_only=True)
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise ProjectError(f"{directory / DB_NAME} is not a readable project database ({err})") from err
        if version != len(MIGRATIONS):
            db.close()
            raise ProjectError(f"{directory} is on read-only storage and was written by another gdino version (schema "
                               f"{version}, this one uses {len(MIGRATIONS)}); copy it to writable storage to open it")
        return cls(directory, db, read_only=True)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The project directory (absolute)."""
        return self._dir

    @property
    def schema_version(self) -> int:
        with self._read() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed on success and rolled back on any exception. SQLite's failures
        (busy past the timeout, disk full, read-only) come out as ProjectErrors that say what to do.
        Inside `batch()`: a savepoint of the batch's transaction, undone alone on an exception."""
        with self._lock:
            db = self._open_db()
            self._check_writable()
            if self._batch_depth:
                with self._savepoint(db):
                    yield db
                return
            try:
                db.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
            except sqlite3.Error as err:
                raise translate(err, self._dir) from err
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as err:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(err, sqlite3.Error):
                    raise translate(err, self._dir) from err
                raise

    @contextmanager
    def _savepoint(self, db: sqlite3.Connection) -> Iterator[None]:
        """A write inside batch(): undone alone on an exception. If SQLite ended the whole transaction (a full
        disk, an I/O error), the batch is lost: every later write in it is refused and the batch raises."""
        if self._batch_lost is not None:
            raise StoreError(f"{self._batch_lost} (an earlier change of this batch failed; none of it was stored)")
        name = f"w{self._batch_depth}"
        self._batch_depth += 1
        try:
            try:
                db.execute(f"SAVEPOINT {name}")
            except sqlite3.Error as err:
                raise translate(err, self._dir) from err
            try:
                yield
                if self._batch_lost is not None:  # a nested write failed and its caller went on: no RELEASE now
                    raise StoreError(f"{self._batch_lost} (none of this batch was stored)")
            except BaseException as err:
                translated = translate(err, self._dir) if isinstance(err, sqlite3.Error) else err
                if db.in_transaction:
                    db.execute(f"ROLLBACK TO {name}")
                    db.execute(f"RELEASE {name}")
                else:  # SQLite rolled the whole transaction back
                    self._batch_lost = str(translated)
                if translated is not err:
                    raise translated from err
                raise
            try:
                db.execute(f"RELEASE {name}")
            except sqlite3.Error as err:
                self._batch_lost = str(translate(err, self._dir))
                raise translate(err, self._dir) from err
        finally:
            self._batch_depth -= 1

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many changes, one commit (e.g. a cluster's results, a few hundred images at a time): each call
        inside is still all or nothing (a savepoint; one that raises leaves the others), and nothing is
        stored until the block ends; an exception out of the block, or a kill, stores none of it. A failure
        that ends SQLite's transaction (a full disk) loses the whole batch: the block then raises, even if
        the caller went on. Other threads' writes to this instance wait for the block (it holds the lock
        and SQLite's write lock). Files that calls inside place (add_image's copies) are not rolled back
        with it: keep such calls out of a batch."""
        with self._lock:
            outermost = self._batch_depth == 0
            try:
                with self._write():
                    self._batch_depth += 1
                    try:
                        yield
                    finally:
                        self._batch_depth -= 1
                    if self._batch_lost is not None and outermost:
                        raise StoreError(f"{self._batch_lost} (none of this batch was stored)")
            finally:
                if outermost:
                    self._batch_lost = None

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._open_db()
            if self._batch_depth:  # inside batch(): its transaction is the snapshot, with its own changes
                try:
                    yield db
                except sqlite3.Error as err:
                    raise translate(err, self._dir) from err
                return
            try:
                db.execute("BEGIN")  # one snapshot for the several queries of a read
                try:
                    yield db
                finally:
                    if db.in_transaction:
                        db.execute("COMMIT")
            except sqlite3.Error as err:
                raise translate(err, self._dir) from err

    def _check_writable(self) -> None:
        if self.read_only:
            raise translate(sqlite3.OperationalError("readonly"), self._dir)

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise ProjectError(f"the project {self._dir} is closed; open it again")
        return self._db

    # -- classes -----------------------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        with self._read() as db:
            return [name for (name,) in db.execute("SELECT name FROM classes WHERE kind = 'class' ORDER BY position, id")]

    @property
    def phrases(self) -> list[str]:
        """Free-text phrases that label objects but are not classes yet (the app's free-text prompts find
        them; `map_phrase` turns them into classes). Not in `classes`, not exported."""
        with self._read() as db:
            return [name for (name,) in db.execute(
                "SELECT c.name FROM classes c WHERE c.kind = 'phrase' AND EXISTS (SELECT 1 FROM objects o "
                "WHERE o.class_id = c.id) ORDER BY c.position, c.id")]

    def add_classes(self, names: Iterable[str]) -> list[str]:
        """Append classes. Names already present (case-insensitively) are left as they are, so the call
        can be repeated; returns the names actually added."""
        names = class_names(names)
        with self._write() as db:
            return self._add_classes(db, names)

    @staticmethod
    def _add_classes(db: sqlite3.Connection, names: list[str]) -> list[str]:
        """A name that is a phrase makes that phrase a class (its objects with it), respelled as given."""
        rows = {n.casefold(): (cid, kind) for cid, n, kind in db.execute("SELECT id, name, kind FROM classes")}
        added = []
        for name in names:
            cid, kind = rows.get(name.casefold(), (None, None))
            if kind == "class":
                continue
            position = next_class_position(db)
            if cid is None:
                db.execute("INSERT INTO classes (name, position) VALUES (?, ?)", (name, position))
            else:
                db.execute("UPDATE classes SET name = ?, kind = 'class', position = ? WHERE id = ?", (name, position, cid))
            rows[name.casefold()] = (cid, "class")
            added.append(name)
        return added

    @staticmethod
    def _add_phrases(db: sqlite3.Connection, names: list[str]) -> None:
        """Phrases the project lacks (a name that is already a class or phrase stays what it is)."""
        known = {n.casefold() for (n,) in db.execute("SELECT name FROM classes")}
        for name in names:
            if name.casefold() not in known:
                position = next_class_position(db)
                db.execute("INSERT INTO classes (name, position, kind) VALUES (?, ?, 'phrase')", (name, position))
                known.add(name.casefold())

    def map_phrase(self, phrase: str, class_name: str) -> int:
        """Give every object labeled with a free-text `phrase` the class `class_name` (an existing class,
        matched case-insensitively, or a new one, added at the end of the list), in one transaction. The
        objects keep their source, score and mask. Returns how many objects it moved."""
        (target,) = class_names([class_name])
        with self._write() as db:
            row = db.execute("SELECT id, kind FROM classes WHERE name = ?", (str(phrase).strip(),)).fetchone()
            if row is None or row[1] != "phrase":
                raise ProjectError(f"{phrase!r} is not a phrase found by a free-text prompt in this project; "
                                   f"its phrases are {self._names(db, 'phrase')}")
            phrase_id = row[0]
            moved = db.execute("SELECT COUNT(*) FROM objects WHERE class_id = ?", (phrase_id,)).fetchone()[0]
            other = db.execute("SELECT id FROM classes WHERE name = ? AND id != ?", (target, phrase_id)).fetchone()
            if other is None:  # a new class: the phrase's row, renamed, is promoted to it
                db.execute("UPDATE classes SET name = ? WHERE id = ?", (target, phrase_id))
            self._add_classes(db, [target])  # promotes that row, or another phrase named so; a class stays
            if other is not None:  # an existing class (or another phrase, now a class): the objects join it
                db.execute("UPDATE objects SET class_id = ? WHERE class_id = ?", (other[0], phrase_id))
                db.execute("DELETE FROM classes WHERE id = ?", (phrase_id,))
        return moved

    @staticmethod
    def _names(db: sqlite3.Connection, kind: str) -> list[str]:
        return [n for (n,) in db.execute("SELECT name FROM classes WHERE kind = ? ORDER BY position, id", (kind,))]

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class; its objects keep it (they reference the class, not the name)."""
        (new,) = class_names([new])
        with self._write() as db:
            class_id = self._class_id(db, old)
            clash = db.execute("SELECT name, kind FROM classes WHERE name = ? AND id != ?", (new, class_id)).fetchone()
            if clash:
                what = "a found phrase is named" if clash[1] == "phrase" else "the class"
                raise ProjectError(f"cannot rename {old!r} to {new!r}: {what} {clash[0]!r} already exists "
                                   "(names are compared case-insensitively)")
            db.execute("UPDATE classes SET name = ? WHERE id = ?", (new, class_id))

    def remove_class(self, name: str, *, delete_objects: bool = False) -> None:
        """Remove a class. Refused while objects use it, unless delete_objects=True deletes them too; that
        removal is an entry of the project's journal: `undo` on any image puts the class and every object back."""
        with self._write() as db:
            class_id = self._class_id(db, name)
            used = db.execute("SELECT COUNT(*) FROM objects WHERE class_id = ?", (class_id,)).fetchone()[0]
            if used and not delete_objects:
                raise ProjectError(f"the class {show_name(name)} is used by {used} object(s); pass delete_objects=True to "
                                   "delete them with it, or rename_class it instead")
            if not used:  # no labels go: nothing to undo (the class list is not the person's labels)
                db.execute("DELETE FROM classes WHERE id = ?", (class_id,))
                return
            dropped = history.journal_add(db, self._delete_class(db, class_id))
        self._drop_trash(dropped)

    @staticmethod
    def _delete_class(db: sqlite3.Connection, class_id: int) -> dict:
        """Delete a class with its objects -> the journal entry that brings them back (every row as it was)."""
        (row,) = _rows(db, "classes", "id = ?", (class_id,))
        objects = _rows(db, "objects", "class_id = ? ORDER BY id", (class_id,))
        db.execute("DELETE FROM objects WHERE class_id = ?", (class_id,))
        db.execute("DELETE FROM classes WHERE id = ?", (class_id,))
        return {"kind": "class", "class": row, "objects": objects}

    @staticmethod
    def _restore_class(db: sqlite3.Connection, entry: dict) -> list[dict]:
        """Undo `_delete_class`: the class (its row, or the class that has its name now) and its objects, with their
        ids. Returns the objects put back; the entry's class id becomes the one they use (for a redo)."""
        row = entry["class"]
        found = db.execute("SELECT id, kind FROM classes WHERE name = ?", (row["name"],)).fetchone()
        if found is None:
            _insert_rows(db, "classes", [row])
            class_id = row["id"]
        else:
            class_id = found[0]
            if found[1] == "phrase" and row["kind"] == "class":
                db.execute("UPDATE classes SET kind = 'class' WHERE id = ?", (class_id,))
        entry["class"] = {**row, "id": class_id}
        images = {i for (i,) in db.execute("SELECT id FROM images")}
        back = [{**o, "class_id": class_id} for o in entry["objects"] if o["image_id"] in images]
        _insert_rows(db, "objects", back)
        return back

    def merge_class(self, name: str, into: str) -> int:
        """Give every object of class `name` the class `into`, then remove `name`, in one transaction.
        The objects keep their source, score and mask. Returns how many objects moved."""
        with self._write() as db:
            source, target = self._class_id(db, name), self._class_id(db, into)
            if source == target:
                raise ProjectError(f"{show_name(name)} and {show_name(into)} are the same class")
            moved = db.execute("UPDATE objects SET class_id = ? WHERE class_id = ?", (target, source)).rowcount
            db.execute("DELETE FROM classes WHERE id = ?", (source,))
        return moved

    def set_classes(self, names: Sequence[str]) -> None:
        """Make the class list exactly `names`, in that order: reorders, adds new names, drops unused
        classes. A name matching an existing class case-insensitively is that class (respelled).
        Refuses to drop a class that objects use."""
        names = class_names(names)
        with self._write() as db:
            self._add_classes(db, names)  # a listed phrase becomes a class (with its objects)
            existing = {n.casefold(): (cid, n) for cid, n in db.execute("SELECT id, name FROM classes WHERE kind = 'class'")}
            wanted = {n.casefold() for n in names}
            for key, (cid, old) in existing.items():
                if key in wanted:
                    continue
                used = db.execute("SELECT COUNT(*) FROM objects WHERE class_id = ?", (cid,)).fetchone()[0]
                if used:
                    raise ProjectError(f"set_classes would drop the class {old!r}, which is used by {used} object(s); "
                                       f"keep it in the list, or remove_class({old!r}, delete_objects=True) first")
                db.execute("DELETE FROM classes WHERE id = ?", (cid,))
            for position, name in enumerate(names):
                if name.casefold() in existing:
                    cid = existing[name.casefold()][0]
                    db.execute("UPDATE classes SET name = ?, position = ? WHERE id = ?", (name, position, cid))
                else:
                    db.execute("INSERT INTO classes (name, position) VALUES (?, ?)", (name, position))

    def _class_id(self, db: sqlite3.Connection, name: str, *, phrases: bool = False) -> int:
        """The row of a class (phrases=True: or of a phrase; a model run stores either)."""
        row = db.execute("SELECT id, kind FROM classes WHERE name = ?", (str(name).strip(),)).fetchone()
        if row is None or (row[1] == "phrase" and not phrases):
            raise ProjectError(f"unknown class {show_name(name)}; the project's classes are {self._names(db, 'class')} "
                               "(add it with add_classes)")
        return row[0]

    # -- images ------------------------------------------------------------------------------------

    def add_image(self, source: str | os.PathLike | Image.Image | np.ndarray, *, copy: bool = True,
                  name: str | None = None, key: str | None = None) -> ImageRecord:
        """Add one image. A path is copied byte for byte (EXIF included) into images/, or with
        copy=False referenced by its absolute path; a PIL image or numpy array (as `to_rgb` accepts) is
        made upright RGB and written as PNG. `name` defaults to the file name ("image.png" for pixels)
        and gets a suffix (_1, _2, ...) if taken. The pixels are decoded in full first (of the copy, when
        copying): unreadable, truncated or oversized files raise ImageError and nothing is added.

        key: where the image comes from (the command line uses the absolute source path). An image is
        added at most once per key, even across kills and concurrent processes: the key is stored in the
        same transaction as the image, and if another image already has it, that one is returned instead."""
        if key is not None and (not isinstance(key, str) or not key):
            raise ProjectError(f"an image key must be a non-empty string, got {key!r}")
        if isinstance(source, (Image.Image, np.ndarray)):
            rgb = to_rgb(source)
            name = image_name(name or "image.png")
            if not name.lower().endswith(".png"):
                name += ".png"
            return self._store(name, key, lambda tmp: rgb.save(tmp, format="PNG"))
        if not isinstance(source, (str, os.PathLike)):
            raise ImageError(f"expected a path, a PIL image or a numpy array, got {type(source).__name__}")
        if is_uri(source):
            raise ImageError(f"{source!r} is in an object store: add it with add_reference (its URI is kept, "
                             "nothing is copied)")
        src = Path(source).expanduser().resolve()
        name = image_name(name or src.name)
        if not src.is_file():
            raise ImageError(f"could not read the image {os.fspath(source)!r}: there is no such file")
        if copy:
            return self._store(name, key, lambda tmp: shutil.copyfile(src, tmp))
        width, height = decoded_size(src)
        with self._write() as db:
            found = self._keyed(db, key)
            if found is not None:
                return replace(found, existed=True)
            return self._insert_image(db, self._free_name(db, name, None), str(src), False, width, height, key)

    def add_reference(self, uri: str, width: int, height: int, *, name: str | None = None,
                      key: str | None = None) -> ImageRecord:
        """Add an image that stays in an object store, referenced by its URI (`gdino.sources`: s3://...),
        of the given upright size (the caller decoded it: a Ray actor, `sources.size_of`). Nothing is copied
        or fetched here. The URI is stored in its canonical spelling (`sources.canonical`); one holding
        credentials is refused. key: as in add_image (default: the canonical URI)."""
        if not is_uri(uri):
            raise ProjectError(f"{uri!r} is not an object-store URI (s3://...); add local files with add_image")
        try:
            uri = check_uri(uri)  # one spelling per object: also the key
            key = uri if key is None else check_uri(key) if is_uri(key) else key
        except SourceError as err:
            raise ProjectError(str(err)) from None
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise ProjectError(f"an image size must be positive whole pixels, got {width!r} x {height!r}")
        if width * height > MAX_PIXELS:  # no image gdino reads is larger (processing.MAX_PIXELS)
            raise ProjectError(f"an image of {width}x{height} pixels is larger than gdino reads ({MAX_PIXELS:,} pixels)")
        name = image_name(name or name_of(uri))
        with self._write() as db:
            found = self._keyed(db, key)
            if found is not None:
                return replace(found, existed=True)
            return self._insert_image(db, self._free_name(db, name, None), uri, False, width, height, key)

    def removed_keys(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` whose image was removed (remove_images) and not added again since."""
        keys = list(keys)
        found: set[str] = set()
        with self._read() as db:
            for start in range(0, len(keys), 500):  # SQLite's limit on parameters
                part = keys[start:start + 500]
                rows = db.execute(f"SELECT key FROM removed WHERE key IN ({','.join('?' * len(part))})", part)
                found.update(row[0] for row in rows)
        return found

    def image_by_key(self, key: str) -> ImageRecord | None:
        """The image added with `key` (see add_image), or None."""
        with self._read() as db:
            return self._keyed(db, key)

    def _keyed(self, db: sqlite3.Connection, key: str | None) -> ImageRecord | None:
        if key is None:
            return None
        row = db.execute("SELECT image_id FROM sources WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._image(db, row[0])

    def add_images(self, sources: Iterable[str | os.PathLike | Image.Image | np.ndarray], *,
                   copy: bool = True) -> list[ImageRecord]:
        """Add several images, one transaction each, in order. Stops at the first bad one with an
        ImageError that names it and says how many were added before it (they stay committed, and are
        also on the error as `.added`); nothing is skipped silently."""
        added: list[ImageRecord] = []
        for source in sources:
            try:
                added.append(self.add_image(source, copy=copy))
            except (ImageError, ProjectError) as err:
                err.added = added  # type: ignore[attr-defined]
                err.args = (f"{err} -- the {len(added)} image(s) before it were added; fix or remove this one "
                            "and add the rest",)
                raise
        return added

    def _store(self, name: str, key: str | None, write: Callable[[Path], object]) -> ImageRecord:
        """Write the pixels into images/ under a temporary name, decode that copy in full, then give it its
        unique name and record it, one transaction. The file is complete and synced before its row
        commits: a crash leaves at worst an unreferenced hidden file, never a row pointing at a missing or
        partial one."""
        self._check_writable()  # before any file is written
        images = self._dir / IMAGES_DIR
        tmp, placed = images / f".adding-{uuid.uuid4().hex}", None
        try:
            images.mkdir(exist_ok=True)
            write(tmp)
            fsync(tmp)
            width, height = decoded_size(tmp, name)
            with self._write() as db:  # the write lock keeps another process from taking the same name or key
                found = self._keyed(db, key)
                if found is not None:
                    return replace(found, existed=True)
                name = self._free_name(db, name, images, tmp)
                placed = images / name
                os.replace(tmp, placed)
                fsync(images)
                record = self._insert_image(db, name, f"{IMAGES_DIR}/{name}", True, width, height, key)
            return record
        except BaseException as err:
            if placed is not None:
                self._remove_unreferenced([placed])
            if isinstance(err, OSError):
                raise _os_error(err, self._dir) from err
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def _remove_unreferenced(self, placed: list[Path]) -> None:
        """After a failed add: delete the files it put under their final names that no image references.
        Under the write lock, so that another process cannot meanwhile have given one of those names to its
        own copy (it reuses a same-bytes orphan's name inside its transaction); a reference means the add
        committed after all (Ctrl-C right after the commit). If the database cannot be asked, the files
        stay: an unreferenced file does no harm, a deleted referenced one loses an image."""
        try:
            with self._write() as db:
                for path in placed:
                    if not db.execute("SELECT 1 FROM images WHERE path = ?", (f"{IMAGES_DIR}/{path.name}",)).fetchone():
                        path.unlink(missing_ok=True)
        except Exception:  # noqa: BLE001 - see above: keep them
            pass

    def add_labeled(self, images: Sequence[NewImage], classes: Sequence[str] = ()) -> list[ImageRecord]:
        """Add many images with their labels (imports use this): all of them or none. Returns the records
        of the images added: an image whose `key` the project already has is left out (not an error).

        The files are copied into images/ under temporary names first, outside any transaction; then one
        short transaction adds the classes that are missing, every image with its objects and status, and
        gives the files their names. A failure or a kill at any point leaves the project as it was (at
        worst some unreferenced hidden files in images/)."""
        classes = class_names(classes)
        items = list(images)
        for item in items:
            if not isinstance(item, NewImage):
                raise ProjectError(f"add_labeled takes NewImage records, got {type(item).__name__}")
            check_status(item.status)
            check_source(item.source)
            image_name(item.name)
        self._check_writable()  # before any file is copied
        folder = self._dir / IMAGES_DIR
        temps: list[Path] = []
        placed: list[Path] = []
        try:
            folder.mkdir(exist_ok=True)
            for item in items:
                tmp = folder / f".adding-{uuid.uuid4().hex}"
                temps.append(tmp)
                shutil.copyfile(item.path, tmp)
                fsync(tmp)
            records = []
            with self._write() as db:
                self._add_classes(db, classes)
                for item, tmp in zip(items, temps, strict=True):
                    if self._keyed(db, item.key) is not None:
                        continue
                    name = self._free_name(db, image_name(item.name), folder, tmp)
                    os.replace(tmp, folder / name)
                    placed.append(folder / name)
                    record = self._insert_image(db, name, f"{IMAGES_DIR}/{name}", True, item.width, item.height,
                                                item.key)
                    for k, obj in enumerate(item.objects):
                        if not isinstance(obj, dict) or not {"box", "class_name"} <= obj.keys():
                            raise ProjectError(f"{item.name}: object {k} must have a box and a class_name")
                        self._insert_object(db, record, obj["box"], obj["class_name"], obj.get("score"), item.source,
                                            obj.get("mask"), fetch=False)
                    db.execute("UPDATE images SET status = ? WHERE id = ?", (item.status, record.id))
                    records.append(record.id)
                fsync(folder)
                out = [self._image(db, image_id) for image_id in records]
            placed = []
            return out
        except OSError as err:
            raise _os_error(err, self._dir) from err
        finally:
            if placed:  # the transaction did not commit, or Ctrl-C came right after it did
                self._remove_unreferenced(placed)
            for tmp in temps:
                tmp.unlink(missing_ok=True)

    def _insert_image(self, db: sqlite3.Connection, name: str, path: str, copied: bool, width: int,
                      height: int, key: str | None) -> ImageRecord:
        cur = db.execute("INSERT INTO images (name, path, copied, width, height) VALUES (?, ?, ?, ?, ?)",
                         (name, path, int(copied), width, height))
        if key is not None:
            db.execute("INSERT INTO sources (key, image_id) VALUES (?, ?)", (key, cur.lastrowid))
            db.execute("DELETE FROM removed WHERE key = ?", (key,))  # added again on purpose
        return self._image(db, cur.lastrowid)

    @staticmethod
    def _free_name(db: sqlite3.Connection, name: str, folder: Path | None, pixels: Path | None = None) -> str:
        """`name`, or name_1, name_2, ... : the first not used by an image, nor by a file in `folder`, except
        a file that no image uses and that holds the same bytes as `pixels`: the copy a killed process
        had placed but not yet recorded (the caller holds the write lock, so no live process is between
        placing and recording one), which the caller then replaces. A resumed run thus gives an image the
        name an uninterrupted run would have."""
        stem, suffix = os.path.splitext(name)
        candidate, k = name, 0
        while db.execute("SELECT 1 FROM images WHERE name = ?", (candidate,)).fetchone() or (
                folder is not None and (folder / candidate).exists()
                and not (pixels is not None and _same_bytes(folder / candidate, pixels))):
            k += 1
            candidate = f"{stem}_{k}{suffix}"
        return candidate

    def images(self, *, status: str | None = None, order: str = "name") -> list[ImageRecord]:
        """All images, or those with `status`; order "name", "added" or "confidence" (lowest model score
        first, images without model objects last)."""
        if order not in ORDERS:
            raise ProjectError(f"unknown order {order!r}; use one of {list(ORDERS)}")
        where, args = "", ()
        if status is not None:
            check_status(status)
            where, args = " WHERE i.status = ?", (status,)
        with self._read() as db:
            rows = db.execute(f"{_IMAGE_SELECT}{where} ORDER BY {_ORDER_BY[order]}", args).fetchall()
        return [self._image_record(row) for row in rows]

    def has_image(self, image_id: int) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is not None

    def image(self, image_id: int) -> ImageRecord:
        with self._read() as db:
            return self._image(db, image_id)

    def find_image(self, name: str) -> ImageRecord | None:
        """The image called `name` (case-insensitively), or None."""
        with self._read() as db:
            row = db.execute(f"{_IMAGE_SELECT} WHERE i.name = ?", (name,)).fetchone()
        return None if row is None else self._image_record(row)

    def remove_image(self, image_id: int) -> None:
        """Delete an image with its objects and run; a copied-in file is deleted too."""
        self.remove_images([image_id])

    def remove_images(self, image_ids: Iterable[int], *, undoable: bool = True) -> list[ImageRecord]:
        """Delete several images with their objects, runs and histories, in one transaction (all or none).
        The removal is an entry of the project's journal: `undo` on any image puts every row back, and the
        copied-in files, which are kept in the project's trash (`.removed/`) until the entry is dropped
        (history.JOURNAL_LIMIT). undoable=False: no entry, the files deleted for good (to free the disk).
        Returns the removed records."""
        ids = list(dict.fromkeys(image_ids))
        self._check_writable()  # before any file is linked
        trash = self._dir / TRASH_DIR / uuid.uuid4().hex
        try:
            with self._write() as db:
                removed, files, entry = self._delete_images(db, ids, trash if undoable else None)
                dropped = history.journal_add(db, entry) if undoable else []
        except BaseException:
            shutil.rmtree(trash, ignore_errors=True)  # nothing refers to it
            raise
        self._unlink_unreferenced(files)
        self._drop_trash(dropped)
        return removed

    def _delete_images(self, db: sqlite3.Connection, ids: list[int],
                       trash: Path | None) -> tuple[list[ImageRecord], list[Path], dict]:
        """Delete the images and everything of theirs -> (their records, the files in images/ to delete once
        committed, the journal entry that brings them back). The files are linked (or copied) into `trash`
        first, synced: from the commit on, the entry's files are there whatever happens to images/ (None: not
        kept)."""
        records, files, snapshots = [], [], []
        for image_id in ids:
            record = self._image(db, image_id)
            (row,) = _rows(db, "images", "id = ?", (image_id,))
            snap = {"image": row, **{table: _rows(db, table, "image_id = ? ORDER BY rowid", (image_id,))
                                     for table in ("objects", "edits", "runs", "sources", "rejected")}}
            snap["classes"] = {str(cid): _rows(db, "classes", "id = ?", (cid,))[0]
                               for cid in {o["class_id"] for o in snap["objects"]}}
            snap["removed"] = [s["key"] for s in snap["sources"]]
            db.execute("INSERT OR REPLACE INTO removed (key, name) SELECT key, ? FROM sources WHERE image_id = ?",
                       (record.name, image_id))  # a later run of the same inputs leaves it out
            if row["copied"]:
                if trash is not None:
                    _keep(self._dir / row["path"], trash / Path(row["path"]).name)
                files.append(self._dir / row["path"])
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
            records.append(record)
            snapshots.append(snap)
        if trash is not None and trash.is_dir():
            fsync(trash)
            fsync(trash.parent)
        return records, files, {"kind": "images", "images": snapshots, "trash": None if trash is None else trash.name}

    def _restore_images(self, db: sqlite3.Connection, entry: dict, placed: list[Path]) -> list[int]:
        """Undo `_delete_images`: every row back with its id; a copied-in file linked back into images/ from the
        trash (`placed` gets it: the caller deletes it if the transaction fails). An image whose name another
        image took meanwhile gets a free one (name_1, ...); a source key another image took stays with that one.
        Returns the image ids."""
        folder, trash = self._dir / IMAGES_DIR, self._dir / TRASH_DIR / entry["trash"]
        ids = []
        for snap in entry["images"]:
            row = dict(snap["image"])
            if row["copied"]:
                kept = trash / Path(row["path"]).name
                pixels = kept if kept.is_file() else None
                row["name"] = self._free_name(db, row["name"], folder, pixels)
                target = folder / row["name"]
                if pixels is not None and not target.exists():
                    placed.append(target)
                    _keep(pixels, target)
                    fsync(folder)
                row["path"] = f"{IMAGES_DIR}/{row['name']}"
            else:
                row["name"] = self._free_name(db, row["name"], None)
            _insert_rows(db, "images", [row])
            classes = {int(cid): history.class_back(db, c["id"], c["name"], c["kind"]) for cid, c in snap["classes"].items()}
            _insert_rows(db, "objects", [{**o, "class_id": classes[o["class_id"]]} for o in snap["objects"]])
            for table in ("edits", "runs", "rejected"):
                _insert_rows(db, table, snap[table])
            for source in snap["sources"]:
                db.execute("INSERT OR IGNORE INTO sources (key, image_id) VALUES (?, ?)", (source["key"], row["id"]))
            db.execute(f"DELETE FROM removed WHERE key IN ({','.join('?' * len(snap['removed']))})", snap["removed"])
            ids.append(row["id"])
        return ids

    def _unlink_unreferenced(self, files: list[Path]) -> None:
        """Delete removed images' files from images/ after the commit (a crash in between leaves an orphan file,
        not a row without pixels), under the write lock, sparing a file that an image added or restored
        meanwhile took over (same name, same bytes)."""
        if not files:
            return
        with self._write() as db:
            for path in files:
                relative = path.relative_to(self._dir).as_posix() if path.is_relative_to(self._dir) else None
                if not db.execute("SELECT 1 FROM images WHERE copied = 1 AND path = ?", (relative,)).fetchone():
                    path.unlink(missing_ok=True)

    def _drop_trash(self, entries: Iterable[dict]) -> None:
        """Delete the trash folders of journal entries that are gone or undone (after the commit that did it)."""
        for entry in entries:
            if entry.get("trash"):
                shutil.rmtree(self._dir / TRASH_DIR / entry["trash"], ignore_errors=True)

    def set_status(self, image_id: int, status: str) -> None:
        check_status(status)
        with self._write() as db:
            self._image(db, image_id)
            db.execute("UPDATE images SET status = ? WHERE id = ?", (status, image_id))

    def _image(self, db: sqlite3.Connection, image_id: int) -> ImageRecord:
        row = db.execute(f"{_IMAGE_SELECT} WHERE i.id = ?", (image_id,)).fetchone()
        if row is None:
            raise ProjectError(f"no image with id {image_id!r} in the project; list them with images()")
        return self._image_record(row)

    def _image_record(self, row) -> ImageRecord:
        id_, name, path, copied, width, height, status, min_score, num_objects = row
        if not copied and is_uri(path):
            return ImageRecord(id_, name, None, width, height, status, min_score, num_objects, uri=path)
        return ImageRecord(id_, name, self._dir / path if copied else Path(path), width, height, status, min_score,
                           num_objects)

    # -- objects -----------------------------------------------------------------------------------

    def objects(self, image_id: int) -> list[ObjectRecord]:
        with self._read() as db:
            self._image(db, image_id)
            rows = db.execute(f"{_OBJECT_SELECT} WHERE o.image_id = ? ORDER BY o.id", (image_id,)).fetchall()
        return [_object_record(row) for row in rows]

    @contextmanager
    def held(self) -> Iterator[None]:
        """This process's lock of the project, held: no write of this process starts or ends meanwhile (the app
        stamps what it read with a revision inside it, so that revisions order reads and writes alike)."""
        with self._lock:
            yield

    def view(self, image_id: int) -> tuple[ImageRecord, list[ObjectRecord], list[str], tuple[bool, bool]]:
        """(the image, its objects, the project's classes, (can undo, can redo)) read in one snapshot, so that
        they agree with each other (what the canvas draws)."""
        with self._read() as db:
            record = self._image(db, image_id)
            rows = db.execute(f"{_OBJECT_SELECT} WHERE o.image_id = ? ORDER BY o.id", (image_id,)).fetchall()
            return record, [_object_record(row) for row in rows], self._names(db, "class"), history.available(db, image_id)

    def add_object(self, image_id: int, box: Sequence[float], class_name: str, *, score: float | None = None,
                   source: str = "manual", mask: dict | None = None, labeled: str | None = None) -> ObjectRecord:
        """Add one object; `box` is xyxy in upright image pixels and is clipped to the image.
        labeled: a status that an "unlabeled" image takes in the same transaction (the app passes "auto"
        for a box drawn by hand, so a batch run can never add model boxes to it in between)."""
        check_source(source)
        if labeled is not None:
            check_status(labeled)
        with self._write() as db:
            obj = self._insert_object(db, self._image(db, image_id), box, class_name, score, source, mask)
            if labeled is not None:
                db.execute("UPDATE images SET status = ? WHERE id = ? AND status = 'unlabeled'", (labeled, image_id))
            return obj

    def update_object(self, object_id: int, *, box: Sequence[float] | None = None, class_name: str | None = None,
                      mask: dict | None = _UNSET, score: float | None = _UNSET, source: str = _UNSET) -> ObjectRecord:
        """Change an object (box: xyxy upright image pixels, clipped). mask=None / score=None remove them;
        leaving an argument out keeps it.
        A new box or class makes it a "manual" object (a person corrected it, so the next model run
        must not replace it) unless `source` is given."""
        with self._write() as db:
            obj = self._object(db, object_id)
            image = self._image(db, obj.image_id)
            sets: dict[str, Any] = {}
            if box is not None:
                sets.update(zip(("x0", "y0", "x1", "y1"), check_box(box, image.width, image.height), strict=True))
            if class_name is not None and str(class_name).strip().casefold() != obj.class_name.casefold():
                sets["class_id"] = self._class_id(db, class_name)  # a class: relabeling a phrase object maps it
            if mask is not _UNSET:
                sets["mask"] = mask_json(mask, image.width, image.height)
            if score is not _UNSET:
                sets["score"] = check_score(score)
            if source is not _UNSET:
                sets["source"] = check_source(source)
            elif box is not None or class_name is not None:
                sets["source"] = "manual"
            if sets:
                assignments = ", ".join(f"{column} = ?" for column in sets)
                db.execute(f"UPDATE objects SET {assignments} WHERE id = ?", (*sets.values(), object_id))
                drop_unused_phrases(db)
            return self._object(db, object_id)

    def delete_object(self, object_id: int) -> None:
        with self._write() as db:
            self._object(db, object_id)
            db.execute("DELETE FROM objects WHERE id = ?", (object_id,))
            drop_unused_phrases(db)

    def replace_model_objects(self, image_id: int, objects: Sequence[dict], *, run: dict | None = None,
                              if_status: Iterable[str] | None = None, classes: Sequence[str] = (),
                              phrases: Sequence[str] = ()) -> list[ObjectRecord] | None:
        """Swap an image's model objects for `objects` (dicts: box, class_name, score, optional mask),
        keeping manual ones, in one transaction. Status becomes "auto" unless it is "reviewed".
        `run` (the prompt and thresholds behind them, JSON-able) is kept as the image's last run;
        None forgets the previous one. Returns the new objects.

        if_status: only if the image's status is still one of these when the transaction runs; otherwise
        nothing changes and None is returned. A batch run that chose "unlabeled" images passes
        ("unlabeled",), so that an image a person marked skipped or reviewed meanwhile keeps that decision.
        classes: added to the project (those it lacks) in the same transaction, only if the write happens: a
        run's classes never outlive a result that was dropped, and a class deleted meanwhile comes back
        only with objects that use it.
        phrases: free-text phrases the objects are labeled with, kept apart from the classes (`phrases`);
        one that names a class (case-insensitively) is that class. Phrases no object uses any more go.

        What a person decided stays: a new box of the same label overlapping, at IoU >= history.REJECT_IOU, a model
        box they deleted or changed (while that edit is not undone) or a box they made is left out (the returned
        list lacks it). The swap is one entry of the image's history: `undo` puts the replaced objects back."""
        run_json = None if run is None else to_json(run, "run", dict)
        allowed = None if if_status is None else {check_status(s) for s in if_status}
        for k, obj in enumerate(objects):
            if not isinstance(obj, dict) or not {"box", "class_name", "score"} <= obj.keys():
                raise ProjectError(f"objects[{k}] must be a dict with keys box, class_name, score (and optionally "
                                   f"mask), got {obj!r}")
            if obj["score"] is None:
                raise ProjectError(f"objects[{k}] has score None; model objects need a score")
        with self._write() as db:
            image = self._image(db, image_id)
            if allowed is not None and image.status not in allowed:
                return None
            decisions = history.decided(db, image_id)
            kept = [o for o in objects if not history.is_decided(o["class_name"], o["box"], decisions)]
            used = {str(o["class_name"]).strip().casefold() for o in kept}
            self._add_classes(db, [c for c in class_names(classes) if c.casefold() in used])
            self._add_phrases(db, [c for c in class_names(phrases) if c.casefold() in used])
            replaced = [i for (i,) in db.execute("SELECT id FROM objects WHERE image_id = ? AND source = 'model'", (image_id,))]
            before = history.rows(db, image_id, replaced)
            db.execute("DELETE FROM objects WHERE image_id = ? AND source = 'model'", (image_id,))
            new = [self._insert_object(db, image, obj["box"], obj["class_name"], obj["score"], "model", obj.get("mask"),
                                       phrases=True) for obj in kept]
            drop_unused_phrases(db)
            if image.status != "reviewed":
                db.execute("UPDATE images SET status = 'auto' WHERE id = ?", (image_id,))
            if before or new or image.status not in ("reviewed", "auto"):  # one undoable edit; the history before stays
                history.record(db, image_id, before, [o.id for o in new], image.status, person=False)
            db.execute("DELETE FROM runs WHERE image_id = ?", (image_id,))
            if run_json is not None:
                db.execute("INSERT INTO runs (image_id, run) VALUES (?, ?)", (image_id, run_json))
        return new

    def add_objects(self, image_id: int, objects: Sequence[dict], *, source: str = "manual",
                    status: str | None = None) -> list[ObjectRecord]:
        """Add several objects (dicts: box, class_name, optional score and mask) and optionally set the
        image's status, in one transaction: all of them or none (imports use this)."""
        check_source(source)
        if status is not None:
            check_status(status)
        with self._write() as db:
            image = self._image(db, image_id)
            new = []
            for k, obj in enumerate(objects):
                if not isinstance(obj, dict) or not {"box", "class_name"} <= obj.keys():
                    raise ProjectError(f"objects[{k}] must be a dict with keys box, class_name (and optionally score, "
                                       f"mask), got {obj!r}")
                new.append(self._insert_object(db, image, obj["box"], obj["class_name"], obj.get("score"), source,
                                               obj.get("mask")))
            if status is not None:
                db.execute("UPDATE images SET status = ? WHERE id = ?", (status, image_id))
        return new

    def edit_objects(self, image_id: int, changes: dict[int, ObjectState | None] | None = None,
                     new: Sequence[ObjectState] = (), *, expect: Sequence[ObjectRecord] = (),
                     after: Guard | None = None) -> list[ObjectRecord]:
        """One edit of a person (the canvas), in one transaction with its undo entry: set objects to new
        states (None deletes one) and add `new` ones. An image that gets a new object and was "unlabeled"
        becomes "auto" (labeled by hand). expect: the objects as the caller read them before computing
        the change; if any differs now (another window, a model run), nothing is written and a
        ProjectError says so. A class_name the project lacks becomes a class. Returns the new objects.
        after: called in the transaction once the edit is written, with the objects it changed or added as it
        leaves them (None: deleted)."""
        changes = dict(changes or {})
        with self._write() as db:
            image = self._image(db, image_id)
            current = history.rows(db, image_id, changes)
            now = self._objects_now(db, image_id, [o.id for o in expect])
            if any(now[record.id] != record for record in expect):
                raise ProjectError("that box was changed meanwhile (in another window, or by a run); the canvas "
                                   "shows it as it is now: edit it again")
            missing = [i for i in changes if i not in current]
            if missing:
                raise ProjectError("that box is gone (deleted or replaced meanwhile); the canvas shows what is stored now")
            before = {i: current[i] for i in changes}
            # a label a person gives is a class (added, or a phrase promoted); an object keeping its label keeps it
            relabeled = [s.class_name for i, s in changes.items()
                         if s is not None and s.class_name.strip().casefold() != before[i]["class_name"].casefold()]
            wanted = {n.strip().casefold(): n.strip() for n in [*relabeled, *(s.class_name for s in new)]}
            self._add_classes(db, class_names(wanted.values()))  # several boxes may get one class
            for object_id, state in changes.items():
                if state is None:
                    db.execute("DELETE FROM objects WHERE id = ?", (object_id,))
                    continue
                db.execute("UPDATE objects SET class_id = ?, x0 = ?, y0 = ?, x1 = ?, y1 = ?, score = ?, source = ?, "
                           "mask = ?, clicks = ? WHERE id = ?", (*self._state_values(db, image, state), object_id))
            added = []
            for state in new:
                cur = db.execute("INSERT INTO objects (class_id, x0, y0, x1, y1, score, source, mask, clicks, image_id) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*self._state_values(db, image, state), image_id))
                added.append(cur.lastrowid)
            if added:
                db.execute("UPDATE images SET status = 'auto' WHERE id = ? AND status = 'unlabeled'", (image_id,))
            drop_unused_phrases(db)
            history.record(db, image_id, before, [*changes, *added], image.status)
            if after is not None:
                after(self._objects_now(db, image_id, [*changes, *added]))
            return [self._object(db, i) for i in added]

    def _state_values(self, db: sqlite3.Connection, image: ImageRecord, state: ObjectState) -> tuple:
        x0, y0, x1, y1 = check_box(state.box, image.width, image.height)
        clicks = None if state.clicks is None else to_json(state.clicks, "the clicks", dict)
        return (self._class_id(db, state.class_name, phrases=True), x0, y0, x1, y1, check_score(state.score),
                check_source(state.source), mask_json(state.mask, image.width, image.height), clicks)

    def undo(self, image_id: int, *, guard: Guard | None = None, after: Guard | None = None) -> bool:
        """Undo the image's last edit (`edit_objects`); False when there is none. If the objects were
        changed otherwise since, the image's history is cleared and a ProjectError says so.
        guard: called in the transaction with the objects the undo would change, as stored now (None: absent);
        whatever it raises leaves everything as it was (the app refuses an undo made on a stale view).
        after: called in the transaction once it is written, with those objects as it leaves them."""
        return self._step(image_id, True, guard, after)

    def redo(self, image_id: int, *, guard: Guard | None = None, after: Guard | None = None) -> bool:
        """Redo the image's last undone edit; False when there is none. guard, after: as for `undo`."""
        return self._step(image_id, False, guard, after)

    def _step(self, image_id: int, undo: bool, guard: Guard | None, after: Guard | None) -> bool:
        """Undo or redo on the image: its own history's step or the project journal's, whichever is next
        (history.next_step)."""
        conflict, touched, placed, later = None, [], [], []
        try:
            with self._write() as db:
                self._image(db, image_id)

                def check(ids):
                    touched.extend(ids)
                    if guard is not None:
                        guard(self._objects_now(db, image_id, ids))
                step = history.next_step(db, image_id, undo=undo)
                try:
                    if step is None:
                        done = False
                    elif step[0] == "journal":
                        later = self._journal_step(db, step[1], undo, image_id, check, placed)
                        done = True
                    else:
                        done = (history.undo if undo else history.redo)(db, image_id, check)
                    if done and after is not None:
                        after(self._objects_now(db, image_id, touched))
                except history.HistoryConflictError as err:  # the cleared history is committed, then reported
                    conflict, done = err, False
        except BaseException:  # what it placed for a step that did not commit: files linked back, a trash folder
            self._remove_unreferenced([p for p in placed if not p.is_dir()])
            for folder in (p for p in placed if p.is_dir()):
                shutil.rmtree(folder, ignore_errors=True)
            raise
        for action in later:
            action()
        if conflict is not None:
            raise ProjectError(str(conflict))
        return done

    def _journal_step(self, db: sqlite3.Connection, journal_id: int, undo: bool, image_id: int,
                      check: Callable[[list[int]], None], placed: list[Path]) -> list[Callable[[], None]]:
        """Undo or redo a journal entry in the caller's transaction -> what to do once it commits (files).
        check: called first with the ids of the image's objects it changes."""
        entry = history.journal_entry(db, journal_id)
        if entry["kind"] == "class":
            if undo:
                check([o["id"] for o in entry["objects"] if o["image_id"] == image_id])
                self._restore_class(db, entry)
                history.journal_mark(db, journal_id, entry, undone=True)
                return []
            present = db.execute("SELECT 1 FROM classes WHERE id = ?", (entry["class"]["id"],)).fetchone()
            if present:
                check([i for (i,) in db.execute("SELECT id FROM objects WHERE class_id = ? AND image_id = ?",
                                                (entry["class"]["id"], image_id))])
                entry = self._delete_class(db, entry["class"]["id"])
            history.journal_mark(db, journal_id, entry, undone=False)
            return []
        if undo:
            check([])
            self._restore_images(db, entry, placed)
            history.journal_mark(db, journal_id, entry, undone=True)
            return [lambda: self._drop_trash([entry])]
        ids = [s["image"]["id"] for s in entry["images"]]
        ids = [i for (i,) in db.execute(f"SELECT id FROM images WHERE id IN ({','.join('?' * len(ids))})", ids)]
        check([i for (i,) in db.execute("SELECT id FROM objects WHERE image_id = ?", (image_id,))] if image_id in ids else [])
        trash = self._dir / TRASH_DIR / uuid.uuid4().hex
        placed.append(trash)  # if it does not commit, the trash folder goes
        _, files, entry = self._delete_images(db, ids, trash)
        history.journal_mark(db, journal_id, entry, undone=False)
        return [lambda: self._unlink_unreferenced(files)]

    def next_step(self, image_id: int, *, undo: bool) -> str | None:
        """What undo (or redo) on the image would do, in words, when it is a step of the project's journal
        ("the removal of 2 image(s): a.png, b.png"); None for a step of the image's own history, or none."""
        with self._read() as db:
            step = history.next_step(db, image_id, undo=undo)
            if step is None or step[0] != "journal":
                return None
            entry = history.journal_entry(db, step[1])
        if entry["kind"] == "class":
            return f"the deletion of the class {show_name(entry['class']['name'])} with {len(entry['objects'])} object(s)"
        names = [s["image"]["name"] for s in entry["images"]]
        return f"the removal of {len(names)} image(s): {', '.join(show_name(n) for n in names[:5])}" + (
            ", ..." if len(names) > 5 else "")

    def history(self, image_id: int) -> tuple[bool, bool]:
        """(can undo, can redo) for the image."""
        with self._read() as db:
            self._image(db, image_id)
            return history.available(db, image_id)

    def last_run(self, image_id: int) -> dict | None:
        """The `run` given with the image's current model objects, or None."""
        with self._read() as db:
            self._image(db, image_id)
            row = db.execute("SELECT run FROM runs WHERE image_id = ?", (image_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _insert_object(self, db, image: ImageRecord, box, class_name, score, source, mask,
                       fetch: bool = True, phrases: bool = False) -> ObjectRecord | None:
        x0, y0, x1, y1 = check_box(box, image.width, image.height)
        class_id = self._class_id(db, class_name, phrases=phrases)
        values = (image.id, class_id, x0, y0, x1, y1, check_score(score), source, mask_json(mask, image.width, image.height))
        cur = db.execute("INSERT INTO objects (image_id, class_id, x0, y0, x1, y1, score, source, mask) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        return self._object(db, cur.lastrowid) if fetch else None

    def _objects_now(self, db: sqlite3.Connection, image_id: int, ids: Iterable[int]) -> dict[int, ObjectRecord | None]:
        """These objects of the image as stored now (None: absent), in one query."""
        ids = list(dict.fromkeys(ids))
        rows = db.execute(f"{_OBJECT_SELECT} WHERE o.image_id = ? AND o.id IN ({','.join('?' * len(ids))})",
                          (image_id, *ids)).fetchall() if ids else []
        found = {row[0]: _object_record(row) for row in rows}
        return {i: found.get(i) for i in ids}

    def _object(self, db: sqlite3.Connection, object_id: int) -> ObjectRecord:
        row = db.execute(f"{_OBJECT_SELECT} WHERE o.id = ?", (object_id,)).fetchone()
        if row is None:
            raise ProjectError(f"no object with id {object_id!r} in the project; list an image's with objects(image_id)")
        return _object_record(row)

    # -- settings and stats ------------------------------------------------------------------------

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-able value (the app keeps its last prompt and thresholds here)."""
        if not isinstance(key, str) or not key:
            raise ProjectError(f"a setting key must be a non-empty string, got {key!r}")
        value_json = to_json(value, f"the setting {key!r}", object)
        with self._write() as db:
            db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (key, value_json))

    def setting(self, key: str, default: Any = None) -> Any:
        with self._read() as db:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def stats(self) -> dict:
        """{"images": n, "objects": n, "status": {status: images}, "classes": {class: objects},
        "phrases": {phrase: objects}}, every status and class listed (zeros included), in project order."""
        with self._read() as db:
            status = dict.fromkeys(STATUSES, 0)
            status.update(db.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
            counts = db.execute("SELECT c.name, c.kind, COUNT(o.id) FROM classes c LEFT JOIN objects o ON o.class_id = c.id "
                                "GROUP BY c.id ORDER BY c.position, c.id").fetchall()
        classes = {name: n for name, kind, n in counts if kind == "class"}
        phrases = {name: n for name, kind, n in counts if kind == "phrase" and n}
        return {"images": sum(status.values()), "objects": sum(classes.values()) + sum(phrases.values()),
                "status": status, "classes": classes, "phrases": phrases}


# -- helpers ---------------------------------------------------------------------------------------


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


def _os_error(err: OSError, directory: Path) -> Exception:
    """A failed file operation in the project folder -> a ProjectError for the cases people can act on."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ProjectError(f"the disk holding the project {directory} is full; nothing was added: free some space and "
                            "try again")
    if err.errno == errno.EROFS:
        return ProjectError(f"the project {directory} is on read-only storage; it can be viewed and exported, not "
                            "changed")
    return err


ABANDONED_AFTER_S = 86_400  # an add's temporary copy older than this belongs to a process that was killed


def _remove_abandoned(folder: Path) -> None:
    """Delete the hidden temporary copies (".adding-*") that killed adds and imports left in images/. Only
    old ones: a live process's copy exists for seconds, never a day."""
    now = time.time()
    for path in folder.glob(".adding-*"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > ABANDONED_AFTER_S:
                path.unlink()


def _remove_abandoned_trash(folder: Path, db: sqlite3.Connection) -> None:
    """Delete trash folders that no journal entry holds (a removal killed before its commit, an entry dropped
    by a process killed before it deleted the folder). Only old ones, as in `_remove_abandoned`."""
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


def _keep(source: Path, dest: Path) -> None:
    """Give the file a second name (a hard link; a synced copy where the file system has none). A missing
    source (a file that broke or went) is left missing."""
    if not source.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except FileExistsError:
        if not _same_bytes(dest, source):
            raise
    except OSError:
        shutil.copyfile(source, dest)
        fsync(dest)


def _rows(db: sqlite3.Connection, table: str, where: str, args: Sequence) -> list[dict]:
    """Rows of a table as {column: value} (every column: what the journal keeps to put them back)."""
    cursor = db.execute(f"SELECT * FROM {table} WHERE {where}", tuple(args))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _insert_rows(db: sqlite3.Connection, table: str, rows: Iterable[dict]) -> None:
    for row in rows:
        db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.is_file() and not a.is_symlink() and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _object_record(row) -> ObjectRecord:
    id_, image_id, class_name, x0, y0, x1, y1, score, source, mask, kind, clicks = row
    return ObjectRecord(id_, image_id, class_name, (x0, y0, x1, y1), score, source,
                        None if mask is None else json.loads(mask), kind == "phrase",
                        None if clicks is None else json.loads(clicks))

