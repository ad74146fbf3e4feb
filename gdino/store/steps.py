"""Undo and redo on an image: a step of its own history or of the project's journal, whichever is next
(`history.next_step`), in one transaction, with the files a journal step links or frees."""

from __future__ import annotations

from . import history
from .db import Database
from .errors import ProjectError
from .files import Files
from .journal import Journal, describe
from .records import Guard, objects_now, require


class Steps:
    """Undo, redo and what they would do (`Project.undo`, `redo`, `next_step`, `history`)."""

    def __init__(self, database: Database, files: Files, journal: Journal):
        self._db = database
        self._files = files
        self._journal = journal

    def step(self, image_id: int, undo: bool, guard: Guard | None, after: Guard | None) -> bool:
        """Undo (or redo) on the image; see `Project.undo`."""
        conflict, touched, placed, later = None, [], [], []
        try:
            with self._db.write() as db:
                require(db, image_id)

                def check(ids: list[int]) -> None:
                    touched.extend(ids)
                    if guard is not None:
                        guard(objects_now(db, image_id, ids))
                step = history.next_step(db, image_id, undo=undo)
                try:
                    if step is None:
                        done = False
                    elif step[0] == "journal":
                        later = self._journal.step(db, step[1], undo, image_id, check, placed)
                        done = True
                    else:
                        done = (history.undo if undo else history.redo)(db, image_id, check)
                    if done and after is not None:
                        after(objects_now(db, image_id, touched))
                except history.HistoryConflictError as err:  # the cleared history is committed, then reported
                    conflict, done = err, False
        except BaseException:  # what it placed for a step that did not commit: files linked back, a trash folder
            self._files.discard(placed)
            raise
        for action in later:
            action()
        if conflict is not None:
            raise ProjectError(str(conflict))
        return done

    def next_step(self, image_id: int, *, undo: bool) -> str | None:
        with self._db.read() as db:
            step = history.next_step(db, image_id, undo=undo)
            if step is None or step[0] != "journal":
                return None
            entry = history.journal_entry(db, step[1])
        return describe(entry)

    def person_edited(self, image_id: int) -> bool:
        with self._db.read() as db:
            require(db, image_id)
            return history.person_edited(db, image_id)

    def available(self, image_id: int) -> tuple[bool, bool]:
        with self._db.read() as db:
            require(db, image_id)
            return history.available(db, image_id)


