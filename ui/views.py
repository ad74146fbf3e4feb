"""Each window's view of an image: an edit made on a view that something else has since changed is refused,
never applied over that change.

Two windows (two tabs, or two people on a shared project link) can show one image. The canvas value gives
each object a revision (`rev`: a digest of what is stored for it). Every edit of existing objects, and
undo/redo, comes with the revisions the window last drew ("seen"), the revision of that value ("base") and an
id the page draws at random when it loads ("window"). The edit is accepted only if each object it touches is now
as that window saw it, or differs from it only by that window's own edits stored after that value was read (a
quick second edit is sent before the reply to the first arrives, on the same view). An object the window does
not show counts as absent from its view.

What each window's own edits made of each object (revision after -> revision before, and when) is kept here, in
memory of this server, bounded per visitor and in all. A window whose memory was dropped (a restart, a great
many windows) has its in-flight edits refused as stale, with the stored state drawn, never applied blindly.

A page that sends no view at all is not checked (the page this server serves always sends one): the check
keeps an honest window from overwriting what it has not seen; it is not a permission.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from gdino.project import ObjectRecord, ProjectError

from .recent import put, recent

MAX_TOKENS = 4096  # visitors remembered (least recently used dropped)
MAX_WINDOWS = 16  # windows remembered per visitor
MAX_STEPS = 256  # own edits remembered per window (only those still in flight matter: a few)
MAX_SEEN = 100_000  # revisions one payload may carry (undo sends every object of the image)
_WINDOW = re.compile(r"[A-Za-z0-9_-]{8,64}")
_REV = re.compile(r"[0-9a-f]{16}")

STALE = ("that was changed in another window (or by a run) after this page showed it, so it was not done; the "
         "canvas now shows what is stored: do it again if you still want it")


class StaleViewError(ProjectError):
    """The window's view is older than what is stored for the objects an edit touches."""


class ViewError(ValueError):
    """A view the page sent that is not one (the message is in the page's words)."""


def rev(obj: ObjectRecord | None) -> str | None:
    """The revision of an object as stored (None: absent)."""
    if obj is None:
        return None
    data = [obj.id, obj.class_name, obj.phrase, list(obj.box), obj.score, obj.source, obj.mask, obj.clicks]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Seen:
    """Where an edit comes from: its window, its place in the window's order (ui/edit_order.py), the view."""

    window: str
    seq: int  # the edit's number in its window
    prev: int  # the number of the edit the window sent before it (0: none)
    base: int  # the revision of the canvas value the window drew (ui/canvas_view.py)
    revs: dict[int, str]  # object id -> the revision the window drew


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


class Views:
    """What each window's own edits made, per server, to tell its own in-flight edits from another's."""

    def __init__(self):
        self._lock = threading.Lock()
        # token -> window -> {(object id, revision after): (revision before, when: a canvas revision)}
        self._made: OrderedDict[str, OrderedDict[str, OrderedDict[tuple[int, str | None], tuple[str | None, int]]]] = \
            OrderedDict()

    def check(self, token: str, seen: Seen, current: Mapping[int, ObjectRecord | None]) -> None:
        """StaleViewError unless every object in `current` (what an edit touches, as stored now; None: absent)
        is as the window saw it, up to the window's own edits stored after the value it drew."""
        with self._lock:
            made = dict(self._made.get(token, {}).get(seen.window, {}))
        for object_id, record in current.items():
            if not _reaches(made, object_id, rev(record), seen.revs.get(object_id), seen.base):
                raise StaleViewError(STALE)

    def record(self, token: str, window: str, before: Mapping[int, ObjectRecord | None],
               after: Mapping[int, ObjectRecord | None], when: int) -> None:
        """The window's edit changed these objects (as read in its transaction before and after it; None:
        absent); `when`: a canvas revision taken in that transaction (ui/canvas_view.next_revision)."""
        steps = {(i, rev(after.get(i))): (rev(before.get(i)), when) for i in {*before, *after}
                 if rev(after.get(i)) != rev(before.get(i))}
        if not steps:
            return
        with self._lock:
            made = recent(recent(self._made, token, MAX_TOKENS), window, MAX_WINDOWS)
            for key, step in steps.items():
                put(made, key, step, MAX_STEPS)


def _reaches(made: Mapping[tuple[int, str | None], tuple[str | None, int]], object_id: int, now: str | None,
             wanted: str | None, base: int) -> bool:
    """Whether the window's own edits stored after the value it drew (revision `base`) lead from the revision it
    saw (`wanted`) to the stored one (`now`)."""
    for _ in range(MAX_STEPS + 1):
        if now == wanted:
            return True
        step = made.get((object_id, now))
        if step is None or step[1] <= base:  # not this window's, or already in the value it drew
            return False
        now = step[0]
    return False
