"""What a person's edit does to a mask, as pure numpy on (H, W) bool arrays in upright image pixels.

Pixel (x, y) covers [x, x+1) x [y, y+1); its centre is (x + 0.5, y + 0.5). A brush stroke paints every
pixel whose centre lies within `radius` of the stroke's polyline (a single point paints a disc); a box
keeps the pixels whose centres lie inside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The mask moved by whole pixels (dx right, dy down); what leaves the image is lost."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src = mask[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def inside_box(shape: tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """(H, W) bool: the pixels whose centres lie inside box xyxy (edges included)."""
    h, w = shape
    x0, y0, x1, y1 = box
    xs = np.arange(w) + 0.5
    ys = np.arange(h) + 0.5
    return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


def stroke(shape: tuple[int, int], points: Sequence[Sequence[float]], radius: float) -> np.ndarray:
    """(H, W) bool: the pixels a round brush of `radius` paints along the polyline through `points`."""
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return out
    segments = zip(pts, pts[1:], strict=False) if len(pts) > 1 else [(pts[0], pts[0])]
    for a, b in segments:
        lo = np.floor(np.minimum(a, b) - radius - 0.5).astype(int)
        hi = np.ceil(np.maximum(a, b) + radius + 0.5).astype(int)
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], w), min(hi[1], h)
        if x0 >= x1 or y0 >= y1:
            continue
        cx = np.arange(x0, x1) + 0.5
        cy = np.arange(y0, y1) + 0.5
        px, py = cx[None, :] - a[0], cy[:, None] - a[1]
        d = b - a
        length2 = float(d @ d)
        t = np.clip((px * d[0] + py * d[1]) / length2, 0.0, 1.0) if length2 > 0 else np.zeros_like(px * py)
        ex, ey = px - t * d[0], py - t * d[1]
        out[y0:y1, x0:x1] |= ex * ex + ey * ey <= radius * radius
    return out


def bounding_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """xyxy of the mask's pixels (pixel edges), or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
