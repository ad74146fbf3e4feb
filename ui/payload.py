"""One canvas payload read whole: the page's JSON -> `parse_payload` -> one `CanvasPayload`.

A payload carries the edit (ui/edits.py's protocol, read by `edits.parse`), the image it was made on, its echo
`seq`, its place in its window's order ("window", "seq", "prev": ui/edit_order.py) and the view it was made on
("base", "seen": ui/window_state.py). Every field is read here, once; nothing of the payload is read anywhere
else. Reading never raises: what is wrong is kept (`refused`), so that the edit's turn still comes and ends,
and its reply says why in the page's words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import edits
from .window_state import Seen

MAX_SEEN = 100_000  # revisions one payload may carry (undo sends every object of the image)
_WINDOW = re.compile(r"[A-Za-z0-9_-]{8,64}")
_REV = re.compile(r"[0-9a-f]{16}")


class ViewError(ValueError):
    """A view the page sent that is not one (the message is in the page's words)."""


@dataclass(frozen=True)
class CanvasPayload:
    """What one payload from the canvas says, each field checked."""

    seq: int | None  # echoed in the reply's value (the page drops replies older than what it shows)
    image_id: int | None  # the image it was made on: an id in [0, 2**63), else None
    order: tuple[str, int, int] | None  # (window, seq, prev): its place in its window's order, else None
    seen: Seen | None  # the view it was made on; None: it names none (not checked)
    edit: edits.Edit | None  # the typed edit; None when refused
    refused: ValueError | None = None  # why it cannot be applied: a malformed view first, else a malformed edit


def parse_payload(payload: object) -> CanvasPayload:
    """A payload from the canvas (any JSON value) -> its fields, read once."""
    if not isinstance(payload, dict):
        return CanvasPayload(None, None, None, None, None, edits.EditError(
            "the canvas sent something that is not an edit; reload the page"))
    seq = payload.get("seq") if isinstance(payload.get("seq"), int) else None
    shown = payload.get("image_id")
    image_id = shown if isinstance(shown, int) and not isinstance(shown, bool) and 0 <= shown < 2**63 else None
    seen = edit = refused = None
    try:
        seen = parse_seen(payload)
        edit = edits.parse(payload)
    except ValueError as err:  # ViewError, EditError
        refused = err
    return CanvasPayload(seq, image_id, parse_order(payload), seen, edit, refused)


def parse_order(payload: object) -> tuple[str, int, int] | None:
    """(window, seq, prev) of an edit that names them well, else None: its place in its window's order, read
    apart from the view so that an edit refused for a malformed view still ends its turn (ui/edit_order.py)."""
    if not isinstance(payload, dict):
        return None
    window, seq, prev = payload.get("window"), payload.get("seq"), payload.get("prev")
    if isinstance(window, str) and _WINDOW.fullmatch(window) and _count(seq) and _count(prev) and prev < seq < 2**63:
        return window, seq, prev
    return None


def parse_seen(payload: object) -> Seen | None:
    """The view an edit was made on, or None when the payload names none."""
    if not isinstance(payload, dict) or ("window" not in payload and "seen" not in payload):
        return None
    window, seen, base = payload.get("window"), payload.get("seen"), payload.get("base")
    if not isinstance(window, str) or not _WINDOW.fullmatch(window):
        raise ViewError("the canvas sent an edit without a valid window id; reload the page")
    order = parse_order(payload)
    if order is None:
        raise ViewError("the canvas sent an edit out of its order; reload the page")
    if not (_count(base) and base < 2**63):
        raise ViewError("the canvas sent an edit without the view it was made on; reload the page")
    if not isinstance(seen, list):
        raise ViewError("the canvas sent an edit without the view it was made on; reload the page")
    if len(seen) > MAX_SEEN:
        raise ViewError(f"the canvas sent a view of more than {MAX_SEEN} objects, more than one image holds; reload "
                        "the page")
    revs = {}
    for pair in seen:
        ok = isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int) and not isinstance(pair[0], bool)
        if not (ok and 0 <= pair[0] < 2**63 and isinstance(pair[1], str) and _REV.fullmatch(pair[1])):
            raise ViewError("the canvas sent a view it could not have drawn; reload the page")
        revs[pair[0]] = pair[1]
    return Seen(*order, base, revs)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
