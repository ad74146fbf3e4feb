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

`Project` is the facade: each job is an object it holds (db: transactions; classes; images; objects: reads and
the one write path, which records history; steps: undo and redo; settings: settings and stats).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import checks
from .classes import Classes
from .connection import DB_NAME, connect, translate
from .db import Database
from .errors import ProjectError, os_error
from .files import IMAGES_DIR, TRASH_DIR, Files, remove_abandoned, remove_abandoned_trash
from .images import Images
from .journal import Journal
from .objects import Objects
from .records import Guard, ImageRecord, NewImage, ObjectRecord, ObjectState
from .schema import MIGRATIONS, migrate
from .settings import Settings
from .steps import Steps


class Project:
    """An open project. Use `Project.create` / `Project.open`, ideally as a context manager.

    One connection, guarded by a lock, so the app's worker threads may share an instance. Several
    processes may open the same project: writes take SQLite's write lock (BEGIN IMMEDIATE).
    """

    def __init__(self, directory: Path, db: sqlite3.Connection, *, read_only: bool = False):
        self._db = Database(directory, db, read_only=read_only)
        files = Files(self._db)
        journal = Journal(files, directory)
        self._classes = Classes(self._db, files)
        self._images = Images(self._db, files, journal)
        self._objects = Objects(self._db)
        self._steps = Steps(self._db, files, journal)
        self._settings = Settings(self._db)
        self._lock = self._db.lock  # held by every write and read, and by `held`
        self._write, self._read = self._db.write, self._db.read  # one transaction; one snapshot

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str | os.PathLike, classes: Iterable[str] = (), *, exist_ok: bool = False) -> Project:
        """Make a new project in `directory` (created if missing). With exist_ok, an existing project is
        opened instead and `classes` missing from it are added."""
        classes = checks.class_names(classes, ProjectError)  # before anything is written
        directory = Path(directory).expanduser().resolve()
        if (directory / DB_NAME).exists() and not exist_ok:
            raise ProjectError(f"{directory} already holds a project; use Project.open({str(directory)!r}) "
                               "or pass exist_ok=True")
        if directory.exists() and not directory.is_dir():
            raise ProjectError(f"{directory} is a file, not a directory; choose a directory for the project")
        try:
            (directory / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise os_error(err, directory) from err
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
        remove_abandoned(directory / IMAGES_DIR)
        remove_abandoned_trash(directory / TRASH_DIR, db)
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
        self._db.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The project directory (absolute)."""
        return self._db.directory

    @property
    def read_only(self) -> bool:
        """On read-only storage (or set so): every read works, every change is refused."""
        return self._db.read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self._db.read_only = value

    @property
    def schema_version(self) -> int:
        with self._db.read() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    def batch(self):
        """Many changes, one commit (e.g. a cluster's results, a few hundred images at a time): each call
        inside is still all or nothing (a savepoint; one that raises leaves the others), and nothing is
        stored until the block ends; an exception out of the block, or a kill, stores none of it. A failure
        that ends SQLite's transaction (a full disk) loses the whole batch: the block then raises, even if
        the caller went on. Other threads' writes to this instance wait for the block (it holds the lock
        and SQLite's write lock). Files that calls inside place (add_image's copies) are not rolled back
        with it: keep such calls out of a batch."""
        return self._db.batch()

    @contextmanager
    def held(self) -> Iterator[None]:
        """This process's lock of the project, held: no write of this process starts or ends meanwhile (the app
        stamps what it read with a revision inside it, so that revisions order reads and writes alike)."""
        with self._db.lock:
            yield

    # -- classes -----------------------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return self._classes.all()

    @property
    def phrases(self) -> list[str]:
        """Free-text phrases that label objects but are not classes yet (the app's free-text prompts find
        them; `map_phrase` turns them into classes). Not in `classes`, not exported."""
        return self._classes.phrases()

    def add_classes(self, names: Iterable[str]) -> list[str]:
        """Append classes. Names already present (case-insensitively) are left as they are, so the call
        can be repeated; returns the names actually added."""
        return self._classes.add(names)

    def map_phrase(self, phrase: str, class_name: str) -> int:
        """Give every object labeled with a free-text `phrase` the class `class_name` (an existing class,
        matched case-insensitively, or a new one, added at the end of the list), in one transaction. The
        objects keep their source, score and mask. Returns how many objects it moved."""
        return self._classes.map_phrase(phrase, class_name)

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class; its objects keep it (they reference the class, not the name)."""
        self._classes.rename(old, new)

    def remove_class(self, name: str, *, delete_objects: bool = False) -> None:
        """Remove a class. Refused while objects use it, unless delete_objects=True deletes them too; that
        removal is an entry of the project's journal: `undo` on any image puts the class and every object back."""
        self._classes.remove(name, delete_objects=delete_objects)

    def merge_class(self, name: str, into: str) -> int:
        """Give every object of class `name` the class `into`, then remove `name`, in one transaction.
        The objects keep their source, score and mask. Returns how many objects moved."""
        return self._classes.merge(name, into)

    def set_classes(self, names: Sequence[str]) -> None:
        """Make the class list exactly `names`, in that order: reorders, adds new names, drops unused
        classes. A name matching an existing class case-insensitively is that class (respelled).
        Refuses to drop a class that objects use."""
        self._classes.set(names)

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
        return self._images.add(source, copy=copy, name=name, key=key)

    def add_reference(self, uri: str, width: int, height: int, *, name: str | None = None,
                      key: str | None = None) -> ImageRecord:
        """Add an image that stays in an object store, referenced by its URI (`gdino.sources`: s3://...),
        of the given upright size (the caller decoded it: a Ray actor, `sources.size_of`). Nothing is copied
        or fetched here. The URI is stored in its canonical spelling (`sources.canonical`); one holding
        credentials is refused. key: as in add_image (default: the canonical URI)."""
        return self._images.add_reference(uri, width, height, name=name, key=key)

    def add_images(self, sources: Iterable[str | os.PathLike | Image.Image | np.ndarray], *,
                   copy: bool = True) -> list[ImageRecord]:
        """Add several images, one transaction each, in order. Stops at the first bad one with an
        ImageError that names it and says how many were added before it (they stay committed, and are
        also on the error as `.added`); nothing is skipped silently."""
        return self._images.add_many(sources, copy=copy)

    def add_labeled(self, images: Sequence[NewImage], classes: Sequence[str] = ()) -> list[ImageRecord]:
        """Add many images with their labels (imports use this): all of them or none. Returns the records
        of the images added: an image whose `key` the project already has is left out (not an error).

        The files are copied into images/ under temporary names first, outside any transaction; then one
        short transaction adds the classes that are missing, every image with its objects and status, and
        gives the files their names. A failure or a kill at any point leaves the project as it was (at
        worst some unreferenced hidden files in images/)."""
        return self._images.add_labeled(images, classes)

    def removed_keys(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` whose image was removed (remove_images) and not added again since."""
        return self._images.removed_keys(keys)

    def image_by_key(self, key: str) -> ImageRecord | None:
        """The image added with `key` (see add_image), or None."""
        return self._images.by_key(key)

    def images(self, *, status: str | None = None, order: str = "name") -> list[ImageRecord]:
        """All images, or those with `status`; order "name", "added" or "confidence" (lowest model score
        first, images without model objects last)."""
        return self._images.list(status=status, order=order)

    def has_image(self, image_id: int) -> bool:
        return self._images.has(image_id)

    def image(self, image_id: int) -> ImageRecord:
        return self._images.get(image_id)

    def find_image(self, name: str) -> ImageRecord | None:
        """The image called `name` (case-insensitively), or None."""
        return self._images.find(name)

    def remove_image(self, image_id: int) -> None:
        """Delete an image with its objects and run; a copied-in file is deleted too."""
        self.remove_images([image_id])

    def remove_images(self, image_ids: Iterable[int], *, undoable: bool = True) -> list[ImageRecord]:
        """Delete several images with their objects, runs and histories, in one transaction (all or none).
        The removal is an entry of the project's journal: `undo` on any image puts every row back, and the
        copied-in files, which are kept in the project's trash (`.removed/`) until the entry is dropped
        (history.JOURNAL_LIMIT). undoable=False: no entry, the files deleted for good (to free the disk).
        Returns the removed records."""
        return self._images.remove(image_ids, undoable=undoable)

    def set_status(self, image_id: int, status: str) -> None:
        self._images.set_status(image_id, status)

    # -- objects: reads, and the one write path (each change an entry of the image's history) ----------

    def objects(self, image_id: int) -> list[ObjectRecord]:
        return self._objects.list(image_id)

    def view(self, image_id: int) -> tuple[ImageRecord, list[ObjectRecord], list[str], tuple[bool, bool]]:
        """(the image, its objects, the project's classes, (can undo, can redo)) read in one snapshot, so that
        they agree with each other (what the canvas draws)."""
        return self._objects.view(image_id)

    def last_run(self, image_id: int) -> dict | None:
        """The `run` given with the image's current model objects, or None."""
        return self._objects.last_run(image_id)

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
        return self._objects.edit(image_id, changes, new, expect=expect, after=after)

    def add_model_objects(self, image_id: int, states: Sequence[ObjectState], choose, *,
                          if_status: Iterable[str] | None = None, expect: Sequence[ObjectRecord] = (),
                          person: bool = False, after: Guard | None = None) -> list[ObjectRecord] | None:
        """Add model objects to an image, keeping every object it has, in one transaction and one undo step
        (find similar). What a person decided is never added again: a state of a label overlapping a box they
        deleted, changed or made of that label (`history.REJECT_IOU`) is dropped first; then
        `choose(objects now, the states left) -> indices of those to add` decides in the transaction (the
        overlap rule of gdino/labeling/similar.py). An "unlabeled" image becomes "auto". Returns the new objects.
        if_status: as in `replace_model_objects` (None returned, nothing written, when the status differs).
        expect: objects that must still be as the caller read them (ProjectError otherwise). person: the entry
        is a person's edit (the canvas' x: it ends redo, its deleted boxes count as decided) or a run's (a
        background search: it does not)."""
        return self._objects.add_model(image_id, states, choose, if_status=if_status, expect=expect, person=person,
                                       after=after)

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
        return self._objects.replace_model(image_id, objects, run=run, if_status=if_status, classes=classes,
                                           phrases=phrases)

    def undo(self, image_id: int, *, guard: Guard | None = None, after: Guard | None = None) -> bool:
        """Undo the image's last edit (`edit_objects`); False when there is none. If the objects were
        changed otherwise since, the image's history is cleared and a ProjectError says so.
        guard: called in the transaction with the objects the undo would change, as stored now (None: absent);
        whatever it raises leaves everything as it was (the app refuses an undo made on a stale view).
        after: called in the transaction once it is written, with those objects as it leaves them."""
        return self._steps.step(image_id, True, guard, after)

    def redo(self, image_id: int, *, guard: Guard | None = None, after: Guard | None = None) -> bool:
        """Redo the image's last undone edit; False when there is none. guard, after: as for `undo`."""
        return self._steps.step(image_id, False, guard, after)

    def next_step(self, image_id: int, *, undo: bool) -> str | None:
        """What undo (or redo) on the image would do, in words, when it is a step of the project's journal
        ("the removal of 2 image(s): a.png, b.png"); None for a step of the image's own history, or none."""
        return self._steps.next_step(image_id, undo=undo)

    def history(self, image_id: int) -> tuple[bool, bool]:
        """(can undo, can redo) for the image."""
        return self._steps.available(image_id)

    def person_edited(self, image_id: int) -> bool:
        """Whether a person's edit of the image stands (a model run alone is not one: training's `touched`)."""
        return self._steps.person_edited(image_id)

    # -- settings and stats ------------------------------------------------------------------------

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-able value (the app keeps its last prompt and thresholds here)."""
        self._settings.set(key, value)

    def setting(self, key: str, default: Any = None) -> Any:
        return self._settings.get(key, default)

    def stats(self) -> dict:
        """{"images": n, "objects": n, "status": {status: images}, "classes": {class: objects},
        "phrases": {phrase: objects}}, every status and class listed (zeros included), in project order."""
        return self._settings.stats()

