"""What a project database holds: its tables as an ordered list of migrations, how it is opened, and the
checks a value passes before it is stored.

Schema version = `PRAGMA user_version` = how many of MIGRATIONS have been applied. Opening a database
applies the missing ones in one transaction together with the version bump, so a crash mid-migration
leaves the old version intact. Never edit a released migration: append a new one.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STATUSES = ("unlabeled", "auto", "reviewed", "skipped")
SOURCES = ("model", "manual")


class ProjectError(ValueError):
    """A project could not be opened, or was asked to do something it cannot; the message says what to do."""


class StoreError(ProjectError):
    """The storage failed, not the request: busy, disk full, read-only, I/O (`translate`). A batch of writes
    stops at it, where a request's own problem (a box outside the image) fails that request only."""


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
    # image the history of a person's edits, for undo and redo that survive a reload (gdino/history.py).
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
    # 8: undo across images (gdino/history.py). The journal keeps what a removal of images or of a class with its
    # objects took out, as rows, so that Ctrl+Z can put every one back; `rejected` keeps the model boxes a person
    # deleted or changed, which a new model run on the image does not add again while that edit stands.
    (
        """CREATE TABLE journal (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            after_edit INTEGER NOT NULL,  -- the newest edits.id handed out when it was written: orders it among them
            entry TEXT NOT NULL,  -- JSON: the rows it removed (gdino/history.py)
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
        return StoreError(f"{directory / 'project.sqlite'} is damaged or not a project database ({err})")
    return StoreError(f"the project {directory} could not be updated ({err}); nothing was changed")


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


# -- checks on values before they are stored -----------------------------------------------------------


CLASS_NAME_MAX_CHARS = 200
"""The longest class name: what COCO and YOLO imports always allowed; a name is a label, not a description."""

_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # what str.splitlines() splits at
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def class_name_problem(name: object) -> str | None:
    """Why `name` cannot be a class name, in a few words ("holds a line break (U+000A)"), or None if it can.

    The one rule for class names, wherever they come from (imports, prompts, the canvas, the class manager,
    the command line): each entry words the refusal its own way around this reason. A class name is one line
    of text, 1 to CLASS_NAME_MAX_CHARS characters once stripped, without control characters (line breaks
    and tabs included: data.yaml, VOC XML and label lists are line- and XML-based), lone surrogates (not
    text: they cannot be written as UTF-8), bidirectional controls (they make one name display as another)
    or noncharacters (XML and YAML refuse them). Letters of any script, digits, spaces, punctuation, symbols
    and emoji are all allowed: a name the model cannot read (an emoji) is still a label for manual boxes."""
    if not isinstance(name, str):
        return f"is not text (it is {type(name).__name__})"
    name = name.strip()
    if not name:
        return "is empty"
    if len(name) > CLASS_NAME_MAX_CHARS:
        return f"is {len(name)} characters long; the limit is {CLASS_NAME_MAX_CHARS}"  # before any scan
    return characters_problem(name)


def characters_problem(text: str) -> str | None:
    """What the rule for class names holds against the characters of `text` ("holds a tab (U+0009)"), or None."""
    for char in text:
        what = character_problem(char)
        if what is not None:
            return f"holds {what} (U+{ord(char):04X})"
    return None


def character_problem(char: str) -> str | None:
    """What the rule for class names holds against this one character ("a line break"), or None."""
    if char in _LINE_BREAKS:
        return "a line break"
    if char == "\t":
        return "a tab"
    kind = unicodedata.category(char)
    if kind == "Cc":
        return "a control character"
    if kind == "Cs":
        return "a lone surrogate"
    if char in _BIDI_CONTROLS:
        return "a bidirectional control character"
    code = ord(char)
    if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
        return "a noncharacter"
    return None


def show_name(name: object, limit: int = 40) -> str:
    """A name for a message: quoted, escapes visible, at most `limit` characters of it (never a megabyte)."""
    if not isinstance(name, str):
        return repr(name)[:limit]
    return repr(name[:limit]) + ("..." if len(name) > limit else "")


RULE = f"a class name is one line of text of at most {CLASS_NAME_MAX_CHARS} characters, without control characters"


def class_name(name: object) -> str:
    """A class name checked against the rule (`class_name_problem`), stripped; else ProjectError."""
    if not isinstance(name, str) or not name.strip():
        raise ProjectError(f"a class name must be a non-empty string, got {show_name(name)}")
    problem = class_name_problem(name)
    if problem is not None:
        raise ProjectError(f"the class name {show_name(name)} {problem}; {RULE}")
    return name.strip()


def class_names(names: Iterable[str]) -> list[str]:
    """Class names checked against the rule (`class_name`), stripped, unique case-insensitively."""
    if isinstance(names, str):
        raise ProjectError(f"give class names as a list, e.g. [{show_name(names)}], not a single string")
    out, seen = [], set()
    for name in names:
        name = class_name(name)
        if name.casefold() in seen:
            raise ProjectError(f"the class {show_name(name)} is listed twice (names are compared case-insensitively)")
        seen.add(name.casefold())
        out.append(name)
    return out


def as_class_name(text: str) -> str:
    """Any text -> a name that passes the rule, for names no person typed (the phrases a free-text prompt
    finds are pieces of the prompt, line breaks included): characters the rule refuses become spaces, runs
    of whitespace one space, and it is cut at CLASS_NAME_MAX_CHARS. Empty text stays empty."""
    kept = "".join(" " if character_problem(c) is not None else c for c in text)
    return " ".join(kept.split())[:CLASS_NAME_MAX_CHARS].strip()


_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
NAME_MAX_BYTES = 200  # an image's name; longer ones are shortened (file systems stop at 255, and "_2" may follow)


def image_name(name: str) -> str:
    """A plain file name (it is also the file's name in images/, so it must not be able to leave that
    folder). Bytes that are not UTF-8 (a file name from disk) become U+FFFD, line breaks, tabs, control and
    direction characters '_' (as `sources.name_of` does for a URI's key); a name over NAME_MAX_BYTES
    keeps its suffix and loses the end of its stem."""
    if not isinstance(name, str) or name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ProjectError(f"an image name must be a plain file name (no slashes), got {show_name(name)}")
    name = _LONE_SURROGATE.sub("\ufffd", name.strip())  # not bytes from disk (those are U+DC80..U+DCFF): not text
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    # line breaks, tabs, control and direction characters: '_' (a name is also a line of exported lists, and a
    # direction override makes one name display as another)
    name = "".join("_" if character_problem(c) not in (None, "a noncharacter") else c for c in name)
    if len(name.encode()) <= NAME_MAX_BYTES:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(suffix) > 16:
        stem, suffix = name, ""
    else:
        suffix = "." + suffix
    return stem.encode()[: NAME_MAX_BYTES - len(suffix.encode())].decode("utf-8", "ignore") + suffix


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise ProjectError(f"unknown status {status!r}; use one of {list(STATUSES)}")
    return status


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise ProjectError(f"unknown source {source!r}; use one of {list(SOURCES)}")
    return source


def check_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """xyxy pixels -> 4 floats clipped to [0, width] x [0, height]; refuses anything that is not a box."""
    try:
        if isinstance(box, (str, bytes)) or len(box) != 4 or any(isinstance(v, (str, bytes)) for v in box):
            raise TypeError
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ProjectError(f"a box must be 4 numbers x0, y0, x1, y1 (pixels), got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ProjectError(f"a box must be 4 finite numbers, got {box!r}")
    if not (x0 < x1 and y0 < y1):
        raise ProjectError(f"a box is xyxy with x0 < x1 and y0 < y1, got {box!r} (is it xywh?)")
    clipped = (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        raise ProjectError(f"the box {box!r} lies outside the {width}x{height} image")
    return clipped


def check_score(score: float | None) -> float | None:
    if score is None:
        return None
    try:
        if isinstance(score, (str, bytes)):
            raise TypeError
        value = float(score)
    except (TypeError, ValueError):
        raise ProjectError(f"a score must be a number or None, got {score!r}") from None
    if not math.isfinite(value):
        raise ProjectError(f"a score must be a finite number, got {score!r}")
    return value


def mask_json(mask: dict | None, width: int, height: int) -> str | None:
    """A COCO RLE dict -> JSON, once its size is checked to be the image's [height, width]. The counts are
    not decoded; bytes counts (what pycocotools returns) are stored as the same ASCII string."""
    if mask is None:
        return None
    if not isinstance(mask, dict) or not {"size", "counts"} <= mask.keys():
        raise ProjectError(f"a mask must be a COCO RLE dict with keys 'size' and 'counts', got {mask!r:.80}")
    size, counts = mask["size"], mask["counts"]
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        raise ProjectError(f"the mask's size {size!r} is not the image's [height, width] = [{height}, {width}]")
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, (str, list)):
        raise ProjectError(f"a mask's counts must be an RLE string (or list), got {type(counts).__name__}")
    return to_json({**mask, "size": [height, width], "counts": counts}, "the mask", dict)


def to_json(value: Any, what: str, kind: type = object) -> str:
    if not isinstance(value, kind):
        raise ProjectError(f"{what} must be a {kind.__name__}, got {type(value).__name__}")
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ProjectError(f"{what} must be JSON-able (str, numbers, bools, None, lists, dicts): {err}") from err
