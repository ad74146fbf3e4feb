"""The canvas's edits as a small typed protocol.

A payload from the page (JSON) -> `parse` -> one typed edit -> `apply`: one project transaction with its
undo entry (`Project.edit_objects`, `Project.undo`, `Project.redo`). The page then draws the state the
server answers with; it never holds the truth. Coordinates are pixels of the upright image.

What each edit does to a mask (choices, documented in the README):
- move: the box and its mask move together, by whole pixels when the object has a mask (so that both
  move by exactly the same offset), and its SAM clicks and strokes with them; a move keeps the box's size
  and stops where the box meets the image's edge (never clipped);
- resize: the mask keeps its pixels inside the new box (no re-segmenting: a person resizing a box means
  "this far", and a click refines it with SAM if wanted); the clicks are dropped, the strokes kept (the
  brushed pixels inside the new box);
- click: SAM with every click of the object so far (and the box it started from, if it had one) and its
  current mask as the mask prompt (where the segmenter takes one); a click with nothing selected creates an
  object from that click alone, its box the mask's. A person's strokes are authoritative: the brushed pixels
  stay in and the erased ones out of what SAM answers;
- stroke: brush adds, eraser removes the stroke's pixels (radius in image pixels, see ui.mask_edits);
  a box grows to hold what was brushed outside it, never shrinks. The clicks are kept, and the pixels brushed
  in and erased so far are kept with them (the `clicks` JSON's "added" / "removed", COCO RLE) for the next
  clicks. A stroke that would leave a mask too detailed to store (MAX_MASK_CHARS) is refused: one edit never
  adds megabytes.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from gdino.labeling.similar import add_found, exemplars
from gdino.masks import mask_to_rle, rle_to_mask
from gdino.store import Guard, ObjectRecord, ObjectState, Project, ProjectError
from ui.mask_edits import bounding_box, inside_box, shift, stroke

# What one edit may carry: each far beyond what a person makes (tests/app/test_edit_caps.py), and refused in words
MAX_POINTS = 20_000  # per stroke: the canvas sends every pointer sample, so 20 s of a 1 kHz mouse, minutes at 60 Hz
MAX_IDS = 10_000  # per delete / relabel ("Delete hidden" sends every model box under the threshold of one image)
MAX_CLICKS = 100  # SAM clicks on one object (a person refines with a handful); each is kept, and in every undo step
MAX_RADIUS = 500.0  # image pixels; the canvas' own limit is the same
MAX_COORD = 1e7  # image pixels: anything farther is no place on a picture
MAX_STROKE_WORK = 2e8  # pixel tests one stroke may cost (sum over its segments); about 2 s here
# the mask a stroke leaves, as stored (COCO compressed RLE: about a character per run). A person's masks take tens of
# KB even on a 12 MP photo (a long wavy stroke 10 KB, colouring in by hatching 80 KB); a comb-shaped stroke
# took 8-12 MB, stored three times over (the object, its undo step, the next one's)
MAX_MASK_CHARS = 1_000_000


class EditError(ValueError):
    """A payload the server cannot apply; the message is in the page's words."""


@dataclass(frozen=True)
class Add:
    image_id: int
    box: tuple[float, float, float, float]
    class_name: str


@dataclass(frozen=True)
class Move:
    image_id: int
    object_id: int
    dx: float
    dy: float


@dataclass(frozen=True)
class Resize:
    image_id: int
    object_id: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Delete:
    image_id: int
    object_ids: tuple[int, ...]


@dataclass(frozen=True)
class Relabel:
    image_id: int
    object_ids: tuple[int, ...]
    class_name: str


@dataclass(frozen=True)
class Click:
    image_id: int
    object_id: int | None  # None: a new object
    x: float
    y: float
    positive: bool
    class_name: str  # for a new object


@dataclass(frozen=True)
class Stroke:
    image_id: int
    object_id: int | None  # None: a new object (brush only)
    points: tuple[tuple[float, float], ...]
    radius: float
    erase: bool
    class_name: str  # for a new object


