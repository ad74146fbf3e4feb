"""Each window's edits applied in the order the person made them, whatever order they reach the server in.

The canvas sends every edit as its own request, without waiting for the reply to the last one (the page draws
edits in flight itself). Separate requests can arrive in another order (several connections, a busy machine),
and two relabels or resizes applied the wrong way round store what the person did not choose last. So each edit
names the one its window sent before it ("prev", 0 for a window's first) and its turn comes once that one has
been handled (applied or refused, and answered). Windows do not wait for each other.

A predecessor that has arrived is waited for however long it takes (a SAM click can take seconds). One that has
not arrived is waited for WAIT_S at most: a server restart forgot it, or its request was lost. At most
MAX_WAITING edits wait for a predecessor that has not arrived, across the server, so that made-up predecessors
cannot tie up the server's threads; beyond that an edit goes ahead at once. What was handled is kept per window
in memory, bounded per visitor (session token) and in all.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from .recent import put, recent

WAIT_S = 2.0  # the longest an edit waits for a predecessor that has not arrived
MAX_WAITING = 4  # edits waiting for a predecessor that has not arrived, across the server (the app runs 16 at once)
MAX_TOKENS = 4096  # visitors remembered (least recently used dropped)
MAX_WINDOWS = 16  # windows remembered per visitor
MAX_SEQS = 256  # seqs remembered per window


class EditOrder:
    """Per window: which of its edits have arrived and which have been handled."""

    def __init__(self, wait_s: float = WAIT_S):
        self.wait_s = wait_s
        self._changed = threading.Condition()
        self._waiting = 0  # edits waiting for a predecessor that has not arrived
        # token -> window -> seq -> handled (False: arrived, running)
        self._seqs: OrderedDict[str, OrderedDict[str, OrderedDict[int, bool]]] = OrderedDict()

    @contextmanager
    def turn(self, token: str, window: str, seq: int, prev: int) -> Iterator[None]:
        """Wait for the window's edit `prev` (see the module's rules), run the body, mark `seq` handled."""
        with self._changed:
            self._mark(token, window, seq, False)
            start, counted = time.monotonic(), False
            try:
                while prev != 0:
                    state = self._window(token, window).get(prev)
                    if state is True:
                        break
                    if state is None:  # not arrived (yet)
                        left = start + self.wait_s - time.monotonic()  # wait_s read anew: a shorter one applies at once
                        if left <= 0 or (not counted and self._waiting >= MAX_WAITING):
                            break
                        if not counted:
                            self._waiting, counted = self._waiting + 1, True
                        self._changed.wait(left)
                    else:  # arrived and running: its turn ends when it is answered
                        if counted:  # no longer waiting for an absent one
                            self._waiting, counted = self._waiting - 1, False
                        self._changed.wait()
            finally:
                if counted:
                    self._waiting -= 1
        try:
            yield
        finally:
            with self._changed:
                self._mark(token, window, seq, True)
                self._changed.notify_all()

    def _window(self, token: str, window: str) -> OrderedDict[int, bool]:
        return self._seqs.get(token, {}).get(window, OrderedDict())

    def _mark(self, token: str, window: str, seq: int, handled: bool) -> None:
        put(recent(recent(self._seqs, token, MAX_TOKENS), window, MAX_WINDOWS), seq, handled, MAX_SEQS)
