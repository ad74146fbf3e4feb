"""Opening a project's SQLite file with the settings every connection needs, and SQLite's failures in words."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .errors import StoreError

DB_NAME = "project.sqlite"  # a project's database, in its folder
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction before giving up


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open the database file with the durability settings every connection needs.

    read_only: for a project on read-only storage (a mounted archive, a CD, a read-only share). SQLite
    cannot open a WAL database there the usual way (it needs to create the -shm file), so the file is
    opened as immutable: readable, never written."""
    # autocommit mode (isolation_level=None): transactions are explicit BEGIN ... COMMIT in the caller.
    # check_same_thread=False: the caller serializes access with a lock, and the app calls from worker threads.
    if read_only:
        uri = f"{path.absolute().as_uri()}?mode=ro&immutable=1"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA query_only=ON")
        return db
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        # WAL: a commit appends to the log, so a process killed mid-write leaves the last commit intact and
        # readers never block the writer.
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            _switch_to_wal(db)
        # FULL rather than NORMAL: NORMAL with WAL already survives a killed process, but may drop the last
        # commits on power loss; those are a person's label edits. FULL costs one fsync per commit, nothing
        # at human editing speed.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")  # per connection; the cascades and class references rely on it
    except BaseException:
        db.close()
        raise
    return db


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """Turn a new database file into WAL mode. Two connections switching one new file at once deadlock inside
    SQLite's locks, which it answers at once with "database is locked" (its busy wait does not apply there): two
    `gdino label` runs starting on one new project refused one. So a locked answer is tried again, as SQLite's
    busy wait would, for up to BUSY_TIMEOUT_S. (Not a flock on the folder: the app holds one on it already.)"""
    deadline, pause = time.monotonic() + BUSY_TIMEOUT_S, 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err).lower() or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def translate(err: sqlite3.Error, directory: Path) -> StoreError:
    """SQLite's own words for a failed operation -> a ProjectError that says what happened and what to do.
    Every such failure rolls back its transaction, so the message can promise that nothing changed."""
    text = str(err).lower()
    if "locked" in text or "busy" in text:
        return StoreError(f"the project {directory} is busy: another program (another gdino command or the app) "
                            f"kept it locked for more than {BUSY_TIMEOUT_S:.0f} s; nothing was changed, try again "
                            "when it is done")
    if "full" in text:
        return StoreError(f"the disk holding the project {directory} is full; nothing was changed: free some space "
                            "and try again")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"the project {directory} is read-only (read-only storage or files); it can be viewed "
                            "and exported, not changed: copy the folder to writable storage to edit it")
    if "disk i/o" in text or "unable to open" in text:
        return StoreError(f"the project {directory} could not be read or written ({err}); check the disk and the "
                            "folder's permissions")
    if "malformed" in text or "not a database" in text:
        return StoreError(f"{directory / DB_NAME} is damaged or not a project database ({err})")
    return StoreError(f"the project {directory} could not be updated ({err}); nothing was changed")
