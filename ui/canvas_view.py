"""What the canvas draws, computed from the project: the value of `ui.canvas.make_canvas` for one image.

The picture and the mask overlay reach the page as files: the upright image (written once per image
file, JPEG), and one palette PNG of the masks per change of the masks (a box edit reuses the last one).
They are written to a folder of this session under the system's temporary folder, from where gradio
copies them into its cache and serves them under unguessable names; the workspace itself is never served.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gdino.masks import rle_to_mask
from gdino.sources import object_version, read_image

from .canvas import mask_index_to_overlay
from .render import PHRASE_COLOR, class_color, placeholder
from .window_state import rev

# the canvas ignores a value older than the one it shows (gradio may deliver replies out of order): revisions
# only grow, across images, sessions and server restarts (they start from the clock, in milliseconds). A value
# takes its revision right after its read of the project while holding the project's lock (Project.held), which
# every write of this process holds from its start to its commit; an edit's step (ui/window_state.py) takes one inside
# its write transaction. So of two values of one project the one with the higher revision shows the newer state,
# and a value shows an edit of this process exactly when its revision is higher than the edit's.
_revisions = itertools.count(int(time.time() * 1000))


def next_revision() -> int:
    return next(_revisions)
JPEG_QUALITY = 92
OVERLAY_KEEP_S = 60.0  # how long a replaced mask overlay file stays (gradio copies it into its cache before that)
DECODED_MASKS = 64  # masks kept decoded for the next overlay: a click changes one mask, the others are not decoded again


def file_data(path: Path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


class CanvasFiles:
    """Per-session folders for the canvas' image and overlay files, under one folder of this server (removed
    when the server exits; a folder whose server died is removed by the next one)."""

    def __init__(self, overlay_keep_s: float = OVERLAY_KEEP_S):
        self.overlay_keep_s = overlay_keep_s
        self.root = Path(tempfile.mkdtemp(prefix="gdino-canvas-"))
        (self.root / "server.pid").write_text(str(os.getpid()))
        for old in self.root.parent.glob("gdino-canvas-*"):  # what servers that stopped left behind
            if old != self.root and not _alive(old / "server.pid"):
                shutil.rmtree(old, ignore_errors=True)
        atexit.register(self.close)
        self._lock = threading.Lock()
        self._overlays: dict[tuple[str, int], tuple[str, Path]] = {}  # (session, image) -> (masks key, file)
        self._decoded: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()  # (object, its RLE's digest) -> mask
        self._replaced: list[tuple[float, Path]] = []  # overlays no longer current, kept a while (see overlay)

    def folder(self, token: str) -> Path:
        folder = self.root / hashlib.sha256(token.encode()).hexdigest()[:24]
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def image(self, token: str, record, read: Callable[[object], Path] | None = None) -> tuple[Path, bool]:
        """(the upright picture of the image as a JPEG, written once per version of its file; whether the
        file could be read: if not, the picture is a grey placeholder of its size). read: record -> the file
        to read, checked by the caller at this moment (default: the record's path)."""
        try:  # lstat too: a file swapped for a link is a new version (and is checked again by `read`)
            if record.uri is not None:  # an object-store image: its size and time, asked only once `read` allowed it
                version = object_version(read(record) if read is not None else record.uri)
            else:
                stat, link = record.path.stat(), record.path.lstat()
                version = f"{record.path}:{stat.st_mtime_ns}:{stat.st_size}:{link.st_ino}:{link.st_mtime_ns}"
        except (OSError, ValueError):  # ImageError (a ValueError): `read` refused it
            version = "missing"
        stem = f"image-{record.id}-{hashlib.sha256(version.encode()).hexdigest()[:16]}"
        folder = self.folder(token)
        path = folder / f"{stem}.jpg"
        if path.exists():
            return path, True
        from PIL import Image

        try:
            rgb, readable = read_image(read(record) if read is not None else record.location), True
        except Exception:  # noqa: BLE001 - any unreadable file shows as the placeholder (tried again next time)
            rgb = Image.fromarray(placeholder(record.width, record.height))  # small: the canvas stretches it
            readable, path = False, folder / "unreadable.jpg"
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")  # two tabs may write it at once
        rgb.convert("RGB").save(partial, format="JPEG", quality=JPEG_QUALITY)
        partial.replace(path)
        return path, readable

    def overlay(self, token: str, image_id: int, objects, shape: tuple[int, int]) -> Path | None:
        """The masks as one palette PNG (pixel value k = objects[k-1]); the same file while the masks are."""
        masked = [(k, o) for k, o in enumerate(objects, start=1) if o.mask is not None]
        if not masked:
            return None
        key = hashlib.sha256(repr([(k, o.id, o.mask["counts"]) for k, o in masked]).encode()).hexdigest()
        with self._lock:
            last = self._overlays.get((token, image_id))
        if last is not None and last[0] == key and last[1].exists():
            return last[1]
        index = np.zeros(shape, dtype=np.uint16)
        for k, o in masked:
            index[self._decode(o.id, o.mask)] = k
        path = self.folder(token) / f"overlay-{image_id}-{next(_revisions)}.png"
        mask_index_to_overlay(index).save(path, format="PNG", compress_level=1)
        now = time.monotonic()
        with self._lock:
            replaced = self._overlays.get((token, image_id))  # as now: another reply may have made one meanwhile
            self._overlays[(token, image_id)] = (key, path)
            if replaced is not None and replaced[1] != path:
                self._replaced.append((now, replaced[1]))
            # a replaced file is removed only once gradio has surely copied it for the reply that named it: the
            # replies to several edits are made at once (ui/edit_order.py) and may still be on their way
            old = [p for t, p in self._replaced if now - t > self.overlay_keep_s]
            self._replaced = [(t, p) for t, p in self._replaced if now - t <= self.overlay_keep_s]
        for stale in old:
            stale.unlink(missing_ok=True)
        return path

    def _decode(self, object_id: int, rle: dict) -> np.ndarray:
        """The (H, W) bool mask of a stored RLE, decoded once while it stays among the last DECODED_MASKS used."""
        key = (object_id, hashlib.sha1(repr((rle["size"], rle["counts"])).encode()).hexdigest())
        with self._lock:
            mask = self._decoded.get(key)
            if mask is not None:
                self._decoded.move_to_end(key)
                return mask
        mask = rle_to_mask(rle)
        mask.flags.writeable = False  # shared by the next overlays
        with self._lock:
            self._decoded[key] = mask
            while len(self._decoded) > DECODED_MASKS:
                self._decoded.popitem(last=False)
        return mask

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid_file: Path) -> bool:
    """Whether the server that wrote this pid file still runs (a folder without one is an old leftover)."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except PermissionError:  # another user's server, running
        return True
    except (OSError, ValueError):
        return False
    return True


def canvas_value(project, token: str, files: CanvasFiles, image_id: int | None, *, selected: int | None = None,
                 message: str | None = None, seq: int | None = None,
                 read: Callable[[object], Path] | None = None) -> dict | None:
    """The canvas' value for the image (None: no image), from what the project stores now."""
    if image_id is None:
        return None
    with project.held():  # edits of several windows are answered at once (ui/edit_order.py)
        record, objects, classes, (can_undo, can_redo) = project.view(image_id)  # one snapshot: they agree
        revision = next_revision()

    def color(o):
        return list(PHRASE_COLOR if o.phrase else class_color(classes.index(o.class_name)))

    overlay = files.overlay(token, image_id, objects, (record.height, record.width))
    picture, readable = files.image(token, record, read)
    return {
        "image_id": image_id, "revision": revision, "readable": readable,  # readable: for the page's line
        "image": file_data(picture), "width": record.width, "height": record.height,
        "objects": [{"id": o.id, "rev": rev(o), "class_name": o.class_name, "phrase": o.phrase, "box": list(o.box),
                     "score": o.score, "source": o.source, "color": color(o), "has_mask": o.mask is not None,
                     "clicks": [] if o.clicks is None else o.clicks["points"]} for o in objects],
        "overlay": None if overlay is None else file_data(overlay),
        "classes": [{"name": c, "color": list(class_color(k))} for k, c in enumerate(classes)],
        "selected": selected, "can_undo": can_undo, "can_redo": can_redo, "seq": seq, "message": message,
    }
