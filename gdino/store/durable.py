"""Flushing to disk: what the store and the exports call before they rename a file or folder into place."""

from __future__ import annotations

import os
from pathlib import Path


def fsync(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries, to disk (Windows cannot open folders: skipped there)."""
    if path.is_dir():
        if os.name != "nt":
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
