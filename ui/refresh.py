"""What the page's tick compares to see that its shown image was changed elsewhere (another window, a run): a
short digest of what the project stores for the image (its status and each object's revision, ui/window_state.rev).
One read of the image and one of its objects through Project's public methods; nothing is drawn unless it
differs from the digest of what the page was last sent."""

from __future__ import annotations

import hashlib

from gdino.store import ProjectError

from .window_state import rev


def image_stamp(project, image_id: int | None) -> str:
    """The digest of the image as stored now ("" for no image, "gone" for one no longer in the project)."""
    if image_id is None:
        return ""
    try:
        record = project.image(image_id)
        objects = project.objects(image_id)
    except ProjectError:
        return "gone"
    parts = [record.status, *sorted(f"{o.id}:{rev(o)}" for o in objects)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
