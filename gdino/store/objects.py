"""An image's objects: reading them, and the one path that changes them, which records each change in the image's
history (`history`): a person's edit (`edit`) and a model run's result (`replace_model`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence

from .. import checks
from . import history
from .classes import add_classes, add_phrases, class_id, names_of
from .db import Database
from .errors import ProjectError
from .records import Guard, ImageRecord, ObjectRecord, ObjectState, image, object_, objects_now, objects_of, require
from .schema import drop_unused_phrases
from .values import mask_json, to_json

_STATE_COLUMNS = "class_id, x0, y0, x1, y1, score, source, mask, clicks"


def state_values(db: sqlite3.Connection, record: ImageRecord, state: ObjectState, *, phrases: bool = True) -> tuple:
    """An object's state, checked against its image -> the values of _STATE_COLUMNS."""
    x0, y0, x1, y1 = checks.box_on_image(state.box, record.width, record.height, ProjectError)
    clicks = None if state.clicks is None else to_json(state.clicks, "the clicks", dict)
    return (class_id(db, state.class_name, phrases=phrases), x0, y0, x1, y1, checks.score(state.score, ProjectError),
            checks.source(state.source, ProjectError), mask_json(state.mask, record.width, record.height), clicks)


def insert_object(db: sqlite3.Connection, record: ImageRecord, state: ObjectState, *, phrases: bool = True) -> int:
    """Store a new object of the image -> its id (no history: the caller records one, or adds a new image)."""
    cur = db.execute(f"INSERT INTO objects ({_STATE_COLUMNS}, image_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (*state_values(db, record, state, phrases=phrases), record.id))
    return cur.lastrowid


def state_of(obj: object, k: int, source: str, *, model: bool) -> ObjectState:
    """A dict {box, class_name, score, mask?} of a caller -> its ObjectState (ProjectError names objects[k]).
    model: a model's object, whose score is required (not None); else the score is optional."""
    keys = "box, class_name, score (and optionally mask)" if model else "box, class_name (and optionally score, mask)"
    if not isinstance(obj, dict) or not ({"box", "class_name", "score"} if model else {"box", "class_name"}) <= obj.keys():
        raise ProjectError(f"objects[{k}] must be a dict with keys {keys}, got {obj!r}")
    if model and obj["score"] is None:
        raise ProjectError(f"objects[{k}] has score None; model objects need a score")
    return ObjectState(obj["class_name"], obj["box"], obj.get("score"), source, obj.get("mask"))


class Objects:
    """Reads of an image's objects, and the changes to them that its history records."""

    def __init__(self, database: Database):
        self._db = database

    def list(self, image_id: int) -> list[ObjectRecord]:
        with self._db.read() as db:
            require(db, image_id)
            return objects_of(db, image_id)

    def view(self, image_id: int) -> tuple[ImageRecord, list[ObjectRecord], list[str], tuple[bool, bool]]:
        with self._db.read() as db:
            record = image(db, self._db.directory, image_id)
            return record, objects_of(db, image_id), names_of(db, "class"), history.available(db, image_id)

    def last_run(self, image_id: int) -> dict | None:
        with self._db.read() as db:
            require(db, image_id)
            row = db.execute("SELECT run FROM runs WHERE image_id = ?", (image_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def replace_model(self, image_id: int, objects: Sequence[dict], *, run: dict | None = None,
                      if_status: Iterable[str] | None = None, classes: Sequence[str] = (),
                      phrases: Sequence[str] = ()) -> list[ObjectRecord] | None:
        """See `Project.replace_model_objects`."""
        run_json = None if run is None else to_json(run, "run", dict)
        allowed = None if if_status is None else {checks.status(s, ProjectError) for s in if_status}
        states = [state_of(obj, k, "model", model=True) for k, obj in enumerate(objects)]
        with self._db.write() as db:
            record = image(db, self._db.directory, image_id)
            if allowed is not None and record.status not in allowed:
                return None
            decisions = history.decided(db, image_id)
            kept = [s for s in states if not history.is_decided(s.class_name, s.box, decisions)]
            used = {str(s.class_name).strip().casefold() for s in kept}
            add_classes(db, [c for c in checks.class_names(classes, ProjectError) if c.casefold() in used])
            add_phrases(db, [c for c in checks.class_names(phrases, ProjectError) if c.casefold() in used])
            replaced = [i for (i,) in db.execute("SELECT id FROM objects WHERE image_id = ? AND source = 'model'", (image_id,))]
            before = history.rows(db, image_id, replaced)
            db.execute("DELETE FROM objects WHERE image_id = ? AND source = 'model'", (image_id,))
            new = [object_(db, insert_object(db, record, state)) for state in kept]
            drop_unused_phrases(db)
            if record.status != "reviewed":
                db.execute("UPDATE images SET status = 'auto' WHERE id = ?", (image_id,))
            if before or new or record.status not in ("reviewed", "auto"):  # one undoable edit; the history before stays
                history.record(db, image_id, before, [o.id for o in new], record.status, person=False)
            db.execute("DELETE FROM runs WHERE image_id = ?", (image_id,))
            if run_json is not None:
                db.execute("INSERT INTO runs (image_id, run) VALUES (?, ?)", (image_id, run_json))
        return new

    def add_model(self, image_id: int, states: Sequence[ObjectState], choose: Callable, *,
                  if_status: Iterable[str] | None = None, expect: Sequence[ObjectRecord] = (),
                  person: bool = False, after: Guard | None = None) -> list[ObjectRecord] | None:
        """See `Project.add_model_objects`."""
        allowed = None if if_status is None else {checks.status(s, ProjectError) for s in if_status}
        with self._db.write() as db:
            record = image(db, self._db.directory, image_id)
            if allowed is not None and record.status not in allowed:
                return None
            now = objects_now(db, image_id, [o.id for o in expect])
            if any(now[r.id] != r for r in expect):
                raise ProjectError("that box was changed meanwhile (in another window, or by a run); the canvas "
                                   "shows it as it is now: edit it again")
            decisions = history.decided(db, image_id)
            undecided = [s for s in states if not history.is_decided(s.class_name, s.box, decisions)]
            kept = [undecided[k] for k in choose(objects_of(db, image_id), undecided)]
            if not kept:
                return []
            add_classes(db, checks.class_names(dict.fromkeys(s.class_name.strip() for s in kept), ProjectError))
            added = [insert_object(db, record, state) for state in kept]
            db.execute("UPDATE images SET status = 'auto' WHERE id = ? AND status = 'unlabeled'", (image_id,))
            history.record(db, image_id, {}, added, record.status, person=person)
            if after is not None:
                after(objects_now(db, image_id, added))
            return [object_(db, i) for i in added]

    def edit(self, image_id: int, changes: dict[int, ObjectState | None] | None = None,
             new: Sequence[ObjectState] = (), *, expect: Sequence[ObjectRecord] = (),
             after: Guard | None = None) -> list[ObjectRecord]:
        """See `Project.edit_objects`."""
        changes = dict(changes or {})
        with self._db.write() as db:
            record = image(db, self._db.directory, image_id)
            current = history.rows(db, image_id, changes)
            now = objects_now(db, image_id, [o.id for o in expect])
            if any(now[r.id] != r for r in expect):
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
            add_classes(db, checks.class_names(wanted.values(), ProjectError))  # several boxes may get one class
            for object_id, state in changes.items():
                if state is None:
                    db.execute("DELETE FROM objects WHERE id = ?", (object_id,))
                    continue
                db.execute("UPDATE objects SET class_id = ?, x0 = ?, y0 = ?, x1 = ?, y1 = ?, score = ?, source = ?, "
                           "mask = ?, clicks = ? WHERE id = ?", (*state_values(db, record, state), object_id))
            added = [insert_object(db, record, state) for state in new]
            if added:
                db.execute("UPDATE images SET status = 'auto' WHERE id = ? AND status = 'unlabeled'", (image_id,))
            drop_unused_phrases(db)
            history.record(db, image_id, before, [*changes, *added], record.status)
            if after is not None:
                after(objects_now(db, image_id, [*changes, *added]))
            return [object_(db, i) for i in added]
