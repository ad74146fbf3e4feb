"""A project's images: adding them (copied in crash-safely, referenced where they lie, or by URI), listing and
finding them, their status, and removing them as an entry of the project's journal."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .. import checks
from ..processing import MAX_PIXELS, ImageError, to_rgb
from ..sources import SourceError, check_uri, is_uri, name_of
from . import history
from .classes import add_classes
from .db import Database
from .durable import fsync
from .errors import ProjectError, os_error
from .files import IMAGES_DIR, Files, decoded_size, free_name
from .journal import Journal
from .objects import insert_object, state_of
from .records import IMAGE_SELECT, ORDER_BY, ORDERS, ImageRecord, NewImage, exists, image, image_record, keyed, require
from .values import image_name


class Images:
    """Adding, reading, removing images and setting their status, one transaction each."""

    def __init__(self, database: Database, files: Files, journal: Journal):
        self._db = database
        self._files = files
        self._journal = journal
        self._dir = database.directory

    def add(self, source: str | os.PathLike | Image.Image | np.ndarray, *, copy: bool = True,
            name: str | None = None, key: str | None = None) -> ImageRecord:
        """See `Project.add_image`."""
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
        with self._db.write() as db:
            found = keyed(db, self._dir, key)
            if found is not None:
                return replace(found, existed=True)
            return self.insert(db, free_name(db, name, None), str(src), False, width, height, key)

    def add_reference(self, uri: str, width: int, height: int, *, name: str | None = None,
                      key: str | None = None) -> ImageRecord:
        """See `Project.add_reference`."""
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
        with self._db.write() as db:
            found = keyed(db, self._dir, key)
            if found is not None:
                return replace(found, existed=True)
            return self.insert(db, free_name(db, name, None), uri, False, width, height, key)

    def add_many(self, sources: Iterable[str | os.PathLike | Image.Image | np.ndarray], *,
                 copy: bool = True) -> list[ImageRecord]:
        """See `Project.add_images`."""
        added: list[ImageRecord] = []
        for source in sources:
            try:
                added.append(self.add(source, copy=copy))
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
        self._db.check_writable()  # before any file is written
        images = self._files.images
        tmp, placed = images / f".adding-{uuid.uuid4().hex}", None
        try:
            images.mkdir(exist_ok=True)
            write(tmp)
            fsync(tmp)
            width, height = decoded_size(tmp, name)
            with self._db.write() as db:  # the write lock keeps another process from taking the same name or key
                found = keyed(db, self._dir, key)
                if found is not None:
                    return replace(found, existed=True)
                name = free_name(db, name, images, tmp)
                placed = images / name
                os.replace(tmp, placed)
                fsync(images)
                record = self.insert(db, name, f"{IMAGES_DIR}/{name}", True, width, height, key)
            return record
        except BaseException as err:
            if placed is not None:
                self._files.remove_unreferenced([placed])
            if isinstance(err, OSError):
                raise os_error(err, self._dir) from err
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def add_labeled(self, images: Sequence[NewImage], classes: Sequence[str] = ()) -> list[ImageRecord]:
        """See `Project.add_labeled`."""
        classes = checks.class_names(classes, ProjectError)
        items = list(images)
        for item in items:
            if not isinstance(item, NewImage):
                raise ProjectError(f"add_labeled takes NewImage records, got {type(item).__name__}")
            checks.status(item.status, ProjectError)
            checks.source(item.source, ProjectError)
            image_name(item.name)
        self._db.check_writable()  # before any file is copied
        folder = self._files.images
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
            with self._db.write() as db:
                add_classes(db, classes)
                for item, tmp in zip(items, temps, strict=True):
                    if keyed(db, self._dir, item.key) is not None:
                        continue
                    name = free_name(db, image_name(item.name), folder, tmp)
                    os.replace(tmp, folder / name)
                    placed.append(folder / name)
                    record = self.insert(db, name, f"{IMAGES_DIR}/{name}", True, item.width, item.height, item.key)
                    for k, obj in enumerate(item.objects):
                        if not isinstance(obj, dict) or not {"box", "class_name"} <= obj.keys():
                            raise ProjectError(f"{item.name}: object {k} must have a box and a class_name")
                        insert_object(db, record, state_of(obj, k, item.source, model=False), phrases=False)
                    db.execute("UPDATE images SET status = ? WHERE id = ?", (item.status, record.id))
                    records.append(record.id)
                fsync(folder)
                out = [image(db, self._dir, image_id) for image_id in records]
            placed = []
            return out
        except OSError as err:
            raise os_error(err, self._dir) from err
        finally:
            if placed:  # the transaction did not commit, or Ctrl-C came right after it did
                self._files.remove_unreferenced(placed)
            for tmp in temps:
                tmp.unlink(missing_ok=True)

    def insert(self, db, name: str, path: str, copied: bool, width: int, height: int, key: str | None) -> ImageRecord:
        """The image's row (and its key's) in the caller's transaction -> its record."""
        cur = db.execute("INSERT INTO images (name, path, copied, width, height) VALUES (?, ?, ?, ?, ?)",
                         (name, path, int(copied), width, height))
        if key is not None:
            db.execute("INSERT INTO sources (key, image_id) VALUES (?, ?)", (key, cur.lastrowid))
            db.execute("DELETE FROM removed WHERE key = ?", (key,))  # added again on purpose
        return image(db, self._dir, cur.lastrowid)

    def removed_keys(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        with self._db.read() as db:
            for start in range(0, len(keys), 500):  # SQLite's limit on parameters
                part = keys[start:start + 500]
                rows = db.execute(f"SELECT key FROM removed WHERE key IN ({','.join('?' * len(part))})", part)
                found.update(row[0] for row in rows)
        return found

    def by_key(self, key: str) -> ImageRecord | None:
        with self._db.read() as db:
            return keyed(db, self._dir, key)

    def list(self, *, status: str | None = None, order: str = "name") -> list[ImageRecord]:
        if order not in ORDERS:
            raise ProjectError(f"unknown order {order!r}; use one of {list(ORDERS)}")
        where, args = "", ()
        if status is not None:
            checks.status(status, ProjectError)
            where, args = " WHERE i.status = ?", (status,)
        with self._db.read() as db:
            rows = db.execute(f"{IMAGE_SELECT}{where} ORDER BY {ORDER_BY[order]}", args).fetchall()
        return [image_record(row, self._dir) for row in rows]

    def has(self, image_id: int) -> bool:
        with self._db.read() as db:
            return exists(db, image_id)

    def get(self, image_id: int) -> ImageRecord:
        with self._db.read() as db:
            return image(db, self._dir, image_id)

    def find(self, name: str) -> ImageRecord | None:
        with self._db.read() as db:
            row = db.execute(f"{IMAGE_SELECT} WHERE i.name = ?", (name,)).fetchone()
        return None if row is None else image_record(row, self._dir)

    def remove(self, image_ids: Iterable[int], *, undoable: bool = True) -> list[ImageRecord]:
        """See `Project.remove_images`."""
        ids = list(dict.fromkeys(image_ids))
        self._db.check_writable()  # before any file is linked
        trash = self._files.trash / uuid.uuid4().hex
        try:
            with self._db.write() as db:
                removed, files, entry = self._journal.delete_images(db, ids, trash if undoable else None)
                dropped = history.journal_add(db, entry) if undoable else []
        except BaseException:
            shutil.rmtree(trash, ignore_errors=True)  # nothing refers to it
            raise
        self._files.unlink_unreferenced(files)
        self._files.drop_trash(dropped)
        return removed

    def set_status(self, image_id: int, status: str) -> None:
        checks.status(status, ProjectError)
        with self._db.write() as db:
            require(db, image_id)
            db.execute("UPDATE images SET status = ? WHERE id = ?", (status, image_id))
