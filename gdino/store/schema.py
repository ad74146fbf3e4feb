"""What a project database holds: its tables as an ordered list of migrations, and the small queries about
them that more than one writer needs.

Schema version = `PRAGMA user_version` = how many of MIGRATIONS have been applied. Opening a database
applies the missing ones in one transaction together with the version bump, so a crash mid-migration
leaves the old version intact. Never edit a released migration: append a new one.
"""

from __future__ import annotations

import sqlite3

from .errors import ProjectError

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: classes, images, objects, settings. AUTOINCREMENT so that a deleted object's id is never handed to
    # a new one: the UI may still hold the old id.
    (
        """CREATE TABLE classes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            position INTEGER NOT NULL)""",
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,  -- NOCASE: it is also a file name in images/
            path TEXT NOT NULL,  -- relative to the project directory if copied in (it can move), else absolute
            copied INTEGER NOT NULL CHECK (copied IN (0, 1)),
            width INTEGER NOT NULL,  -- upright: EXIF orientation applied
            height INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'unlabeled' CHECK (status IN ('unlabeled', 'auto', 'reviewed', 'skipped')))""",
        """CREATE TABLE objects (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            class_id INTEGER NOT NULL REFERENCES classes(id),
            x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,  -- upright image pixels
            score REAL,
            source TEXT NOT NULL CHECK (source IN ('model', 'manual')),
            mask TEXT)  -- COCO RLE as JSON""",
        "CREATE INDEX objects_by_image ON objects(image_id)",
        "CREATE INDEX objects_by_class ON objects(class_id)",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    # 2: the detection run (prompt, thresholds) behind each image's model objects
    (
        """CREATE TABLE runs (
            image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            run TEXT NOT NULL)""",
    ),
    # 3: "least confident first" reads each image's lowest model score from an index
    (
        "CREATE INDEX objects_by_image_source_score ON objects(image_id, source, score)",
        "DROP INDEX objects_by_image",  # a prefix of the new one
        "CREATE INDEX images_by_status ON images(status)",
    ),
    # 4: where each image came from (the command line's absolute source path), with a unique key, written in the
    # same transaction as the image: a re-run, a kill or a second process can never add the same file twice.
    # Earlier versions kept these as "cli.source:<path>" settings; they move here.
    (
        """CREATE TABLE sources (
            key TEXT PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE)""",
        "CREATE INDEX sources_by_image ON sources(image_id)",
        """INSERT OR IGNORE INTO sources (key, image_id)
            SELECT substr(s.key, 12), CAST(s.value AS INTEGER) FROM settings s
            WHERE s.key LIKE 'cli.source:%' AND CAST(s.value AS INTEGER) IN (SELECT id FROM images)
            ORDER BY CAST(s.value AS INTEGER)""",
        "DELETE FROM settings WHERE key LIKE 'cli.source:%'",
    ),
    # 5: free-text phrases. A phrase the model found for a free-text prompt in the app labels its objects
    # like a class does, but is not one of the project's classes (not in the class list, not a category of
    # an export) until a person maps it to a class. Both share the table so that names stay unique
    # across them and an object always references one row. Existing rows are classes.
    (
        "ALTER TABLE classes ADD COLUMN kind TEXT NOT NULL DEFAULT 'class' CHECK (kind IN ('class', 'phrase'))",
    ),
    # 6: the canvas. Each object keeps the SAM clicks behind its mask (JSON: {"box", "points"}), and each
    # image the history of a person's edits, for undo and redo that survive a reload (gdino/store/history.py).
    (
        "ALTER TABLE objects ADD COLUMN clicks TEXT",
        """CREATE TABLE edits (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            entry TEXT NOT NULL,  -- JSON: the touched objects' rows before and after, the status before and after
            undone INTEGER NOT NULL DEFAULT 0 CHECK (undone IN (0, 1)))""",
        "CREATE INDEX edits_by_image ON edits(image_id, undone, id)",
    ),
    # 7: the sources of images a person removed (gdino rm, the app's Remove image), so that labeling the same
    # folder again leaves them out instead of adding them back without a word. Adding an image by that key
    # again (asked for: `gdino label --add-removed`, an upload) forgets the removal.
    (
        "CREATE TABLE removed (key TEXT PRIMARY KEY, name TEXT NOT NULL)",
    ),
    # 8: undo across images (gdino/store/history.py). The journal keeps what a removal of images or of a class with its
    # objects took out, as rows, so that Ctrl+Z can put every one back; `rejected` keeps the model boxes a person
    # deleted or changed, which a new model run on the image does not add again while that edit stands.
    (
        """CREATE TABLE journal (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            after_edit INTEGER NOT NULL,  -- the newest edits.id handed out when it was written: orders it among them
            entry TEXT NOT NULL,  -- JSON: the rows it removed (gdino/store/history.py)
            undone INTEGER NOT NULL DEFAULT 0 CHECK (undone IN (0, 1)))""",
        """CREATE TABLE rejected (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            edit_id INTEGER NOT NULL,  -- the edit that deleted or changed the box: it counts while that is not undone
            class_name TEXT NOT NULL,
            x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL)""",
        "CREATE INDEX rejected_by_image ON rejected(image_id)",
    ),
)


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations the database lacks; returns the schema version it is now at."""
    latest = len(MIGRATIONS)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == latest:
        return version  # no write lock taken, so an up-to-date project opens on read-only media too
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated meanwhile
        if version > latest:
            raise ProjectError(f"this project was written by a newer gdino (schema version {version}; this gdino "
                               f"knows up to {latest}); upgrade gdino to open it")
        if version == 0 and db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
            raise ProjectError("the database has tables but no gdino schema version; it is not a gdino project")
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            try:
                for sql in statements:
                    db.execute(sql)
            except sqlite3.Error as err:
                raise ProjectError(f"could not migrate the project from schema version {version} to {latest}: "
                                   f"migration {number} failed ({err}); the project is unchanged") from err
        db.execute(f"PRAGMA user_version = {latest}")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return latest


# -- small queries more than one writer needs --------------------------------------------------------


def next_class_position(db: sqlite3.Connection) -> int:
    """The position after every class and phrase: where a new (or newly promoted) one goes."""
    return db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM classes").fetchone()[0]


def drop_unused_phrases(db: sqlite3.Connection) -> None:
    """Phrases no object uses any more go (a phrase exists only as the label of objects)."""
    db.execute("DELETE FROM classes WHERE kind = 'phrase' AND NOT EXISTS "
               "(SELECT 1 FROM objects o WHERE o.class_id = classes.id)")
