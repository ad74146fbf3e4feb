"""Mask geometry for exports: mask <-> COCO RLE, mask <-> polygons, true pixel area.

Coordinates are COCO's: pixel (row r, column c) covers [c, c+1] x [r, r+1]. Polygons run along pixel
edges (not through pixel centres, which would drop half a pixel around every object), so a polygon
rasterizes back to the same pixels.

Holes and several parts: a polygon can carry holes and other parts when its rings are joined by a
bridge walked there and back. The bridge encloses no area, so under the even-odd rule (how
pycocotools and most trainers fill polygons) the result is exactly the mask. `mask_to_polygons` gives
one polygon per part, each with its holes (COCO: a list of polygons, one object); `mask_to_polygon`
joins all parts into a single polygon (YOLO segmentation: one object per line).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pycocotools import mask as coco_mask

Ring = np.ndarray  # (K, 2) float64 vertices (x, y), closed implicitly


# ------------------------------------------------------------------------------------------- RLE

def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO compressed RLE {"size": [H, W], "counts": str} (JSON-ready)."""
    mask = _as_mask(mask)
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> (H, W) bool."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE is a dict with 'size' [H, W] and 'counts'")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compact = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        compact = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(compact).astype(bool)


def mask_area(mask: np.ndarray) -> int:
    """The number of pixels in the mask (what COCO's `area` of a mask annotation should be)."""
    return int(_as_mask(mask).sum())


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is (H, W), got shape {mask.shape}")
    return mask.astype(bool, copy=False)


# -------------------------------------------------------------------------------------- polygons

def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """(H, W) bool -> COCO polygons [[x0, y0, x1, y1, ...], ...]: one per part, each carrying its
    holes. An empty mask gives []."""
    outers, holes = _rings_by_part(_as_mask(mask))
    return [_flat(_bridge([outer, *part_holes])) for outer, part_holes in zip(outers, holes, strict=True)]


