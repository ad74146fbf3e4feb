"""The labeling project store: images, classes, objects and review state in one SQLite file.

A project is a directory holding `project.sqlite` and `images/` (images copied in). Images can also be
referenced where they lie (`copy=False`), by absolute path. Every public mutating call is one
transaction, committed before it returns: a process killed at any moment loses at most the change in
flight, and the database is never left half-written.

Coordinates: boxes are xyxy in pixels of the UPRIGHT image (EXIF orientation applied, the frame
`gdino.processing.to_rgb` returns), clipped to [0, width] x [0, height]. Masks are COCO RLE dicts
`{"size": [height, width], "counts": ...}` of that same frame; the store checks their shape, not their
contents.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .processing import ImageError, open_image_file, to_rgb
from .project_schema import (
    SOURCES,
    STATUSES,
    ProjectError,
    check_box,
    check_score,
    check_source,
    check_status,
    class_names,
    connect,
    image_name,
    mask_json,
    migrate,
    to_json,
)

__all__ = ["ImageRecord", "ObjectRecord", "Project", "ProjectError", "STATUSES", "SOURCES", "ORDERS"]

ORDERS = ("name", "added", "confidence")
DB_NAME = "project.sqlite"
IMAGES_DIR = "images"

_UNSET: Any = object()  # "argument not given", so that mask=None can mean "remove the mask"


@dataclass(frozen=True)
class ImageRecord:
    id: int
    name: str  # unique within the project (case-insensitively), e.g. the file name
    path: Path  # absolute path of the pixels
    width: int  # upright frame: EXIF orientation applied
    height: int
    status: str  # one of STATUSES
    min_score: float | None  # lowest score among its model objects; None without any
    num_objects: int


@dataclass(frozen=True)
class ObjectRecord:
    id: int
    image_id: int
    class_name: str
    box: tuple[float, float, float, float]  # xyxy, pixels of the upright image
    score: float | None
    source: str  # "model" or "manual"
    mask: dict | None  # COCO RLE {"size": [h, w], "counts": ...} of the upright image


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
    SELECT o.id, o.image_id, c.name, o.x0, o.y0, o.x1, o.y1, o.score, o.source, o.mask
    FROM objects o JOIN classes c ON c.id = o.class_id"""


