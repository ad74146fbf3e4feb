"""An image's edit history in the project database: undo and redo that survive a reload and a restart.

An entry holds the objects one edit touched, as rows before and after it (by object id), and the
image's status before and after. Undo writes the "before" rows back, redo the "after" rows, inside the
caller's transaction, and only while those objects are exactly as the entry left them; if something
else changed them meanwhile (a model run, another window), the entry cannot apply and the image's
history is cleared, with a message that says so. A new edit drops what was undone (no redo branch).

Functions here take the open connection of a write transaction (`Project._write`); nothing commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable

from .project_schema import drop_unused_phrases, next_class_position

LIMIT = 200  # entries kept per image; older ones are dropped

# one object row as the history keeps it: what identifies its class, and every stored column
_COLUMNS = "o.id, o.class_id, c.name, c.kind, o.x0, o.y0, o.x1, o.y1, o.score, o.source, o.mask, o.clicks"
_KEYS = ("id", "class_id", "class_name", "kind", "x0", "y0", "x1", "y1", "score", "source", "mask", "clicks")
_COMPARED = tuple(k for k in _KEYS if k not in ("class_name", "kind"))  # what an object is (see _same for the label)


class HistoryConflictError(Exception):
    """The objects changed since the entry was written; the image's history was cleared."""


def rows(db: sqlite3.Connection, image_id: int, ids: Iterable[int]) -> dict[int, dict]:
    """The current rows of these objects of the image (missing ids are absent)."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    found = db.execute(f"SELECT {_COLUMNS} FROM objects o JOIN classes c ON c.id = o.class_id "
                       f"WHERE o.image_id = ? AND o.id IN ({marks})", (image_id, *ids)).fetchall()
    return {row[0]: dict(zip(_KEYS, row, strict=True)) for row in found}


def record(db: sqlite3.Connection, image_id: int, before: dict[int, dict], ids: Iterable[int], status_before: str) -> None:
    """Add an entry for an edit that touched `ids` (before: their rows read in the same transaction before
    the edit; ids created by the edit are absent from it). Drops the undone entries of the image."""
    ids = sorted(set(ids) | set(before))
    after = rows(db, image_id, ids)
    status_after = db.execute("SELECT status FROM images WHERE id = ?", (image_id,)).fetchone()[0]
    entry = {"ids": ids, "before": list(before.values()), "after": list(after.values()),
             "status": [status_before, status_after]}
    db.execute("DELETE FROM edits WHERE image_id = ? AND undone = 1", (image_id,))
    db.execute("INSERT INTO edits (image_id, entry) VALUES (?, ?)", (image_id, json.dumps(entry)))
    db.execute("DELETE FROM edits WHERE image_id = ? AND id NOT IN "
               "(SELECT id FROM edits WHERE image_id = ? ORDER BY id DESC LIMIT ?)", (image_id, image_id, LIMIT))


def undo(db: sqlite3.Connection, image_id: int, check: Callable[[list[int]], None] | None = None) -> bool:
    """Put the image's last edit back; False when there is nothing to undo. check: called with the ids of
    the objects it would change, before anything is written; what it raises is passed on."""
    return _step(db, image_id, check, undo=True)


def redo(db: sqlite3.Connection, image_id: int, check: Callable[[list[int]], None] | None = None) -> bool:
    """Do the image's last undone edit again; False when there is nothing to redo. check: as for `undo`."""
    return _step(db, image_id, check, undo=False)


def _step(db: sqlite3.Connection, image_id: int, check: Callable[[list[int]], None] | None, *, undo: bool) -> bool:
    # undo takes the newest entry still done; redo the oldest undone one (the last that was undone)
    order = "DESC" if undo else "ASC"
    row = db.execute(f"SELECT id, entry FROM edits WHERE image_id = ? AND undone = ? ORDER BY id {order} LIMIT 1",
                     (image_id, 0 if undo else 1)).fetchone()
    if row is None:
        return False
    entry = json.loads(row[1])
    if check is not None:
        check(list(entry["ids"]))
    _apply(db, image_id, entry, *(("after", "before") if undo else ("before", "after")))
    db.execute("UPDATE edits SET undone = ? WHERE id = ?", (1 if undo else 0, row[0]))
    return True


