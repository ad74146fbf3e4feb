"""Labeling results as rows, and folders of Parquet shards that hold them (`gdino label --results DIR`).

One row per image, as the Ray engine's actors produce it and as a shard stores it:
    image_id  int     the image's id in the project the run labeled (NEW_IMAGE, -1: not in it yet, an
                      object-store image: stored by its URI, `key`, with its result)
    key       str     where the image came from: its source path or URI (or its path in the project)
    name      str     the image's name, for messages
    error     str     why it failed ("" when it did not); a failed image has no objects
    objects   str     JSON list of {"box": [x0, y0, x1, y1] pixels of the upright image, "class_name",
                      "score", "mask": COCO RLE or null}, as `labeling.detect_objects` makes them
    run       str     JSON of the LabelSettings behind them (`LabelSettings.to_run`)
    width     int     the upright image's size as the actor decoded it (0 when it could not be read)
    height    int

A shard is written whole under a hidden temporary name, then renamed: a reader never sees half of one
(object stores write whole objects anyway). Readers still read shard by shard, so that one damaged file
(copied half, cut by a full disk) is reported and the others are read. pyarrow only, no Ray: folders
are local paths or URIs that pyarrow's filesystems open (s3://, gs://, file://).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

COLUMNS = ("image_id", "key", "name", "error", "objects", "run", "width", "height")
NEW_IMAGE = -1  # a row's image_id for an image the project does not hold yet (an object-store URI)
SUFFIX = ".parquet"


@dataclass(frozen=True)
class ShardError:
    """A shard that could not be read: reported, the other shards are read."""

    shard: str
    why: str


def _schema():
    import pyarrow as pa

    return pa.schema([("image_id", pa.int64()), ("key", pa.string()), ("name", pa.string()), ("error", pa.string()),
                      ("objects", pa.string()), ("run", pa.string()), ("width", pa.int64()), ("height", pa.int64())])


def _filesystem(folder: str):
    """(pyarrow filesystem, path inside it) of a local folder or a URI."""
    from pyarrow import fs

    if "://" in folder:
        from ..sources import check_uri

        return fs.FileSystem.from_uri(check_uri(folder))
    import os

    return fs.LocalFileSystem(), os.path.abspath(os.path.expanduser(folder))


def make_row(image_id: int, key: str, name: str, *, objects: Sequence[dict] = (), error: str = "",
             run: dict | None = None, size: tuple[int, int] = (0, 0)) -> dict:
    """size: (width, height) of the upright image."""
    return {"image_id": int(image_id), "key": key, "name": name, "error": error,
            "objects": json.dumps(list(objects)), "run": json.dumps(run or {}), "width": int(size[0]),
            "height": int(size[1])}


def write_shard(folder: str, rows: Sequence[dict]) -> str | None:
    """Write rows as one new shard in `folder` (created if missing); returns its path (None: no rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        return None
    filesystem, base = _filesystem(folder)
    filesystem.create_dir(base, recursive=True)
    table = pa.Table.from_pylist([{c: row[c] for c in COLUMNS} for row in rows], schema=_schema())
    name = f"part-{uuid.uuid4().hex}{SUFFIX}"
    tmp, final = f"{base}/.{name}.tmp", f"{base}/{name}"
    pq.write_table(table, tmp, filesystem=filesystem)
    filesystem.move(tmp, final)
    return final


def shard_paths(folder: str) -> list[str]:
    """The shards of a folder, sorted; temporary and hidden files are not shards. A missing folder has none."""
    from pyarrow import fs

    filesystem, base = _filesystem(folder)
    if filesystem.get_file_info(base).type == fs.FileType.NotFound:
        return []
    infos = filesystem.get_file_info(fs.FileSelector(base, recursive=False))
    return sorted(i.path for i in infos if i.type == fs.FileType.File and i.base_name.endswith(SUFFIX)
                  and not i.base_name.startswith("."))


DEFAULTS = {"width": 0, "height": 0}  # columns that shards written before them lack


def read_shards(folder: str, columns: Sequence[str] = COLUMNS) -> Iterator[list[dict] | ShardError]:
    """Each shard's rows (only `columns`), shard by shard; a shard that cannot be read gives a ShardError.
    A column a shard lacks that has a default (DEFAULTS) reads as that default."""
    import pyarrow.parquet as pq

    filesystem, _ = _filesystem(folder)
    for path in shard_paths(folder):
        try:
            present = set(pq.read_schema(path, filesystem=filesystem).names)
            missing = [c for c in columns if c not in present]
            if any(c not in DEFAULTS for c in missing):
                raise ValueError(f"not a gdino results shard: it has no {', '.join(missing)} column")
            table = pq.read_table(path, filesystem=filesystem, columns=[c for c in columns if c in present])
        except Exception as err:  # noqa: BLE001 - arrow raises several types for a damaged file; each is reported
            yield ShardError(path, f"{type(err).__name__}: {err}")
            continue
        yield [{**{c: DEFAULTS[c] for c in missing}, **row} for row in table.to_pylist()]


def done_keys(folder: str) -> set[str]:
    """Keys of the images a results folder holds without an error: a resumed run skips them."""
    keys: set[str] = set()
    for rows in read_shards(folder, columns=("key", "error")):
        if not isinstance(rows, ShardError):
            keys.update(row["key"] for row in rows if not row["error"])
    return keys


def store_row(project, image_id: int, row: dict) -> str:
    """Store one result row as the image's model objects, the way the plain engine stores them
    (`labeling.store_objects`: one transaction, only while the image is still "unlabeled"). A row of a
    NEW_IMAGE adds its image first, by its URI (`Project.add_reference`), in the same transaction.
    Returns "labeled", "failed" (the row holds an error), "kept" (the image is not unlabeled any more:
    already labeled, or a person decided on it meanwhile) or "gone" (removed from the project).
    A row is not trusted (a shard is a file anyone may have written): its size must be a possible image's
    and agree with the project's image, and each mask must decode as one of that size; else ProjectError."""
    from ..store import ProjectError
    from .label import store_objects
    from .settings import LabelSettings

    if row["error"]:
        return "failed"
    settings = LabelSettings.from_run(json.loads(row["run"]))
    objects = json.loads(row["objects"])
    new = image_id == NEW_IMAGE
    width, height = _new_size(int(row["width"]), int(row["height"])) if new else _size_of(project, image_id, row)
    _check_masks(objects, width, height)
    try:
        with project.batch():  # one transaction, or a savepoint of the caller's batch
            if image_id == NEW_IMAGE:
                image_id = project.add_reference(row["key"], width, height, name=row["name"], key=row["key"]).id
            stored = store_objects(project, image_id, objects, settings, if_status=("unlabeled",))
    except ProjectError:
        if not new and not project.has_image(image_id):
            return "gone"
        raise
    return "labeled" if stored else "kept"


def _new_size(width: int, height: int) -> tuple[int, int]:
    """The size a row gives its object-store image, which nothing else says: within what an actor decodes
    (processing.MAX_PIXELS), so that no export or view has to build an image or mask larger than that.
    The pixels are compared with it again when they are fetched (an export)."""
    from ..processing import MAX_PIXELS
    from ..store import ProjectError

    if not (width > 0 and height > 0 and width * height <= MAX_PIXELS):
        raise ProjectError(f"the row says the image is {width}x{height} pixels; an image is 1 to "
                           f"{MAX_PIXELS / 1e6:.0f} megapixels")
    return width, height


def _size_of(project, image_id: int, row: dict) -> tuple[int, int]:
    """The size of an image the project holds; a row that says another one was made for other pixels."""
    from ..store import ProjectError

    try:
        record = project.image(image_id)
    except ProjectError:
        return int(row["width"]), int(row["height"])  # gone: store_objects says so
    said = (int(row["width"]), int(row["height"]))
    if said != (0, 0) and said != (record.width, record.height):  # (0, 0): a shard of the earlier layout
        raise ProjectError(f"the row is for a {said[0]}x{said[1]} image, the project's image is "
                           f"{record.width}x{record.height}")
    return record.width, record.height


def _check_masks(objects, width: int, height: int) -> None:
    """Every mask of a row decodes, as a mask of its width x height image (an export decodes them all)."""
    from ..masks import check_rle
    from ..store import ProjectError

    for k, obj in enumerate(objects if isinstance(objects, list) else []):
        mask = obj.get("mask") if isinstance(obj, dict) else None
        if mask is not None:
            try:
                check_rle(mask, height, width)
            except ValueError as err:
                raise ProjectError(f"object {k}'s mask cannot be stored: {err}") from None