def mask_to_polygon(mask: np.ndarray) -> list[float]:
    """(H, W) bool -> one polygon [x0, y0, ...] holding every part and hole (YOLO segmentation)."""
    outers, holes = _rings_by_part(_as_mask(mask))
    rings = [ring for outer, part_holes in zip(outers, holes, strict=True) for ring in (outer, *part_holes)]
    return _flat(_bridge(rings)) if rings else []


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons (the parts of one object) -> (H, W) bool, rasterized as pycocotools does."""
    polygons = [list(map(float, p)) for p in polygons if len(p) >= 6]
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = coco_mask.frPyObjects(polygons, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def _flat(ring: Ring) -> list[float]:
    return [float(v) for v in ring.reshape(-1)]


def _bridge(rings: list[Ring]) -> Ring:
    """Join rings into one: after each ring, walk back to the first ring's start over the same path.
    Every bridge is walked there and back, so it adds no area under the even-odd rule."""
    anchor = rings[0][0]
    path = [rings[0], anchor[None]]
    for ring in rings[1:]:
        # start each ring at its vertex nearest the anchor, to keep bridges short
        k = int(np.argmin(((ring - anchor) ** 2).sum(1)))
        ring = np.roll(ring, -k, axis=0)
        path += [ring, ring[:1], anchor[None]]
    return np.concatenate(path)


def _rings_by_part(mask: np.ndarray) -> tuple[list[Ring], list[list[Ring]]]:
    """Outer rings (one per part) and, for each, its hole rings, along pixel edges."""
    rings = _trace_rings(mask)
    areas = [_signed_area(r) for r in rings]
    outers = [r for r, a in zip(rings, areas, strict=True) if a < 0]
    outer_areas = [-a for a in areas if a < 0]
    holes: list[list[Ring]] = [[] for _ in outers]
    for ring, area in zip(rings, areas, strict=True):
        if area <= 0:
            continue
        # a background pixel just inside the hole: inside exactly the parts that enclose the hole
        probe = _inside_point(ring)
        owners = [i for i, outer in enumerate(outers) if _contains(outer, probe)]
        if owners:
            holes[min(owners, key=lambda i: outer_areas[i])].append(ring)
    return outers, holes


def _trace_rings(mask: np.ndarray) -> list[Ring]:
    """Closed rings along the edges between mask and background pixels; outer boundaries come out
    with negative shoelace area (y down), holes with positive."""
    m = np.pad(mask, 1)
    fg = m[1:-1, 1:-1]
    rows, cols = np.nonzero(fg & ~m[:-2, 1:-1])  # top edges: walk right-to-left
    starts = list(zip(cols + 1, rows, strict=True))
    ends = list(zip(cols, rows, strict=True))
    rows, cols = np.nonzero(fg & ~m[2:, 1:-1])  # bottom edges: left-to-right
    starts += list(zip(cols, rows + 1, strict=True))
    ends += list(zip(cols + 1, rows + 1, strict=True))
    rows, cols = np.nonzero(fg & ~m[1:-1, :-2])  # left edges: downwards
    starts += list(zip(cols, rows, strict=True))
    ends += list(zip(cols, rows + 1, strict=True))
    rows, cols = np.nonzero(fg & ~m[1:-1, 2:])  # right edges: upwards
    starts += list(zip(cols + 1, rows + 1, strict=True))
    ends += list(zip(cols + 1, rows, strict=True))

    outgoing: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for s, e in zip(starts, ends, strict=True):
        outgoing[(int(s[0]), int(s[1]))].append((int(e[0]), int(e[1])))
    rings = []
    while outgoing:
        # start where the path is unambiguous (not a corner shared by two diagonal pixels)
        start = next((v for v, out in outgoing.items() if len(out) == 1), next(iter(outgoing)))
        ring, prev, cur = [start], None, start
        while True:
            nexts = outgoing[cur]
            nxt = _turn(prev, cur, nexts) if len(nexts) > 1 else nexts[0]
            nexts.remove(nxt)
            if not nexts:
                del outgoing[cur]
            prev, cur = cur, nxt
            if cur == start:
                break
            ring.append(cur)
        rings.append(_drop_collinear(np.array(ring, dtype=np.float64)))
    return rings


def _turn(prev, cur, candidates):
    """At a corner shared by two diagonal pixels, take the sharper turn: the two pixels become
    separate rings touching at that corner (4-connected parts)."""
    dx, dy = cur[0] - prev[0], cur[1] - prev[1]

    def cross(c):
        return dx * (c[1] - cur[1]) - dy * (c[0] - cur[0])

    return min(candidates, key=cross)


def _drop_collinear(ring: Ring) -> Ring:
    prev = np.roll(ring, 1, axis=0)
    nxt = np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - ring[:, 1]) - (ring[:, 1] - prev[:, 1]) * (nxt[:, 0] - ring[:, 0])
    return ring[cross != 0]


def _signed_area(ring: Ring) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _inside_point(hole: Ring) -> tuple[float, float]:
    """The centre of the background pixel beside the first unit step of the hole ring."""
    (x0, y0), (x1, y1) = hole[0], hole[1]
    dx, dy = np.sign(x1 - x0), np.sign(y1 - y0)
    # rings run with the mask on one side; half a step along, half a pixel to the background side
    return x0 + 0.5 * dx - 0.5 * dy, y0 + 0.5 * dy + 0.5 * dx


def _contains(ring: Ring, point: tuple[float, float]) -> bool:
    """Even-odd point in polygon; the point is never on an edge (pixel centre vs. pixel edges)."""
    x, y = point
    xs, ys = ring[:, 0], ring[:, 1]
    xn, yn = np.roll(xs, -1), np.roll(ys, -1)
    crosses = (ys > y) != (yn > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = xs + (y - ys) * (xn - xs) / (yn - ys)
    return bool(np.count_nonzero(crosses & (at > x)) % 2)