class Project:
    """An open project. Use `Project.create` / `Project.open`, ideally as a context manager.

    One connection, guarded by a lock, so the app's worker threads may share an instance. Several
    processes may open the same project: writes take SQLite's write lock (BEGIN IMMEDIATE).
    """

    def __init__(self, directory: Path, db: sqlite3.Connection):
        self._dir = directory
        self._db: sqlite3.Connection | None = db
        self._lock = threading.RLock()

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
        (directory / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        project = cls._connect(directory)
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
            raise ProjectError(f"{directory} is not a gdino project (it has no {DB_NAME}); "
                               "make one with Project.create(directory)")
        return cls._connect(directory)

    @classmethod
    def _connect(cls, directory: Path) -> Project:
        try:
            db = connect(directory / DB_NAME)
        except sqlite3.DatabaseError as err:
            raise ProjectError(f"{directory / DB_NAME} is not a readable project database ({err})") from err
        try:
            migrate(db)
        except sqlite3.DatabaseError as err:
            db.close()
            raise ProjectError(f"{directory / DB_NAME} is not a readable project database ({err})") from err
        except BaseException:
            db.close()
            raise
        return cls(directory, db)

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
        """One transaction, committed on success and rolled back on any exception."""
        with self._lock:
            db = self._open_db()
            db.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._open_db()
            db.execute("BEGIN")  # one snapshot for the several queries of a read
            try:
                yield db
            finally:
                db.execute("COMMIT")

    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise ProjectError(f"the project {self._dir} is closed; open it again with Project.open")
        return self._db

    # -- classes -----------------------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        with self._read() as db:
            return [name for (name,) in db.execute("SELECT name FROM classes ORDER BY position, id")]

    def add_classes(self, names: Iterable[str]) -> list[str]:
        """Append classes. Names already present (case-insensitively) are left as they are, so the call
        can be repeated; returns the names actually added."""
        names = class_names(names)
        with self._write() as db:
            known = {n.casefold() for (n,) in db.execute("SELECT name FROM classes")}
            added = [n for n in names if n.casefold() not in known]
            start = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM classes").fetchone()[0]
            db.executemany("INSERT INTO classes (name, position) VALUES (?, ?)", [(n, start + k) for k, n in enumerate(added)])
        return added

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class; its objects keep it (they reference the class, not the name)."""
        (new,) = class_names([new])
        with self._write() as db:
            class_id = self._class_id(db, old)
            clash = db.execute("SELECT name FROM classes WHERE name = ? AND id != ?", (new, class_id)).fetchone()
            if clash:
                raise ProjectError(f"cannot rename {old!r} to {new!r}: the class {clash[0]!r} already exists "
                                   "(names are compared case-insensitively)")
            db.execute("UPDATE classes SET name = ? WHERE id = ?", (new, class_id))

    def remove_class(self, name: str, *, delete_objects: bool = False) -> None:
        """Remove a class. Refused while objects use it, unless delete_objects=True deletes them too."""
        with self._write() as db:
            class_id = self._class_id(db, name)
            used = db.execute("SELECT COUNT(*) FROM objects WHERE class_id = ?", (class_id,)).fetchone()[0]
            if used and not delete_objects:
                raise ProjectError(f"the class {name!r} is used by {used} object(s); pass delete_objects=True to "
                                   "delete them with it, or rename_class it instead")
            db.execute("DELETE FROM objects WHERE class_id = ?", (class_id,))
            db.execute("DELETE FROM classes WHERE id = ?", (class_id,))

    def set_classes(self, names: Sequence[str]) -> None:
        """Make the class list exactly `names`, in that order: reorders, adds new names, drops unused
        classes. A name matching an existing class case-insensitively is that class (respelled).
        Refuses to drop a class that objects use."""
        names = class_names(names)
        with self._write() as db:
            existing = {n.casefold(): (cid, n) for cid, n in db.execute("SELECT id, name FROM classes")}
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

    def _class_id(self, db: sqlite3.Connection, name: str) -> int:
        row = db.execute("SELECT id FROM classes WHERE name = ?", (str(name).strip(),)).fetchone()
        if row is None:
            known = [n for (n,) in db.execute("SELECT name FROM classes ORDER BY position, id")]
            raise ProjectError(f"unknown class {name!r}; the project's classes are {known} (add it with add_classes)")
        return row[0]

    # -- images ------------------------------------------------------------------------------------

    def add_image(self, source: str | os.PathLike | Image.Image | np.ndarray, *, copy: bool = True,
                  name: str | None = None) -> ImageRecord:
        """Add one image. A path is copied byte for byte (EXIF included) into images/, or with
        copy=False referenced by its absolute path; a PIL image or numpy array (as `to_rgb` accepts) is
        made upright RGB and written as PNG. `name` defaults to the file name ("image.png" for pixels)
        and gets a suffix (_1, _2, ...) if taken. Unreadable files raise ImageError."""
        if isinstance(source, (Image.Image, np.ndarray)):
            rgb = to_rgb(source)
            name = image_name(name or "image.png")
            if not name.lower().endswith(".png"):
                name += ".png"
            return self._store(name, rgb.width, rgb.height, lambda tmp: rgb.save(tmp, format="PNG"))
        if not isinstance(source, (str, os.PathLike)):
            raise ImageError(f"expected a path, a PIL image or a numpy array, got {type(source).__name__}")
        src = Path(source).expanduser().resolve()
        width, height = upright_size(src)
        name = image_name(name or src.name)
        if copy:
            return self._store(name, width, height, lambda tmp: shutil.copyfile(src, tmp))
        with self._write() as db:
            return self._insert_image(db, self._free_name(db, name, None), str(src), False, width, height)

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

    def _store(self, name: str, width: int, height: int, write: Callable[[Path], object]) -> ImageRecord:
        """Write the pixels into images/ under a fresh unique name, then record them, one transaction.
        The file is complete and synced before its row commits: a crash leaves at worst an unreferenced
        file, never a row pointing at a missing or partial one."""
        images = self._dir / IMAGES_DIR
        tmp, placed = images / f".adding-{uuid.uuid4().hex}", None
        images.mkdir(exist_ok=True)
        try:
            write(tmp)
            _fsync(tmp)
            with self._write() as db:  # the write lock keeps another process from taking the same name
                name = self._free_name(db, name, images)
                placed = images / name
                os.replace(tmp, placed)
                _fsync(images)
                record = self._insert_image(db, name, f"{IMAGES_DIR}/{name}", True, width, height)
            return record
        except BaseException:
            if placed is not None:
                placed.unlink(missing_ok=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def _insert_image(self, db: sqlite3.Connection, name: str, path: str, copied: bool, width: int,
                      height: int) -> ImageRecord:
        cur = db.execute("INSERT INTO images (name, path, copied, width, height) VALUES (?, ?, ?, ?, ?)",
                         (name, path, int(copied), width, height))
        return self._image(db, cur.lastrowid)

    @staticmethod
    def _free_name(db: sqlite3.Connection, name: str, folder: Path | None) -> str:
        """`name`, or name_1, name_2, ... : the first not used by an image (nor by a file in `folder`)."""
        stem, suffix = os.path.splitext(name)
        candidate, k = name, 0
        while (db.execute("SELECT 1 FROM images WHERE name = ?", (candidate,)).fetchone()
               or (folder is not None and (folder / candidate).exists())):
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
        with self._write() as db:
            record = self._image(db, image_id)
            copied = db.execute("SELECT copied FROM images WHERE id = ?", (image_id,)).fetchone()[0]
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        if copied:  # after the commit: a crash in between leaves an orphan file, not a row without pixels
            record.path.unlink(missing_ok=True)

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
        return ImageRecord(id_, name, self._dir / path if copied else Path(path), width, height, status, min_score,
                           num_objects)

    # -- objects -----------------------------------------------------------------------------------

    def objects(self, image_id: int) -> list[ObjectRecord]:
        with self._read() as db:
            self._image(db, image_id)
            rows = db.execute(f"{_OBJECT_SELECT} WHERE o.image_id = ? ORDER BY o.id", (image_id,)).fetchall()
        return [_object_record(row) for row in rows]

    def add_object(self, image_id: int, box: Sequence[float], class_name: str, *, score: float | None = None,
                   source: str = "manual", mask: dict | None = None) -> ObjectRecord:
        """Add one object; `box` is xyxy in upright image pixels and is clipped to the image."""
        check_source(source)
        with self._write() as db:
            return self._insert_object(db, self._image(db, image_id), box, class_name, score, source, mask)

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
            if class_name is not None:
                sets["class_id"] = self._class_id(db, class_name)
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
            return self._object(db, object_id)

    def delete_object(self, object_id: int) -> None:
        with self._write() as db:
            self._object(db, object_id)
            db.execute("DELETE FROM objects WHERE id = ?", (object_id,))

    def replace_model_objects(self, image_id: int, objects: Sequence[dict], *, run: dict | None = None) -> list[ObjectRecord]:
        """Swap an image's model objects for `objects` (dicts: box, class_name, score, optional mask),
        keeping manual ones, in one transaction. Status becomes "auto" unless it is "reviewed".
        `run` (the prompt and thresholds behind them, JSON-able) is kept as the image's last run;
        None forgets the previous one. Returns the new objects."""
        run_json = None if run is None else to_json(run, "run", dict)
        with self._write() as db:
            image = self._image(db, image_id)
            db.execute("DELETE FROM objects WHERE image_id = ? AND source = 'model'", (image_id,))
            new = []
            for k, obj in enumerate(objects):
                if not isinstance(obj, dict) or not {"box", "class_name", "score"} <= obj.keys():
                    raise ProjectError(f"objects[{k}] must be a dict with keys box, class_name, score (and optionally "
                                       f"mask), got {obj!r}")
                if obj["score"] is None:
                    raise ProjectError(f"objects[{k}] has score None; model objects need a score")
                new.append(self._insert_object(db, image, obj["box"], obj["class_name"], obj["score"], "model",
                                               obj.get("mask")))
            if image.status != "reviewed":
                db.execute("UPDATE images SET status = 'auto' WHERE id = ?", (image_id,))
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

    def last_run(self, image_id: int) -> dict | None:
        """The `run` given with the image's current model objects, or None."""
        with self._read() as db:
            self._image(db, image_id)
            row = db.execute("SELECT run FROM runs WHERE image_id = ?", (image_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _insert_object(self, db, image: ImageRecord, box, class_name, score, source, mask) -> ObjectRecord:
        x0, y0, x1, y1 = check_box(box, image.width, image.height)
        class_id = self._class_id(db, class_name)
        values = (image.id, class_id, x0, y0, x1, y1, check_score(score), source, mask_json(mask, image.width, image.height))
        cur = db.execute("INSERT INTO objects (image_id, class_id, x0, y0, x1, y1, score, source, mask) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        return self._object(db, cur.lastrowid)

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
        """{"images": n, "objects": n, "status": {status: images}, "classes": {class: objects}}, every
        status and class listed (zeros included), classes in project order."""
        with self._read() as db:
            status = dict.fromkeys(STATUSES, 0)
            status.update(db.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
            classes = dict(db.execute("SELECT c.name, COUNT(o.id) FROM classes c LEFT JOIN objects o ON o.class_id = c.id "
                                      "GROUP BY c.id ORDER BY c.position, c.id").fetchall())
        return {"images": sum(status.values()), "objects": sum(classes.values()), "status": status, "classes": classes}


# -- helpers ---------------------------------------------------------------------------------------


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image file as `to_rgb` returns it (EXIF orientation applied), read from the
    header and the orientation tag without decoding pixels. Refuses what `to_rgb` refuses, same messages."""
    with open_image_file(path) as f:
        # PIL only finds a PNG eXIf chunk stored after the pixels by decoding them all; such files are rare
        orientation = 1 if f.format == "PNG" and "exif" not in f.info else f.getexif().get(0x0112, 1)
        width, height = f.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)  # 5-8 rotate by 90 degrees


def _fsync(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries, to disk (Windows cannot open folders: skipped there)."""
    if path.is_dir():
        if os.name != "nt":
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _object_record(row) -> ObjectRecord:
    id_, image_id, class_name, x0, y0, x1, y1, score, source, mask = row
    return ObjectRecord(id_, image_id, class_name, (x0, y0, x1, y1), score, source, None if mask is None else json.loads(mask))

