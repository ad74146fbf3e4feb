"""Keep freed memory for reuse instead of handing it back to the OS after every tensor (glibc, Linux).

glibc serves each allocation over 32 MB with a fresh mmap and unmaps it on free, so every large
activation of a forward pass (the encoder's 20,000 x 2048 FFN, for one) is faulted in page by page
again: at 800x1200 on a 2-core CPU that is about 1.2 million page faults and 2 s of kernel time per
detection, a quarter of it. With mmap off and a high trim threshold, freed blocks stay in the heap and the
next forward reuses them. The cost: the process keeps its peak memory (about 2.3 GB for Swin-T at
800x1200) until it exits. `GDINO_MALLOC=system` leaves malloc as it is.

All threads share one arena: a thread's own arena cannot hold a block over 64 MB and maps it anyway. A
thread that allocated before this call keeps its arena, and later threads may be handed it, so entry
points (the app, the `gdino` command) call this first thing; `load_model` calls it too, as a fallback.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys

log = logging.getLogger("gdino")

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Switch glibc's malloc to reuse freed memory (once per process); True if it is on. Called first thing
    by the app and the `gdino` command, and by `load_model` for a model on the CPU. A no-op (False) off
    Linux/glibc or with GDINO_MALLOC=system."""
    setting = os.environ.get("GDINO_MALLOC", "keep").strip().lower()
    if setting not in ("keep", "system"):
        raise ValueError(f"GDINO_MALLOC must be 'keep' (the default) or 'system', got {setting!r}")
    result = False
    if setting == "keep" and sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            # one arena: a thread's own arena cannot hold a block over 64 MB and maps it anyway
            result = all(mallopt(param, value) for param, value in
                         ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1)))
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
            result = False
    log.debug("gdino: keep freed memory for reuse: %s", result)
    return result
