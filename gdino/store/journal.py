"""The project's journal at work: removing images, or a class with its objects, as rows it can put back, and
undoing or redoing such an entry (`history` keeps the entries; this puts rows and files in and out).

Functions and methods here take the open connection of the caller's write transaction; nothing commits. Files
they link (into the trash, back into images/) are listed for the caller, which deletes them if it fails.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

from ..checks import show_name
from . import history
from .durable import fsync
from .files import IMAGES_DIR, Files, free_name, keep
from .records import ImageRecord, image, insert_rows, table_rows


def delete_class(db: sqlite3.Connection, class_id: int) -> dict:
    """Delete a class with its objects -> the journal entry that brings them back (every row as it was)."""
    (row,) = table_rows(db, "classes", "id = ?", (class_id,))
    objects = table_rows(db, "objects", "class_id = ? ORDER BY id", (class_id,))
    db.execute("DELETE FROM objects WHERE class_id = ?", (class_id,))
    db.execute("DELETE FROM classes WHERE id = ?", (class_id,))
    return {"kind": "class", "class": row, "objects": objects}


def restore_class(db: sqlite3.Connection, entry: dict) -> list[dict]:
    """Undo `delete_class`: the class (its row, or the class that has its name now) and its objects, with their
    ids. Returns the objects put back; the entry's class id becomes the one they use (for a redo)."""
    row = entry["class"]
    found = db.execute("SELECT id, kind FROM classes WHERE name = ?", (row["name"],)).fetchone()
    if found is None:
        insert_rows(db, "classes", [row])
        class_id = row["id"]
    else:
        class_id = found[0]
        if found[1] == "phrase" and row["kind"] == "class":
            db.execute("UPDATE classes SET kind = 'class' WHERE id = ?", (class_id,))
    entry["class"] = {**row, "id": class_id}
    images = {i for (i,) in db.execute("SELECT id FROM images")}
    back = [{**o, "class_id": class_id} for o in entry["objects"] if o["image_id"] in images]
    insert_rows(db, "objects", back)
    return back


def describe(entry: dict) -> str:
    """A journal entry in words, for the undo button ("the removal of 2 image(s): a.png, b.png")."""
    if entry["kind"] == "class":
        return f"the deletion of the class {show_name(entry['class']['name'])} with {len(entry['objects'])} object(s)"
    names = [s["image"]["name"] for s in entry["images"]]
    return f"the removal of {len(names)} image(s): {', '.join(show_name(n) for n in names[:5])}" + (
        ", ..." if len(names) > 5 else "")


