"""Each window's edits applied in the order the person made them, whatever order they reach the server in.

The canvas sends every edit as its own request, without waiting for the reply to the last one (the page draws
edits in flight itself). Separate requests can arrive in another order (several connections, a busy machine),
and two relabels or resizes applied the wrong way round store what the person did not choose last. So each edit
names the one its window sent before it ("prev", 0 for a window's first) and waits here until that one has
been handled, applied or refused. Windows do not wait for each other.

An edit whose predecessor never comes (a server restart forgot it, a request was lost) waits WAIT_S, then goes
ahead. What was handled is kept per window in memory, bounded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

WAIT_S = 2.0  # the longest an edit waits for its predecessor
MAX_WINDOWS = 1024  # windows remembered (least recently used dropped)
MAX_HANDLED = 256  # seqs remembered per window


class EditOrder:
    """Per window: which of its edits have been handled; an edit's turn comes after its predecessor's."""

    def __init__(self, wait_s: float = WAIT_S):
        self.wait_s = wait_s
        self._changed = threading.Condition()
        self._handled: OrderedDict[tuple[str, str], OrderedDict[int, None]] = OrderedDict()

    @contextmanager
    def turn(self, token: str, window: str, seq: int, prev: int) -> Iterator[None]:
        """Wait until the window's edit `prev` was handled (at most wait_s), run the body, mark `seq` handled."""
        key = (token, window)
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            while prev != 0 and prev not in self._handled.get(key, ()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        try:
            yield
        finally:
            with self._changed:
                handled = self._handled.pop(key, None) or OrderedDict()
                self._handled[key] = handled  # most recently used last
                handled[seq] = None
                while len(handled) > MAX_HANDLED:
                    handled.popitem(last=False)
                while len(self._handled) > MAX_WINDOWS:
                    self._handled.popitem(last=False)
                self._changed.notify_all()