@dataclass(frozen=True)
class Similar:
    image_id: int
    positive_ids: tuple[int, ...]  # the exemplars: boxes of one class
    negative_ids: tuple[int, ...]  # boxes of what the class is not (Alt in the canvas)
    everywhere: bool = False  # True: search the project's other images (a job), not this one


@dataclass(frozen=True)
class Undo:
    image_id: int


@dataclass(frozen=True)
class Redo:
    image_id: int


Edit = Add | Move | Resize | Delete | Relabel | Click | Stroke | Similar | Undo | Redo

# (exemplar boxes (N, 4) xyxy, labels (N,) bool: True positive, class name) -> supervision.Detections with masks:
# SAM 3's search of the image for more like them (ui/actions/canvas.py)
Find = Callable[[np.ndarray, np.ndarray, str], object]

# (points (N, 2), labels (N,) 1/0, box xyxy or None, mask: the object's current (H, W) bool mask or None, the mask
# prompt) -> (H, W) bool mask of the image. A segmenter without a mask prompt takes the first three only.
Segment = Callable[..., np.ndarray]


# -- parsing ------------------------------------------------------------------------------------------


def parse(payload: object) -> Edit:
    """A payload from the canvas -> a typed edit, or an EditError that says what was wrong."""
    if not isinstance(payload, dict):
        raise EditError("the canvas sent something that is not an edit; reload the page")
    kind = payload.get("kind")
    image_id = _id(payload, "image_id")
    if kind == "add":
        return Add(image_id, _box(payload), _name(payload))
    if kind == "move":
        return Move(image_id, _id(payload, "object_id"), _number(payload, "dx"), _number(payload, "dy"))
    if kind == "resize":
        return Resize(image_id, _id(payload, "object_id"), _box(payload))
    if kind == "delete":
        return Delete(image_id, _ids(payload))
    if kind == "relabel":
        return Relabel(image_id, _ids(payload), _name(payload))
    if kind == "click":
        return Click(image_id, _optional_id(payload), _number(payload, "x"), _number(payload, "y"),
                     _flag(payload, "positive"), _name(payload))
    if kind == "stroke":
        points = payload.get("points")
        if not isinstance(points, list) or not points:
            raise EditError("a brush stroke needs at least one point; reload the page")
        if len(points) > MAX_POINTS:
            raise EditError(f"that stroke is too long to send at once (a brush stroke needs 1 to {MAX_POINTS} points): "
                            "paint it in shorter strokes")
        pts = tuple((_finite(p[0]), _finite(p[1])) if isinstance(p, list | tuple) and len(p) == 2 else _bad_point()
                    for p in points)
        radius = _number(payload, "radius")
        if not 0 < radius <= MAX_RADIUS:
            raise EditError(f"the brush size must be between 0 and {MAX_RADIUS:.0f} pixels")
        work = sum((abs(b[0] - a[0]) + 2 * radius + 2) * (abs(b[1] - a[1]) + 2 * radius + 2)
                   for a, b in zip(pts, pts[1:] or pts, strict=False))
        if work > MAX_STROKE_WORK:
            raise EditError("that stroke is too large to paint at once: paint it in shorter strokes or with a smaller "
                            "brush (a box or SAM clicks cover large areas faster)")
        return Stroke(image_id, _optional_id(payload), pts, radius, _flag(payload, "erase"), _name(payload))
    if kind == "similar":
        positives = _ids({"object_ids": payload.get("positive_ids")})
        negatives = payload.get("negative_ids") or []
        negatives = _ids({"object_ids": negatives}) if negatives else ()
        if set(positives) & set(negatives):
            raise EditError("a box cannot be an example and a counter-example at once")
        scope = payload.get("scope", "image")
        if scope not in ("image", "project"):
            raise EditError("find similar searches this image or the project; reload the page")
        return Similar(image_id, positives, negatives, scope == "project")
    if kind == "undo":
        return Undo(image_id)
    if kind == "redo":
        return Redo(image_id)
    raise EditError(f"unknown edit {kind!r}; reload the page")


