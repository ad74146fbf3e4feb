"""What the store hands out and takes in: records of images and objects, the state an edit gives an object,
an image of a bulk add; and the queries that read them.

Coordinates: boxes are xyxy in pixels of the UPRIGHT image (EXIF orientation applied, the frame
`gdino.processing.to_rgb` returns). Masks are COCO RLE dicts `{"size": [height, width], "counts": ...}`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..sources import is_uri
from .errors import ProjectError

ORDERS = ("name", "added", "confidence")


@dataclass(frozen=True)
class ImageRecord:
    id: int
    name: str  # unique within the project (case-insensitively), e.g. the file name
    path: Path | None  # absolute path of the pixels; None for an image in an object store (then `uri`)
    width: int  # upright frame: EXIF orientation applied
    height: int
    status: str  # one of STATUSES
    min_score: float | None  # lowest score among its model objects; None without any
    num_objects: int
    uri: str | None = None  # an object-store URI (s3://...) for an image referenced there (`gdino.sources`)
    # returned by add_image / add_reference: True when the key was already taken (this call added nothing)
    existed: bool = field(default=False, compare=False, repr=False)

    @property
    def location(self) -> Path | str:
        """Where the pixels are: the local path, or the URI (`gdino.sources.read_image` reads both)."""
        return self.uri if self.uri is not None else self.path


@dataclass(frozen=True)
class ObjectRecord:
    id: int
    image_id: int
    class_name: str  # the class, or for a phrase object the phrase
    box: tuple[float, float, float, float]  # xyxy, pixels of the upright image
    score: float | None
    source: str  # "model" or "manual"
    mask: dict | None  # COCO RLE {"size": [h, w], "counts": ...} of the upright image
    phrase: bool = False  # labeled with a free-text phrase not yet mapped to a class (see Project.phrases)
    clicks: dict | None = None  # SAM clicks behind the mask: {"box": xyxy prompt or None, "points": [[x, y, positive]]}


# sees objects of an edit, undo or redo as stored at one moment of its transaction (None: absent); raising refuses it
Guard = Callable[[dict[int, "ObjectRecord | None"]], None]


@dataclass(frozen=True)
class ObjectState:
    """What an edit makes an object (`Project.edit_objects`): its label, box and the rest, as stored."""

    class_name: str  # a class (added if the project lacks it), or the object's own phrase
    box: tuple[float, float, float, float]  # xyxy, pixels of the upright image
    score: float | None = None
    source: str = "manual"
    mask: dict | None = None
    clicks: dict | None = None

    @classmethod
    def of(cls, record: ObjectRecord) -> ObjectState:
        return cls(record.class_name, record.box, record.score, record.source, record.mask, record.clicks)


@dataclass(frozen=True)
class NewImage:
    """One image of a bulk add (`Project.add_labeled`): a file already decoded and checked by the caller,
    with the labels it comes with. objects: dicts with box (xyxy upright pixels), class_name, optional
    score and mask (COCO RLE of the upright image)."""

    path: Path
    name: str
    width: int  # upright
    height: int
    status: str = "unlabeled"
    objects: tuple[dict, ...] = ()
    source: str = "manual"  # the objects' source
    key: str | None = None  # as in Project.add_image: an image whose key the project has is not added again


IMAGE_SELECT = """
    SELECT i.id, i.name, i.path, i.copied, i.width, i.height, i.status,
           (SELECT MIN(o.score) FROM objects o WHERE o.image_id = i.id AND o.source = 'model') AS min_score,
           (SELECT COUNT(*) FROM objects o WHERE o.image_id = i.id) AS num_objects
    FROM images i"""
ORDER_BY = {
    "name": "i.name COLLATE NOCASE, i.id",
    "added": "i.id",
    "confidence": "min_score IS NULL, min_score, i.id",  # least confident first, images without model objects last
}
OBJECT_SELECT = """
    SELECT o.id, o.image_id, c.name, o.x0, o.y0, o.x1, o.y1, o.score, o.source, o.mask, c.kind, o.clicks
    FROM objects o JOIN classes c ON c.id = o.class_id"""


def image_record(row: Sequence, directory: Path) -> ImageRecord:
    """A row of IMAGE_SELECT -> its record; a copied-in file's path is made absolute under `directory`."""
    id_, name, path, copied, width, height, status, min_score, num_objects = row
    if not copied and is_uri(path):
        return ImageRecord(id_, name, None, width, height, status, min_score, num_objects, uri=path)
    return ImageRecord(id_, name, directory / path if copied else Path(path), width, height, status, min_score,
                       num_objects)


