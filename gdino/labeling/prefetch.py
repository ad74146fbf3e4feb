"""A thread that decodes the next images while the model works on the current ones."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Hashable, Sequence

from ..processing import to_rgb


class Prefetcher:
    """Decodes images in a background thread, a few ahead, in the order they will be asked for.

    items: (key, path) pairs in the order `__call__` will be asked for their keys. Calling it with a
    key returns that image decoded (an upright RGB PIL image, `to_rgb`'s frame) or raises the error
    decoding raised, so a bad file fails in the caller exactly as if the caller had decoded it.
    Use as a context manager: leaving it stops the thread (e.g. on Ctrl-C).
    """

    def __init__(self, items: Sequence[tuple[Hashable, str | os.PathLike]], *, depth: int = 4,
                 decode: Callable[[str | os.PathLike], object] = to_rgb):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))  # bounds memory: decoded photos are big
        self._stop = threading.Event()
        self._decode = decode
        self._thread = threading.Thread(target=self._run, args=(list(items),), name="gdino-decode", daemon=True)
        self._thread.start()

    def _run(self, items: list[tuple[Hashable, str | os.PathLike]]) -> None:
        for key, path in items:
            if self._stop.is_set():
                return
            try:
                result: object = self._decode(path)
            except Exception as err:  # handed to the caller, who decides what it means
                result = err
            while not self._stop.is_set():
                try:
                    self._queue.put((key, result), timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __call__(self, key: Hashable):
        while True:
            try:
                got, result = self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise LookupError(f"{key!r} is not among the images still to be decoded") from None
                continue
            if got == key:  # keys asked out of order are dropped: the caller skipped them
                break
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
