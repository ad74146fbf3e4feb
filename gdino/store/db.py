"""The transaction core: one connection guarded by one lock, writes as BEGIN IMMEDIATE transactions (or
savepoints inside `batch`), reads as one snapshot each. Every other part of the store writes through it."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .connection import translate
from .errors import ProjectError, StoreError


class Database:
    """An open project database. One connection, guarded by a lock, so the app's worker threads may share
    it. Several processes may open the same project: writes take SQLite's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, directory: Path, db: sqlite3.Connection, *, read_only: bool = False):
        self.directory = directory
        self.connection: sqlite3.Connection | None = db
        self.lock = threading.RLock()
        self.read_only = read_only  # on read-only storage: every read works, every change is refused
        self._batch_depth = 0  # > 0 inside batch(): writes are savepoints of its one transaction
        self._batch_lost: str | None = None  # why the batch's transaction ended early (a full disk): refuse the rest

    def close(self) -> None:
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None

    def open(self) -> sqlite3.Connection:
        if self.connection is None:
            raise ProjectError(f"the project {self.directory} is closed; open it again")
        return self.connection

    def check_writable(self) -> None:
        if self.read_only:
            raise translate(sqlite3.OperationalError("readonly"), self.directory)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed on success and rolled back on any exception. SQLite's failures
        (busy past the timeout, disk full, read-only) come out as ProjectErrors that say what to do.
        Inside `batch()`: a savepoint of the batch's transaction, undone alone on an exception."""
        with self.lock:
            db = self.open()
            self.check_writable()
            if self._batch_depth:
                with self._savepoint(db):
                    yield db
                return
            try:
                db.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
            except sqlite3.Error as err:
                raise translate(err, self.directory) from err
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as err:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(err, sqlite3.Error):
                    raise translate(err, self.directory) from err
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
                raise translate(err, self.directory) from err
            try:
                yield
                if self._batch_lost is not None:  # a nested write failed and its caller went on: no RELEASE now
                    raise StoreError(f"{self._batch_lost} (none of this batch was stored)")
            except BaseException as err:
                translated = translate(err, self.directory) if isinstance(err, sqlite3.Error) else err
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
                self._batch_lost = str(translate(err, self.directory))
                raise translate(err, self.directory) from err
        finally:
            self._batch_depth -= 1

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes, one commit: see `Project.batch`."""
        with self.lock:
            outermost = self._batch_depth == 0
            try:
                with self.write():
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
    def read(self) -> Iterator[sqlite3.Connection]:
        """One snapshot for the several queries of a read (inside batch(): its transaction, with its changes)."""
        with self.lock:
            db = self.open()
            if self._batch_depth:
                try:
                    yield db
                except sqlite3.Error as err:
                    raise translate(err, self.directory) from err
                return
            try:
                db.execute("BEGIN")
                try:
                    yield db
                finally:
                    if db.in_transaction:
                        db.execute("COMMIT")
            except sqlite3.Error as err:
                raise translate(err, self.directory) from err
