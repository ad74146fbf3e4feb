"""What the page shows besides the canvas, computed from the project: colours, the image list, placeholders."""

from __future__ import annotations

import colorsys

import numpy as np


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class position (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


PHRASE_COLOR = (150, 150, 150)  # objects labeled with a free-text phrase not mapped to a class yet


def placeholder(width: int, height: int, longest: int = 800) -> np.ndarray:
    """A grey checkerboard standing in for an image whose file cannot be read: the page keeps working (and
    shows its boxes) instead of failing. Scaled down to at most `longest` px per side."""
    scale = min(1.0, longest / max(width, height))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    yy, xx = np.mgrid[:h, :w]
    return np.where(((yy // 32 + xx // 32) % 2)[..., None] == 0, 200, 170).astype(np.uint8).repeat(3, axis=2)


# the image list's filters (the page's "Show" menu): every image, those of one status, or the least confident first
LIST_FILTERS = ("all", "unlabeled", "auto", "reviewed", "skipped", "least confident first")


def image_rows(project, list_filter: str = "all") -> list[list]:
    """Rows [id, name, status, objects, lowest score] for the image list, filtered / ordered by `list_filter`
    (one of LIST_FILTERS)."""
    if list_filter == "least confident first":
        records = [r for r in project.images(order="confidence") if r.status != "skipped"]
    elif list_filter in (None, "", "all"):
        records = project.images(order="name")
    else:
        records = project.images(status=list_filter, order="name")
    return [[r.id, r.name, r.status, r.num_objects, "" if r.min_score is None else round(r.min_score, 3)]
            for r in records]
