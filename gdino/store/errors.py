"""The store's two errors, and how a failed file operation becomes one that says what to do (SQLite's:
`connection.translate`)."""

from __future__ import annotations

import errno
from pathlib import Path


class ProjectError(ValueError):
    """A project could not be opened, or was asked to do something it cannot; the message says what to do."""


class StoreError(ProjectError):
    """The storage failed, not the request: busy, disk full, read-only, I/O (`translate`). A batch of writes
    stops at it, where a request's own problem (a box outside the image) fails that request only."""


def os_error(err: OSError, directory: Path) -> Exception:
    """A failed file operation in the project folder -> a ProjectError for the cases people can act on."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ProjectError(f"the disk holding the project {directory} is full; nothing was added: free some space and "
                            "try again")
    if err.errno == errno.EROFS:
        return ProjectError(f"the project {directory} is on read-only storage; it can be viewed and exported, not "
                            "changed")
    return err