def object_record(row: Sequence) -> ObjectRecord:
    """A row of OBJECT_SELECT -> its record."""
    id_, image_id, class_name, x0, y0, x1, y1, score, source, mask, kind, clicks = row
    return ObjectRecord(id_, image_id, class_name, (x0, y0, x1, y1), score, source,
                        None if mask is None else json.loads(mask), kind == "phrase",
                        None if clicks is None else json.loads(clicks))


def image(db: sqlite3.Connection, directory: Path, image_id: int) -> ImageRecord:
    """The image's record; ProjectError if the project has none of that id."""
    row = db.execute(f"{IMAGE_SELECT} WHERE i.id = ?", (image_id,)).fetchone()
    if row is None:
        raise _no_image(image_id)
    return image_record(row, directory)


def exists(db: sqlite3.Connection, image_id: int) -> bool:
    """Whether the project has an image of that id (one indexed lookup; `image` also reads its objects' stats)."""
    return db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is not None


def require(db: sqlite3.Connection, image_id: int) -> None:
    """ProjectError if the project has no image of that id (as `image` says it), for callers that need no record."""
    if not exists(db, image_id):
        raise _no_image(image_id)


def _no_image(image_id: int) -> ProjectError:
    return ProjectError(f"no image with id {image_id!r} in the project; list them with images()")


def keyed(db: sqlite3.Connection, directory: Path, key: str | None) -> ImageRecord | None:
    """The image added with `key` (see Project.add_image), or None."""
    if key is None:
        return None
    row = db.execute("SELECT image_id FROM sources WHERE key = ?", (key,)).fetchone()
    return None if row is None else image(db, directory, row[0])


def object_(db: sqlite3.Connection, object_id: int) -> ObjectRecord:
    row = db.execute(f"{OBJECT_SELECT} WHERE o.id = ?", (object_id,)).fetchone()
    if row is None:
        raise ProjectError(f"no object with id {object_id!r} in the project; list an image's with objects(image_id)")
    return object_record(row)


def objects_of(db: sqlite3.Connection, image_id: int) -> list[ObjectRecord]:
    """The image's objects, oldest first."""
    return [object_record(row) for row in db.execute(f"{OBJECT_SELECT} WHERE o.image_id = ? ORDER BY o.id", (image_id,))]


def objects_now(db: sqlite3.Connection, image_id: int, ids: Iterable[int]) -> dict[int, ObjectRecord | None]:
    """These objects of the image as stored now (None: absent), in one query."""
    ids = list(dict.fromkeys(ids))
    rows = db.execute(f"{OBJECT_SELECT} WHERE o.image_id = ? AND o.id IN ({','.join('?' * len(ids))})",
                      (image_id, *ids)).fetchall() if ids else []
    found = {row[0]: object_record(row) for row in rows}
    return {i: found.get(i) for i in ids}


def table_rows(db: sqlite3.Connection, table: str, where: str, args: Sequence) -> list[dict]:
    """Rows of a table as {column: value} (every column: what the journal keeps to put them back)."""
    cursor = db.execute(f"SELECT * FROM {table} WHERE {where}", tuple(args))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def insert_rows(db: sqlite3.Connection, table: str, rows: Iterable[dict]) -> None:
    for row in rows:
        db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
