"""Each window's state: what the window last drew of an image (its view), and what its own edits made since. An
edit made on a view that something else has since changed is refused, never applied over that change.

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

The page's fields that name the window and its view are read by ui/payload.py (into `Seen`).

A page that sends no view at all is not checked (the page this server serves always sends one): the check
keeps an honest window from overwriting what it has not seen; it is not a permission.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from gdino.store import ObjectRecord, ProjectError

from .recent import put, recent

MAX_TOKENS = 4096  # visitors remembered (least recently used dropped)
MAX_WINDOWS = 16  # windows remembered per visitor
MAX_STEPS = 256  # own edits remembered per window (only those still in flight matter: a few)

STALE = ("that was changed in another window (or by a run) after this page showed it, so it was not done; the "
         "canvas now shows what is stored: do it again if you still want it")


class StaleViewError(ProjectError):
    """The window's view is older than what is stored for the objects an edit touches."""


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


class WindowStates:
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
