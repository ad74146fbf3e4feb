"""An image's edit history in the project database: undo and redo that survive a reload and a restart.

An entry holds the objects one edit touched, as rows before and after it (by object id), and the
image's status before and after. Undo writes the "before" rows back, redo the "after" rows, inside the
caller's transaction, and only while those objects are exactly as the entry left them; if something
else changed them meanwhile (a model run, another window), the entry cannot apply and the image's
history is cleared, with a message that says so. A new edit drops what was undone (no redo branch).

A model run on the image (`Project.replace_model_objects`) is one such entry too. A model box that a person's
edit deleted or changed is kept as "rejected" while that edit stands (not undone): a new run on the image does
not add a box of the same label overlapping it at IoU >= REJECT_IOU again, nor one that overlaps a box a person
made (source "manual") so. What a person decided stays decided.

Removing images, or a class with its objects, touches many images: such a change is an entry of the project's
journal (table `journal`), holding every row it removed. Ctrl+Z on any image undoes the newest step of that
image's history or of the journal, whichever came last (`next_step`); Ctrl+Shift+Z redoes the step undone last.
A person's new edit or a new journal entry drops the journal's undone entries (no redo branch); JOURNAL_LIMIT
entries are kept.

Functions here take the open connection of a write transaction (`Database.write`); nothing commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence

from .schema import drop_unused_phrases, next_class_position

LIMIT = 200  # entries kept per image; older ones are dropped
JOURNAL_LIMIT = 50  # project-level entries kept (each may hold a removed image's file in the project's trash)
REJECT_IOU = 0.5  # a new model box this close to a rejected or manual box of its label is the same object

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


def record(db: sqlite3.Connection, image_id: int, before: dict[int, dict], ids: Iterable[int], status_before: str,
           *, person: bool = True) -> None:
    """Add an entry for an edit that touched `ids` (before: their rows read in the same transaction before
    the edit; ids created by the edit are absent from it). Drops the undone entries of the image (and of the
    journal). person: a person's edit, whose deleted or changed model boxes become rejected and which drops the
    journal's undone entries; a model run does neither."""
    ids = sorted(set(ids) | set(before))
    after = rows(db, image_id, ids)
    status_after = db.execute("SELECT status FROM images WHERE id = ?", (image_id,)).fetchone()[0]
    entry = {"ids": ids, "before": list(before.values()), "after": list(after.values()),
             "status": [status_before, status_after], "person": person}
    _drop_undone(db, image_id)
    if person:  # a person's new edit ends the journal's redo too (a run in the background does not)
        db.execute("DELETE FROM journal WHERE undone = 1")
    edit_id = db.execute("INSERT INTO edits (image_id, entry) VALUES (?, ?)", (image_id, json.dumps(entry))).lastrowid
    db.execute("DELETE FROM edits WHERE image_id = ? AND id NOT IN "
               "(SELECT id FROM edits WHERE image_id = ? ORDER BY id DESC LIMIT ?)", (image_id, image_id, LIMIT))
    if person:
        for row in before.values():
            if row["source"] == "model" and after.get(row["id"]) != row:
                db.execute("INSERT INTO rejected (image_id, edit_id, class_name, x0, y0, x1, y1) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (image_id, edit_id, row["class_name"], row["x0"], row["y0"], row["x1"], row["y1"]))


def _drop_undone(db: sqlite3.Connection, image_id: int) -> None:
    """Drop the image's undone entries, with the rejections they made (those were taken back)."""
    db.execute("DELETE FROM rejected WHERE edit_id IN (SELECT id FROM edits WHERE image_id = ? AND undone = 1)", (image_id,))
    db.execute("DELETE FROM edits WHERE image_id = ? AND undone = 1", (image_id,))


def decided(db: sqlite3.Connection, image_id: int) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(label, xyxy box) of what a person decided on the image: the model boxes they deleted or changed (while
    that edit is not undone) and the boxes they made or edited (source "manual")."""
    found = db.execute("SELECT r.class_name, r.x0, r.y0, r.x1, r.y1 FROM rejected r WHERE r.image_id = ? AND NOT EXISTS "
                       "(SELECT 1 FROM edits e WHERE e.id = r.edit_id AND e.undone = 1) UNION ALL "
                       "SELECT c.name, o.x0, o.y0, o.x1, o.y1 FROM objects o JOIN classes c ON c.id = o.class_id "
                       "WHERE o.image_id = ? AND o.source = 'manual'", (image_id, image_id)).fetchall()
    return [(name, (x0, y0, x1, y1)) for name, x0, y0, x1, y1 in found]


def is_decided(class_name: str, box: Sequence[float], decisions: list[tuple[str, tuple[float, float, float, float]]]) -> bool:
    """A model box a person decided on already: same label (case-insensitively), IoU >= REJECT_IOU."""
    label = str(class_name).strip().casefold()
    return any(name.casefold() == label and iou(box, other) >= REJECT_IOU for name, other in decisions)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def clock(db: sqlite3.Connection) -> int:
    """The newest edit id handed out so far (AUTOINCREMENT: every later edit has a larger one)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'edits'").fetchone()
    return 0 if row is None else int(row[0])


def journal_add(db: sqlite3.Connection, entry: dict) -> list[dict]:
    """Add a project-level entry (drops the undone ones); returns the entries dropped past JOURNAL_LIMIT, whose
    files the caller deletes once the transaction commits."""
    db.execute("DELETE FROM journal WHERE undone = 1")
    db.execute("INSERT INTO journal (after_edit, entry) VALUES (?, ?)", (clock(db), json.dumps(entry)))
    keep = "SELECT id FROM journal ORDER BY id DESC LIMIT ?"
    dropped = [json.loads(e) for (e,) in db.execute(f"SELECT entry FROM journal WHERE id NOT IN ({keep})", (JOURNAL_LIMIT,))]
    db.execute(f"DELETE FROM journal WHERE id NOT IN ({keep})", (JOURNAL_LIMIT,))
    return dropped


def journal_entry(db: sqlite3.Connection, journal_id: int) -> dict:
    return json.loads(db.execute("SELECT entry FROM journal WHERE id = ?", (journal_id,)).fetchone()[0])


def journal_mark(db: sqlite3.Connection, journal_id: int, entry: dict, *, undone: bool) -> None:
    """The entry undone or done again (a redo removes again: `entry` holds what it removed this time)."""
    db.execute("UPDATE journal SET entry = ?, undone = ? WHERE id = ?", (json.dumps(entry), int(undone), journal_id))


def next_step(db: sqlite3.Connection, image_id: int, *, undo: bool) -> tuple[str, int] | None:
    """What Ctrl+Z (undo) or Ctrl+Shift+Z on the image takes: ("edit", id) of its own history or ("journal", id)
    of the project's, whichever was done last (undo) or undone last (redo); None: nothing."""
    if undo:
        edit = db.execute("SELECT MAX(id) FROM edits WHERE image_id = ? AND undone = 0", (image_id,)).fetchone()[0]
        journal = db.execute("SELECT id, after_edit FROM journal WHERE undone = 0 ORDER BY id DESC LIMIT 1").fetchone()
        if journal is not None and (edit is None or journal[1] >= edit):
            return "journal", journal[0]
    else:
        edit = db.execute("SELECT MIN(id) FROM edits WHERE image_id = ? AND undone = 1", (image_id,)).fetchone()[0]
        journal = db.execute("SELECT id, after_edit FROM journal WHERE undone = 1 ORDER BY id LIMIT 1").fetchone()
        if journal is not None and (edit is None or journal[1] < edit):
            return "journal", journal[0]
    return None if edit is None else ("edit", edit)


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
    """(can undo, can redo) on the image: its own history or the project's journal."""
    return next_step(db, image_id, undo=True) is not None, next_step(db, image_id, undo=False) is not None


def person_edited(db: sqlite3.Connection, image_id: int) -> bool:
    """Whether an edit of a person on the image stands (not undone). A model run's entry is not one; an entry
    written before entries said whose they were counts as a person's (only a person's edits were kept then)."""
    return db.execute("SELECT 1 FROM edits WHERE image_id = ? AND undone = 0 AND "
                      "coalesce(json_extract(entry, '$.person'), 1) = 1 LIMIT 1", (image_id,)).fetchone() is not None


def forget(db: sqlite3.Connection, image_id: int) -> None:
    """Clear the image's history (its objects were changed otherwise: earlier edits no longer apply). The
    rejections of edits that stand stay: they were decided."""
    _drop_undone(db, image_id)
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
        class_id = class_back(db, r["class_id"], r["class_name"], r["kind"])
        values = (class_id, r["x0"], r["y0"], r["x1"], r["y1"], r["score"], r["source"], r["mask"], r["clicks"])
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


def class_back(db: sqlite3.Connection, class_id: int, name: str, kind: str) -> int:
    """The class a row restored from history or the journal had: the same class if it still exists (renamed or
    not), else one of its name, else it comes back (a class deleted since returns with the object that used it)."""
    if db.execute("SELECT 1 FROM classes WHERE id = ?", (class_id,)).fetchone():
        return class_id
    found = db.execute("SELECT id FROM classes WHERE name = ?", (name,)).fetchone()
    if found:
        return found[0]
    return db.execute("INSERT INTO classes (name, position, kind) VALUES (?, ?, ?)",
                      (name, next_class_position(db), kind)).lastrowid