def available(db: sqlite3.Connection, image_id: int) -> tuple[bool, bool]:
    """(can undo, can redo) for the image."""
    can_undo, can_redo = db.execute(
        "SELECT COALESCE(SUM(undone = 0), 0) > 0, COALESCE(SUM(undone = 1), 0) > 0 FROM edits WHERE image_id = ?",
        (image_id,)).fetchone()
    return bool(can_undo), bool(can_redo)


def forget(db: sqlite3.Connection, image_id: int) -> None:
    """Clear the image's history (a model run replaced its objects: earlier edits no longer apply)."""
    db.execute("DELETE FROM edits WHERE image_id = ?", (image_id,))


def _apply(db: sqlite3.Connection, image_id: int, entry: dict, now: str, wanted: str) -> None:
    expected = {r["id"]: r for r in entry[now]}
    current = rows(db, image_id, entry["ids"])
    same = current.keys() == expected.keys() and all(_same(db, current[i], expected[i]) for i in current)
    status = db.execute("SELECT status FROM images WHERE id = ?", (image_id,)).fetchone()[0]
    if not same:
        forget(db, image_id)
        raise HistoryConflictError("the image's objects were changed by something else since (a model run or another "
                              "window), so earlier edits cannot be undone or redone any more; its history was cleared")
    target = {r["id"]: r for r in entry[wanted]}
    for object_id in entry["ids"]:
        if object_id not in target:
            db.execute("DELETE FROM objects WHERE id = ? AND image_id = ?", (object_id, image_id))
            continue
        r = target[object_id]
        values = (_class_of(db, r), r["x0"], r["y0"], r["x1"], r["y1"], r["score"], r["source"], r["mask"], r["clicks"])
        if object_id in current:
            db.execute("UPDATE objects SET class_id = ?, x0 = ?, y0 = ?, x1 = ?, y1 = ?, score = ?, source = ?, mask = ?, "
                       "clicks = ? WHERE id = ? AND image_id = ?", (*values, object_id, image_id))
        else:  # AUTOINCREMENT never hands a deleted id to another object, so the old id is free
            db.execute("INSERT INTO objects (id, image_id, class_id, x0, y0, x1, y1, score, source, mask, clicks) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (object_id, image_id, *values))
    status_before, status_after = entry["status"]
    is_now, becomes = (status_after, status_before) if now == "after" else (status_before, status_after)
    if status == is_now and becomes != is_now:  # a status a person set since stays
        db.execute("UPDATE images SET status = ? WHERE id = ?", (becomes, image_id))
    drop_unused_phrases(db)


def _same(db: sqlite3.Connection, now: dict, then: dict) -> bool:
    """The object is as the entry left it. Its label is the same if it is the same class row (renamed or
    not), or if that row is gone and the object's label has its name: a class or phrase removed and
    brought back by an undo is a new row of the same name."""
    if any(now[k] != then[k] for k in _COMPARED if k != "class_id"):
        return False
    if now["class_id"] == then["class_id"]:
        return True
    gone = db.execute("SELECT 1 FROM classes WHERE id = ?", (then["class_id"],)).fetchone() is None
    return gone and now["class_name"].casefold() == then["class_name"].casefold()


def _class_of(db: sqlite3.Connection, row: dict) -> int:
    """The class the row had: the same class if it still exists (renamed or not), else one of its name,
    else it comes back (a class deleted since returns with the object that used it)."""
    if db.execute("SELECT 1 FROM classes WHERE id = ?", (row["class_id"],)).fetchone():
        return row["class_id"]
    found = db.execute("SELECT id FROM classes WHERE name = ?", (row["class_name"],)).fetchone()
    if found:
        return found[0]
    return db.execute("INSERT INTO classes (name, position, kind) VALUES (?, ?, ?)",
                      (row["class_name"], next_class_position(db), row["kind"])).lastrowid