def _id(payload: dict, key: str) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise EditError(f"the edit has no valid {key.replace('_', ' ')}; reload the page")
    return value


def _optional_id(payload: dict) -> int | None:
    return None if payload.get("object_id") is None else _id(payload, "object_id")


def _ids(payload: dict) -> tuple[int, ...]:
    values = payload.get("object_ids")
    if not isinstance(values, list) or not values:
        raise EditError("select the boxes first")
    if len(values) > MAX_IDS:
        raise EditError(f"that edit names more than {MAX_IDS} objects at once; select fewer boxes")
    return tuple(_id({"object_id": v}, "object_id") for v in values)


def _finite(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EditError("the edit has a coordinate that is not a number; reload the page")
    if abs(value) > MAX_COORD:
        raise EditError("the edit reaches far outside the picture; reload the page")
    return float(value)


def _bad_point():
    raise EditError("a brush stroke's points must be [x, y] pairs; reload the page")


def _number(payload: dict, key: str) -> float:
    return _finite(payload.get(key))


def _flag(payload: dict, key: str) -> bool:
    value = payload.get(key)
    if not isinstance(value, bool):
        raise EditError(f"the edit has no valid {key}; reload the page")
    return value


def _box(payload: dict) -> tuple[float, float, float, float]:
    box = payload.get("box")
    if not isinstance(box, list) or len(box) != 4:
        raise EditError("a box needs four corners; reload the page")
    x0, y0, x1, y1 = (_finite(v) for v in box)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _name(payload: dict) -> str:
    name = payload.get("class_name")
    if not isinstance(name, str) or not name.strip():
        raise EditError("choose a class first (type one under Classes, or pick it in the canvas)")
    return name.strip()


# -- applying -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    selected: int | None = None  # the object the canvas selects next (the one created or edited)
    message: str | None = None


def apply(project: Project, edit: Edit, segment: Segment | None = None, guard: Guard | None = None,
          after: Guard | None = None, find: Find | None = None) -> Applied:
    """Apply one edit to the project in one transaction (with its undo entry). ProjectError / EditError
    say what went wrong; nothing is changed then. guard: sees the existing objects the edit changes, as
    read for it (None: absent), before anything is written; what it raises refuses the edit (ui/window_state.py:
    an edit made on a stale view). after: sees the objects the edit changed or added as the transaction leaves
    them (not called when nothing changed).

    The objects an edit changes are read once, in its transaction, so nothing can change them between the read
    and the write. A SAM click reads them before (SAM takes seconds, and must not hold the project's write lock
    meanwhile); its write then checks that they are still as read."""
    if isinstance(edit, Undo):
        return Applied(message=None if project.undo(edit.image_id, guard=guard, after=after) else "nothing to undo")
    if isinstance(edit, Redo):
        return Applied(message=None if project.redo(edit.image_id, guard=guard, after=after) else "nothing to redo")
    guard = guard or (lambda current: None)
    image = project.image(edit.image_id)
    shape = (image.height, image.width)
    if isinstance(edit, Click):
        return _click(project, edit, shape, segment, guard, after)
    if isinstance(edit, Similar):
        return _similar(project, edit, find, guard, after)
    painted = stroke(shape, edit.points, edit.radius) if isinstance(edit, Stroke) else None  # before the lock
    with project.batch():  # one transaction: read, checked by `guard`, written
        return _apply_in_transaction(project, edit, shape, painted, guard, after)


def _apply_in_transaction(project: Project, edit: Edit, shape: tuple[int, int], painted: np.ndarray | None,
                          guard: Guard, after: Guard | None) -> Applied:
    """An edit other than a click, undo or redo, inside the transaction `apply` holds: what it reads (`_objects`)
    cannot change before it writes, so the write compares nothing again."""
    if isinstance(edit, Add):
        (new,) = project.edit_objects(edit.image_id, new=[ObjectState(edit.class_name, edit.box)], after=after)
        return Applied(selected=new.id)
    if isinstance(edit, Delete):
        found = _objects(project, edit.image_id, edit.object_ids, guard)
        project.edit_objects(edit.image_id, {o.id: None for o in found}, after=after)
        return Applied()
    if isinstance(edit, Relabel):
        found = _objects(project, edit.image_id, edit.object_ids, guard)
        if all(o.class_name == edit.class_name and not o.phrase for o in found):
            return Applied(selected=found[0].id if len(found) == 1 else None)  # nothing to do: history kept
        changes = {o.id: replace(ObjectState.of(o), class_name=edit.class_name, source="manual") for o in found}
        project.edit_objects(edit.image_id, changes, after=after)
        return Applied(selected=found[0].id if len(found) == 1 else None)
    if isinstance(edit, Move):
        (obj,) = _objects(project, edit.image_id, [edit.object_id], guard)
        state = _moved(obj, edit.dx, edit.dy, shape)
        if state.box == obj.box:  # no move, or one that the edge stops at once
            return Applied(selected=obj.id)
        project.edit_objects(edit.image_id, {obj.id: state}, after=after)
        return Applied(selected=obj.id)
    if isinstance(edit, Resize):
        (obj,) = _objects(project, edit.image_id, [edit.object_id], guard)
        if tuple(edit.box) == tuple(obj.box):
            return Applied(selected=obj.id)
        inside = inside_box(shape, edit.box)
        mask = None
        if obj.mask is not None:
            kept = rle_to_mask(obj.mask) & inside
            mask = mask_to_rle(kept) if kept.any() else None  # a box resized off its mask has none left
        added, removed = _strokes(obj.clicks, shape)
        kept = _with_strokes({"box": list(edit.box), "points": []}, added & inside, removed)
        clicks = kept if "added" in kept or "removed" in kept else None  # no strokes: nothing to keep
        state = replace(ObjectState.of(obj), box=edit.box, mask=mask, clicks=clicks, source="manual")
        project.edit_objects(edit.image_id, {obj.id: state}, after=after)
        return Applied(selected=obj.id)
    if isinstance(edit, Stroke):
        return _stroke(project, edit, shape, painted, guard, after)
    raise EditError(f"unknown edit {edit!r}")


def _objects(project: Project, image_id: int, ids: Sequence[int], guard: Guard) -> list[ObjectRecord]:
    """The existing objects an edit changes, as stored now, once `guard` has seen them."""
    by_id = {o.id: o for o in project.objects(image_id)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ProjectError("that box is gone (deleted or replaced meanwhile); the canvas shows what is stored now")
    found = [by_id[i] for i in dict.fromkeys(ids)]
    guard({o.id: o for o in found})
    return found


def _moved(obj: ObjectRecord, dx: float, dy: float, shape: tuple[int, int]) -> ObjectState:
    """The object moved by (dx, dy), as far as its box stays inside the image: its size is kept."""
    h, w = shape
    x0, y0, x1, y1 = obj.box
    state = ObjectState.of(obj)
    whole = obj.mask is not None or bool(obj.clicks and ("added" in obj.clicks or "removed" in obj.clicks))
    if whole:  # box and mask (and strokes) by the same whole-pixel offset
        dx = min(max(round(dx), math.ceil(-x0)), math.floor(w - x1))
        dy = min(max(round(dy), math.ceil(-y0)), math.floor(h - y1))
    else:
        dx, dy = min(max(dx, -x0), w - x1), min(max(dy, -y0), h - y1)
    if dx == 0 and dy == 0:
        return state
    if obj.mask is not None:
        state = replace(state, mask=mask_to_rle(shift(rle_to_mask(obj.mask), dx, dy)))
    clicks = state.clicks
    if clicks is not None:
        box = None if clicks["box"] is None else [v + d for v, d in zip(clicks["box"], (dx, dy, dx, dy), strict=True)]
        added, removed = _strokes(clicks, shape)
        clicks = _with_strokes({"box": box, "points": [[x + dx, y + dy, p] for x, y, p in clicks["points"]]},
                               shift(added, dx, dy), shift(removed, dx, dy))
    # at the edge the box ends exactly on it (x0 + (w - x1) may round off w)
    nx0, nx1 = (w - (x1 - x0), w) if dx == w - x1 else (0.0, x1 - x0) if dx == -x0 else (x0 + dx, x1 + dx)
    ny0, ny1 = (h - (y1 - y0), h) if dy == h - y1 else (0.0, y1 - y0) if dy == -y0 else (y0 + dy, y1 + dy)
    return replace(state, box=(nx0, ny0, nx1, ny1), clicks=clicks, source="manual")


def _strokes(clicks: dict | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(the pixels a person brushed in, those erased) that an object's clicks keep, (H, W) bool each."""
    clicks = clicks or {}
    empty = np.zeros(shape, dtype=bool)
    added, removed = clicks.get("added"), clicks.get("removed")
    return (empty if added is None else rle_to_mask(added)), (empty if removed is None else rle_to_mask(removed))


def _with_strokes(clicks: dict, added: np.ndarray, removed: np.ndarray) -> dict:
    """The clicks with the strokes' pixels (COCO RLE; left out when there are none)."""
    if added.any():
        clicks["added"] = mask_to_rle(added)
    if removed.any():
        clicks["removed"] = mask_to_rle(removed)
    return clicks


def _call(segment: Segment, points: np.ndarray, labels: np.ndarray, box, mask: np.ndarray | None) -> np.ndarray:
    """SAM with the object's current mask as the mask prompt, where the segmenter takes one."""
    try:
        inspect.signature(segment).bind(points, labels, box, mask)
    except TypeError:  # (points, labels, box) only
        return segment(points, labels, box)
    except ValueError:  # no signature to read (a builtin): call it as the protocol says
        pass
    return segment(points, labels, box, mask)


def _click(project: Project, edit: Click, shape: tuple[int, int], segment: Segment | None, guard: Guard,
           after: Guard | None) -> Applied:
    if segment is None:
        raise ProjectError("SAM is not loaded, so clicks cannot segment (start the app with --sam)")
    h, w = shape
    if not (0 <= edit.x <= w and 0 <= edit.y <= h):
        raise EditError("click on the picture")
    point = [edit.x, edit.y, edit.positive]
    if edit.object_id is None:
        if not edit.positive:
            raise EditError("a new object starts with a positive click")
        mask = segment(np.array([[edit.x, edit.y]]), np.array([1]), None)
        box = bounding_box(mask)
        if box is None:
            raise EditError("SAM found nothing at that point; click elsewhere")
        state = ObjectState(edit.class_name, box, mask=mask_to_rle(mask), clicks={"box": None, "points": [point]})
        (new,) = project.edit_objects(edit.image_id, new=[state], after=after)
        return Applied(selected=new.id)
    (obj,) = _objects(project, edit.image_id, [edit.object_id], guard)
    clicks = obj.clicks or {"box": list(obj.box), "points": []}
    if len(clicks["points"]) >= MAX_CLICKS:
        raise EditError(f"this object has {MAX_CLICKS} clicks already, the most one object keeps: fix the rest with "
                        "the brush or the eraser, or press Esc and start a new object")
    points = [*clicks["points"], point]
    prompt_box = None if clicks["box"] is None else tuple(clicks["box"])
    current = None if obj.mask is None else rle_to_mask(obj.mask)
    mask = _call(segment, np.array([p[:2] for p in points], dtype=np.float64), np.array([int(p[2]) for p in points]),
                 prompt_box, current)
    added, removed = _strokes(clicks, shape)
    mask = (np.asarray(mask, dtype=bool) | added) & ~removed  # a person's strokes win over SAM
    box = obj.box if prompt_box is not None else bounding_box(mask)
    if box is None:
        raise EditError("with that click SAM finds nothing; undo it or click elsewhere")
    state = replace(ObjectState.of(obj), box=box, mask=mask_to_rle(mask), clicks={**clicks, "points": points},
                    source="manual")
    project.edit_objects(edit.image_id, {obj.id: state}, expect=[obj], after=after)
    return Applied(selected=obj.id)


def _similar(project: Project, edit: Similar, find: Find | None, guard: Guard, after: Guard | None) -> Applied:
    """SAM 3 searches the image for more like the exemplars (read first: the search takes seconds and must not
    hold the write lock); what it finds is added as model objects of the exemplars' class in one edit, one undo
    step, leaving out what overlaps a box already there (gdino/labeling/similar.py's rule). The exemplars must be
    as read."""
    if find is None:
        raise ProjectError("find similar needs a SAM 3 model: choose one under Model")
    read = {o.id: o for o in _objects(project, edit.image_id, [*edit.positive_ids, *edit.negative_ids], guard)}
    name, boxes, labels = exemplars(read, edit.positive_ids, edit.negative_ids)
    found = find(np.array(boxes, dtype=np.float64), np.array(labels), name)
    added, left = add_found(project, edit.image_id, found, name, expect=list(read.values()), after=after)
    if left and not added and len(found):
        return Applied(message="nothing new: every box found is there already, or was deleted or changed by you")
    message = f"found {added} more like the example{'s' if len(edit.positive_ids) > 1 else ''}"
    if left:
        message += f" ({left} left out: already boxed)"
    return Applied(message=message)


def _stroke(project: Project, edit: Stroke, shape: tuple[int, int], painted: np.ndarray, guard: Guard,
            after: Guard | None) -> Applied:
    """A brush or eraser stroke whose pixels (`painted`, (H, W) bool) are computed; in `apply`'s transaction."""
    if edit.object_id is None:
        if edit.erase:
            raise EditError("select the object to erase from")
        box = bounding_box(painted)
        if box is None:
            raise EditError("the stroke is outside the picture")
        rle = _storable(mask_to_rle(painted), None)
        state = ObjectState(edit.class_name, box, mask=rle, clicks={"box": list(box), "points": [], "added": rle})
        (new,) = project.edit_objects(edit.image_id, new=[state], after=after)
        return Applied(selected=new.id)
    (obj,) = _objects(project, edit.image_id, [edit.object_id], guard)
    mask = rle_to_mask(obj.mask) if obj.mask is not None else np.zeros(shape, dtype=bool)
    mask = mask & ~painted if edit.erase else mask | painted
    box = obj.box
    grown = bounding_box(mask)
    if grown is not None:
        box = (min(box[0], grown[0]), min(box[1], grown[1]), max(box[2], grown[2]), max(box[3], grown[3]))
    # the clicks stay (the next click goes on from them) and the strokes so far with them: the last stroke wins
    clicks = obj.clicks or {"box": list(obj.box), "points": []}
    added, removed = _strokes(clicks, shape)
    added, removed = (added & ~painted, removed | painted) if edit.erase else (added | painted, removed & ~painted)
    before = obj.clicks or {}
    clicks = {k: v for k, v in clicks.items() if k not in ("added", "removed")}
    if not clicks["points"] and clicks["box"] is not None:
        clicks["box"] = list(box)  # no click yet: the first one starts from the box as it is then
    clicks = _with_strokes(clicks, added, removed)
    for key in ("added", "removed"):
        if key in clicks:
            clicks[key] = _storable(clicks[key], before.get(key))
    state = replace(ObjectState.of(obj), box=box, mask=_storable(mask_to_rle(mask), obj.mask) if mask.any() else None,
                    clicks=clicks, source="manual")
    project.edit_objects(edit.image_id, {obj.id: state}, after=after)
    return Applied(selected=obj.id)


def _storable(rle: dict, before: dict | None) -> dict:
    """The mask a stroke leaves, if it may be stored: at most MAX_MASK_CHARS of RLE, or no more than the mask had
    (an eraser may thin a mask that came in over the cap some other way)."""
    size = len(rle["counts"])
    if size > MAX_MASK_CHARS and size > (len(str(before["counts"])) if before is not None else 0):
        raise EditError(f"that stroke would make the mask too detailed to store ({size / 1e6:.1f} MB; the most is "
                        f"{MAX_MASK_CHARS / 1e6:.0f} MB): paint it in fewer, shorter strokes, with a wider brush, or "
                        "use a box or SAM clicks")
    return rle