class Journal:
    """Removing images as a journal entry, and undoing or redoing any entry, with the files they hold."""

    def __init__(self, files: Files, directory: Path):
        self._files = files
        self._dir = directory

    def delete_images(self, db: sqlite3.Connection, ids: list[int],
                      trash: Path | None) -> tuple[list[ImageRecord], list[Path], dict]:
        """Delete the images and everything of theirs -> (their records, the files in images/ to delete once
        committed, the journal entry that brings them back). The files are linked (or copied) into `trash`
        first, synced: from the commit on, the entry's files are there whatever happens to images/ (None: not
        kept)."""
        records, files, snapshots = [], [], []
        for image_id in ids:
            record = image(db, self._dir, image_id)
            (row,) = table_rows(db, "images", "id = ?", (image_id,))
            snap = {"image": row, **{table: table_rows(db, table, "image_id = ? ORDER BY rowid", (image_id,))
                                     for table in ("objects", "edits", "runs", "sources", "rejected")}}
            snap["classes"] = {str(cid): table_rows(db, "classes", "id = ?", (cid,))[0]
                               for cid in {o["class_id"] for o in snap["objects"]}}
            snap["removed"] = [s["key"] for s in snap["sources"]]
            db.execute("INSERT OR REPLACE INTO removed (key, name) SELECT key, ? FROM sources WHERE image_id = ?",
                       (record.name, image_id))  # a later run of the same inputs leaves it out
            if row["copied"]:
                if trash is not None:
                    keep(self._dir / row["path"], trash / Path(row["path"]).name)
                files.append(self._dir / row["path"])
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
            records.append(record)
            snapshots.append(snap)
        if trash is not None and trash.is_dir():
            fsync(trash)
            fsync(trash.parent)
        return records, files, {"kind": "images", "images": snapshots, "trash": None if trash is None else trash.name}

    def restore_images(self, db: sqlite3.Connection, entry: dict, placed: list[Path]) -> list[int]:
        """Undo `delete_images`: every row back with its id; a copied-in file linked back into images/ from the
        trash (`placed` gets it: the caller deletes it if the transaction fails). An image whose name another
        image took meanwhile gets a free one (name_1, ...); a source key another image took stays with that one.
        Returns the image ids."""
        folder, trash = self._files.images, self._files.trash / entry["trash"]
        ids = []
        for snap in entry["images"]:
            row = dict(snap["image"])
            if row["copied"]:
                kept = trash / Path(row["path"]).name
                pixels = kept if kept.is_file() else None
                row["name"] = free_name(db, row["name"], folder, pixels)
                target = folder / row["name"]
                if pixels is not None and not target.exists():
                    placed.append(target)
                    keep(pixels, target)
                    fsync(folder)
                row["path"] = f"{IMAGES_DIR}/{row['name']}"
            else:
                row["name"] = free_name(db, row["name"], None)
            insert_rows(db, "images", [row])
            classes = {int(cid): history.class_back(db, c["id"], c["name"], c["kind"]) for cid, c in snap["classes"].items()}
            insert_rows(db, "objects", [{**o, "class_id": classes[o["class_id"]]} for o in snap["objects"]])
            for table in ("edits", "runs", "rejected"):
                insert_rows(db, table, snap[table])
            for source in snap["sources"]:
                db.execute("INSERT OR IGNORE INTO sources (key, image_id) VALUES (?, ?)", (source["key"], row["id"]))
            db.execute(f"DELETE FROM removed WHERE key IN ({','.join('?' * len(snap['removed']))})", snap["removed"])
            ids.append(row["id"])
        return ids

    def step(self, db: sqlite3.Connection, journal_id: int, undo: bool, image_id: int,
             check: Callable[[list[int]], None], placed: list[Path]) -> list[Callable[[], None]]:
        """Undo or redo a journal entry in the caller's transaction -> what to do once it commits (files).
        check: called first with the ids of the image's objects it changes."""
        entry = history.journal_entry(db, journal_id)
        if entry["kind"] == "class":
            if undo:
                check([o["id"] for o in entry["objects"] if o["image_id"] == image_id])
                restore_class(db, entry)
                history.journal_mark(db, journal_id, entry, undone=True)
                return []
            present = db.execute("SELECT 1 FROM classes WHERE id = ?", (entry["class"]["id"],)).fetchone()
            if present:
                check([i for (i,) in db.execute("SELECT id FROM objects WHERE class_id = ? AND image_id = ?",
                                                (entry["class"]["id"], image_id))])
                entry = delete_class(db, entry["class"]["id"])
            history.journal_mark(db, journal_id, entry, undone=False)
            return []
        if undo:
            check([])
            self.restore_images(db, entry, placed)
            history.journal_mark(db, journal_id, entry, undone=True)
            return [lambda: self._files.drop_trash([entry])]
        ids = [s["image"]["id"] for s in entry["images"]]
        ids = [i for (i,) in db.execute(f"SELECT id FROM images WHERE id IN ({','.join('?' * len(ids))})", ids)]
        check([i for (i,) in db.execute("SELECT id FROM objects WHERE image_id = ?", (image_id,))] if image_id in ids else [])
        trash = self._files.trash / uuid.uuid4().hex
        placed.append(trash)  # if it does not commit, the trash folder goes
        _, files, entry = self.delete_images(db, ids, trash)
        history.journal_mark(db, journal_id, entry, undone=False)
        return [lambda: self._files.unlink_unreferenced(files)]
