"""The project's class list, and the free-text phrases that label objects until a person maps them to a class.

Classes and phrases share one table (names unique across both, compared case-insensitively), so that an object
always references one row; `kind` tells them apart.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from .. import checks
from ..checks import show_name
from . import history
from .db import Database
from .errors import ProjectError
from .files import Files
from .journal import delete_class
from .schema import next_class_position


def names_of(db: sqlite3.Connection, kind: str) -> list[str]:
    """The names of every class (kind "class") or phrase ("phrase"), in the project's order."""
    return [n for (n,) in db.execute("SELECT name FROM classes WHERE kind = ? ORDER BY position, id", (kind,))]


def class_id(db: sqlite3.Connection, name: str, *, phrases: bool = False) -> int:
    """The row of a class (phrases=True: or of a phrase; a model run stores either)."""
    row = db.execute("SELECT id, kind FROM classes WHERE name = ?", (str(name).strip(),)).fetchone()
    if row is None or (row[1] == "phrase" and not phrases):
        raise ProjectError(f"unknown class {show_name(name)}; the project's classes are {names_of(db, 'class')} "
                           "(add it with add_classes)")
    return row[0]


def add_classes(db: sqlite3.Connection, names: list[str]) -> list[str]:
    """Append the classes the project lacks -> those added. A name that is a phrase makes that phrase a class
    (its objects with it), respelled as given."""
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


def add_phrases(db: sqlite3.Connection, names: list[str]) -> None:
    """Phrases the project lacks (a name that is already a class or phrase stays what it is)."""
    known = {n.casefold() for (n,) in db.execute("SELECT name FROM classes")}
    for name in names:
        if name.casefold() not in known:
            position = next_class_position(db)
            db.execute("INSERT INTO classes (name, position, kind) VALUES (?, ?, 'phrase')", (name, position))
            known.add(name.casefold())


class Classes:
    """The class list's reads and changes, one transaction each (`Project.classes`, `add_classes`, ...)."""

    def __init__(self, database: Database, files: Files):
        self._db = database
        self._files = files

    def all(self) -> list[str]:
        with self._db.read() as db:
            return names_of(db, "class")

    def phrases(self) -> list[str]:
        with self._db.read() as db:
            return [name for (name,) in db.execute(
                "SELECT c.name FROM classes c WHERE c.kind = 'phrase' AND EXISTS (SELECT 1 FROM objects o "
                "WHERE o.class_id = c.id) ORDER BY c.position, c.id")]

    def add(self, names: Iterable[str]) -> list[str]:
        names = checks.class_names(names, ProjectError)
        with self._db.write() as db:
            return add_classes(db, names)

    def map_phrase(self, phrase: str, class_name: str) -> int:
        (target,) = checks.class_names([class_name], ProjectError)
        with self._db.write() as db:
            row = db.execute("SELECT id, kind FROM classes WHERE name = ?", (str(phrase).strip(),)).fetchone()
            if row is None or row[1] != "phrase":
                raise ProjectError(f"{phrase!r} is not a phrase found by a free-text prompt in this project; "
                                   f"its phrases are {names_of(db, 'phrase')}")
            phrase_id = row[0]
            moved = db.execute("SELECT COUNT(*) FROM objects WHERE class_id = ?", (phrase_id,)).fetchone()[0]
            other = db.execute("SELECT id FROM classes WHERE name = ? AND id != ?", (target, phrase_id)).fetchone()
            if other is None:  # a new class: the phrase's row, renamed, is promoted to it
                db.execute("UPDATE classes SET name = ? WHERE id = ?", (target, phrase_id))
            add_classes(db, [target])  # promotes that row, or another phrase named so; a class stays
            if other is not None:  # an existing class (or another phrase, now a class): the objects join it
                db.execute("UPDATE objects SET class_id = ? WHERE class_id = ?", (other[0], phrase_id))
                db.execute("DELETE FROM classes WHERE id = ?", (phrase_id,))
        return moved

    def rename(self, old: str, new: str) -> None:
        (new,) = checks.class_names([new], ProjectError)
        with self._db.write() as db:
            cid = class_id(db, old)
            clash = db.execute("SELECT name, kind FROM classes WHERE name = ? AND id != ?", (new, cid)).fetchone()
            if clash:
                what = "a found phrase is named" if clash[1] == "phrase" else "the class"
                raise ProjectError(f"cannot rename {old!r} to {new!r}: {what} {clash[0]!r} already exists "
                                   "(names are compared case-insensitively)")
            db.execute("UPDATE classes SET name = ? WHERE id = ?", (new, cid))

    def remove(self, name: str, *, delete_objects: bool = False) -> None:
        with self._db.write() as db:
            cid = class_id(db, name)
            used = db.execute("SELECT COUNT(*) FROM objects WHERE class_id = ?", (cid,)).fetchone()[0]
            if used and not delete_objects:
                raise ProjectError(f"the class {show_name(name)} is used by {used} object(s); pass delete_objects=True to "
                                   "delete them with it, or rename_class it instead")
            if not used:  # no labels go: nothing to undo (the class list is not the person's labels)
                db.execute("DELETE FROM classes WHERE id = ?", (cid,))
                return
            dropped = history.journal_add(db, delete_class(db, cid))
        self._files.drop_trash(dropped)

    def merge(self, name: str, into: str) -> int:
        with self._db.write() as db:
            source, target = class_id(db, name), class_id(db, into)
            if source == target:
                raise ProjectError(f"{show_name(name)} and {show_name(into)} are the same class")
            moved = db.execute("UPDATE objects SET class_id = ? WHERE class_id = ?", (target, source)).rowcount
            db.execute("DELETE FROM classes WHERE id = ?", (source,))
        return moved

    def set(self, names: Sequence[str]) -> None:
        names = checks.class_names(names, ProjectError)
        with self._db.write() as db:
            add_classes(db, names)  # a listed phrase becomes a class (with its objects)
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
