"""Mask geometry for exports: mask <-> COCO RLE, mask <-> polygons, true pixel area.

Coordinates are COCO's: pixel (row r, column c) covers [c, c+1] x [r, r+1]. Polygons run along pixel
edges (not through pixel centres, which would drop half a pixel around every object), so a polygon
rasterizes back to the same pixels.

Holes and several parts: a polygon can carry holes and other parts when its rings are joined by
bridges walked there and back. A bridge encloses no area, so under the even-odd rule (how pycocotools
and most trainers fill polygons) the result is exactly the mask. `mask_to_polygons` gives one polygon
per part, each with its holes (COCO: a list of polygons, one object); `mask_to_polygon` joins all
parts into a single polygon (YOLO segmentation: one object per line). Parts are 4-connected: two
pixels touching only at a corner are two parts. Rings are chained in a snake order, nearest vertex to
next start, so that the bridges stay short (pycocotools' cost grows with the outline's length).

Tracing is vectorized (no per-edge Python): a ring's vertices are the pixel corners where the
boundary turns, read off each corner's 2x2 pixel neighbourhood; along each grid line those corners
pair up into the boundary's straight runs, which links every corner to the next one; the rings are
the cycles of that link, ordered by pointer jumping. See `_corners` and `_rings`.

Everything read from files (`polygons_to_mask`, `rle_to_mask`) is checked before pycocotools sees it:
its C code trusts sizes and coordinates (it segfaults on a coordinate of 1e9, and returns uninitialized
memory for RLE counts that do not fill the image).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
from pycocotools import mask as coco_mask

MAX_POLYGON_VERTICES = 10_000
"""A default cap for exporters (`max_vertices`): above it, store the mask as RLE. A SAM mask of a
1200x800 image traces to a few hundred to a few thousand vertices; 10,000 (about 100 kB of JSON) is
hair, foliage or noise, where RLE is smaller and polygon-reading tools slow down."""

MAX_MASK_PIXELS = 50_000_000
"""The largest mask (H * W) read from a file; the same limit as `gdino.processing.MAX_PIXELS` for
images (not imported from there: that module pulls in torch)."""

MAX_RASTER_VERTICES = 100_000
"""`polygons_to_mask` refuses more vertices than this, over all polygons of one object."""

MAX_RASTER_OUTLINE = 4_000_000
"""`polygons_to_mask` refuses an outline longer than this many pixels (summed over all polygons, each
segment counted as max(|dx|, |dy|), closing segments included): pycocotools walks the outline at 5
steps a pixel and keeps 16 bytes a step. At this cap it took 0.2 GB and 0.6 s (measured); a traced
SAM mask's outline is a few thousand pixels."""

RASTER_MARGIN = 16
"""`polygons_to_mask` accepts x in [-(W + 16), 2W + 16] and y in [-(H + 16), 2H + 16]: up to one image
size (plus 16 px) outside the image on every side. pycocotools clips what lies outside."""


# ------------------------------------------------------------------------------------------- RLE

def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO compressed RLE {"size": [H, W], "counts": str} (JSON-ready)."""
    mask = _as_mask(mask)
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> (H, W) bool.

    Raises ValueError for a size that is not two positive ints with H * W <= MAX_MASK_PIXELS, and for
    counts that are not valid or do not add up to exactly H * W pixels."""
    return _runs_to_mask(*_rle_runs(rle))


def check_rle(rle: dict, height: int, width: int) -> None:
    """Raise ValueError unless `rle` is a COCO RLE of a height x width image that `rle_to_mask` decodes. The
    runs are read, the mask is not built: a mask is checked at the cost of its counts, not of its pixels."""
    size = rle.get("size") if isinstance(rle, dict) else None
    if isinstance(size, list | tuple) and len(size) == 2 and list(size) != [height, width]:
        shown = "x".join(str(v)[:12] for v in size)
        raise ValueError(f"the mask is {shown} (height x width), the image {height}x{width}")
    _rle_runs(rle)


def _rle_runs(rle: dict) -> tuple[np.ndarray, int, int]:
    """(checked run lengths, H, W) of a COCO RLE; see rle_to_mask."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE is a dict with 'size' [H, W] and 'counts'")
    size = rle["size"]
    if not isinstance(size, list | tuple | np.ndarray) or len(size) != 2:
        raise ValueError(f"an RLE's 'size' is [H, W], got {size!r:.60}")
    h, w = _check_size(size[0], size[1], "an RLE's 'size'")
    counts = rle["counts"]
    if isinstance(counts, list | tuple):
        return _checked_runs(counts, h * w), h, w
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError as err:
            raise ValueError("an RLE's compressed 'counts' has characters outside '0'..'o'") from err
    if not isinstance(counts, bytes):
        raise ValueError(f"an RLE's 'counts' is a string or a list of ints, got {type(counts).__name__}")
    return _checked_runs(_decode_counts(counts), h * w), h, w


def mask_area(mask: np.ndarray) -> int:
    """The number of pixels in the mask (what COCO's `area` of a mask annotation should be)."""
    return int(_as_mask(mask).sum())


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is (H, W), got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _check_size(height, width, what: str) -> tuple[int, int]:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0:
            raise ValueError(f"{what}: {name} must be a positive int, got {v!r}")
    h, w = int(height), int(width)
    if h * w > MAX_MASK_PIXELS:
        raise ValueError(f"{what}: {h}x{w} is {h * w:,} pixels, more than the {MAX_MASK_PIXELS:,} allowed")
    return h, w


def _decode_counts(s: bytes) -> np.ndarray:
    """COCO's compressed counts string -> run lengths (int64), as pycocotools' rleFrString reads it:
    each count is 5-bit groups, least significant first, 0x20 = "more follows", 0x10 in the last group
    = negative; from the fourth count on, each is a difference to the count two places before."""
    c = np.frombuffer(s, dtype=np.uint8).astype(np.int64) - 48
    if c.size and (c.min() < 0 or c.max() > 63):
        raise ValueError("an RLE's compressed 'counts' has characters outside '0'..'o'")
    last = (c & 0x20) == 0
    if c.size and not last[-1]:
        raise ValueError("an RLE's compressed 'counts' ends in the middle of a number")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if ends.size and (ends - starts).max() >= 6:  # pycocotools reads 32-bit: 6 groups (30 bits) at most
        raise ValueError("an RLE's compressed 'counts' has a number too large for any image")
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(c.size) - starts[group]  # the 5-bit group's place within its number
    values = np.bincount(group, weights=(c & 0x1F) << (5 * k), minlength=ends.size).astype(np.int64)
    negative = (c[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * (k[ends[negative]] + 1))
    # undo the differences: odd counts chain from index 1, even ones from index 2 (index 0 stands alone)
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values


def _checked_runs(counts, n_pixels: int) -> np.ndarray:
    try:
        runs = np.asarray(counts)
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"an RLE's 'counts' must be a list of ints: {err}") from err
    if runs.size == 0:
        runs = runs.astype(np.int64)
    if runs.ndim != 1 or runs.dtype.kind not in "iu":
        raise ValueError("an RLE's 'counts' must be a list of ints")
    if runs.size and runs.min() < 0:
        raise ValueError("an RLE's 'counts' has a negative run")
    total = int(runs.sum(dtype=np.uint64)) if runs.size else 0
    if total != n_pixels or (runs.size and int(runs.max()) > n_pixels):
        raise ValueError(f"an RLE's 'counts' cover {total:,} pixels, the size says {n_pixels:,}")
    return runs


def _runs_to_mask(runs: np.ndarray, h: int, w: int) -> np.ndarray:
    """Checked run lengths (column-major, background first) -> (H, W) bool, column-major in memory as
    pycocotools' decode gives it (and several times faster)."""
    values = (np.arange(runs.size) % 2).astype(bool)
    return np.repeat(values, runs).reshape(w, h).T


# -------------------------------------------------------------------------------------- polygons

def mask_to_polygons(mask: np.ndarray, max_vertices: int | None = None) -> list[list[float]] | None:
    """(H, W) bool -> COCO polygons [[x0, y0, x1, y1, ...], ...] in pixel-corner coordinates (whole
    numbers, as Python ints): one per 4-connected part, each carrying its holes, in the order of the
    parts' first pixels (row by row). An empty mask gives []. `polygons_to_mask` gives the mask back
    exactly.

    max_vertices: when the polygons would have more vertices than this in all (x, y pairs, summed over
    the polygons), return None instead, so that the caller stores the mask as RLE (exporters pass
    MAX_POLYGON_VERTICES). With a cap, None also when the outline is longer than MAX_RASTER_OUTLINE, so
    that any result under a cap <= MAX_RASTER_VERTICES is one `polygons_to_mask` accepts. The cap is
    checked as soon as the corners are counted, before any tracing: a noisy mask costs little."""
    rings = _rings(_as_mask(mask), max_vertices, per_part=True)
    return None if rings is None else _join(rings, limit_outline=max_vertices is not None)


def mask_to_polygon(mask: np.ndarray, max_vertices: int | None = None) -> list[float] | None:
    """(H, W) bool -> one polygon [x0, y0, ...] (pixel corners, Python ints) holding every part and
    hole (YOLO segmentation); [] for an empty mask. max_vertices: as in `mask_to_polygons` (None when
    the polygon would have more vertices, or with a cap, a longer outline than MAX_RASTER_OUTLINE)."""
    rings = _rings(_as_mask(mask), max_vertices, per_part=False)
    polygons = None if rings is None else _join(rings, limit_outline=max_vertices is not None)
    return None if polygons is None else polygons[0] if polygons else []


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons (the parts of one object, pixel-corner coordinates) -> (H, W) bool, rasterized as
    pycocotools does (each polygon even-odd filled, the polygons' union).

    Refuses (ValueError) what could crash pycocotools or make it allocate gigabytes: a height or width
    that is not a positive int or H * W > MAX_MASK_PIXELS; a polygon that is not a flat list of numbers,
    has an odd count or fewer than 3 points; a NaN or infinite coordinate; a coordinate more than one
    image size (+ RASTER_MARGIN px) outside the image; more than MAX_RASTER_VERTICES points, or an outline
    longer than MAX_RASTER_OUTLINE pixels, in all."""
    h, w = _check_size(height, width, "polygons_to_mask")
    if not isinstance(polygons, list | tuple | np.ndarray):
        raise ValueError(f"polygons must be a list of [x0, y0, x1, y1, ...] lists, got {type(polygons).__name__}")
    arrays, n_points = [], 0
    for i, polygon in enumerate(polygons):
        if isinstance(polygon, str | bytes):
            raise ValueError(f"polygon {i}: must be a flat list of numbers [x0, y0, x1, y1, ...]")
        try:
            xy = np.asarray(polygon, dtype=np.float64)
        except (ValueError, TypeError, OverflowError) as err:
            raise ValueError(f"polygon {i}: coordinates must be numbers ({err})") from err
        if xy.ndim != 1:
            raise ValueError(f"polygon {i}: must be a flat list [x0, y0, x1, y1, ...], got shape {xy.shape}")
        if xy.size % 2:
            raise ValueError(f"polygon {i}: an odd number of coordinates ({xy.size})")
        if xy.size < 6:
            raise ValueError(f"polygon {i}: a polygon needs at least 3 points, got {xy.size // 2}")
        n_points += xy.size // 2
        if n_points > MAX_RASTER_VERTICES:
            raise ValueError(f"polygons: more than {MAX_RASTER_VERTICES:,} vertices (x, y points) in all")
        arrays.append(xy)
    if not arrays:
        return np.zeros((h, w), dtype=bool)
    _check_points(arrays, h, w)
    rles = coco_mask.frPyObjects(arrays, h, w)
    return coco_mask.decode(coco_mask.merge(rles)).view(bool)  # 0 or 1: no copy needed


def _check_points(arrays: list[np.ndarray], h: int, w: int) -> None:
    """Finite, within RASTER_MARGIN of one image size around the image, and an outline no longer than
    MAX_RASTER_OUTLINE: checked on all polygons at once; the polygon at fault is found afterwards."""
    counts = np.array([a.size // 2 for a in arrays])
    ends = np.cumsum(counts)
    xy = np.concatenate(arrays).reshape(-1, 2)
    size = np.array([w, h], dtype=np.float64)
    lo, hi = -(size + RASTER_MARGIN), 2 * size + RASTER_MARGIN
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        i = int(np.searchsorted(ends, np.argmax(bad), side="right"))
        raise ValueError(f"polygon {i}: every coordinate must be finite (no NaN or inf)")
    out = (xy < lo) | (xy > hi)
    if out.any():
        k, axis = np.argwhere(out)[0]
        i, name = int(np.searchsorted(ends, k, side="right")), "xy"[axis]
        raise ValueError(f"polygon {i}: {name} = {xy[k, axis]:g} is outside [{lo[axis]:g}, {hi[axis]:g}] "
                         f"(more than one image size outside the {w}x{h} image)")
    outline = _outline(xy, counts)
    if outline > MAX_RASTER_OUTLINE:
        raise ValueError(f"polygons: the outline is {outline:,.0f} pixels long, more than {MAX_RASTER_OUTLINE:,}")


def _outline(xy: np.ndarray, counts: np.ndarray) -> float:
    """Summed over the polygons (consecutive rows of xy (N, 2), counts[i] points each), max(|dx|, |dy|)
    of every segment, closing ones included: how far pycocotools walks, in pixels."""
    ends = np.cumsum(counts)
    prev = np.arange(xy.shape[0]) - 1
    prev[ends - counts] = ends - 1  # each polygon's first point closes back to its last
    return float(np.abs(xy - xy[prev]).max(axis=1).sum())


# ----------------------------------------------------------------------------------- tracing

# A corner's 2x2 neighbourhood: code = TL + 2 TR + 4 BL + 8 BR (1 = mask pixel). The boundary runs with
# the mask on its left (y down), so outer rings have negative shoelace area and holes positive. For
# each code, its corner instances (two where two pixels touch diagonally: the boundary turns towards
# each pixel, keeping them apart): (horizontal run to the left 0 / right 1, vertical run above 0 /
# below 1, leaves vertically, a mask pixel beside it: row offset, column offset within the 2x2 block).
_INSTANCES: dict[int, list[tuple[int, int, bool, int, int]]] = {
    1: [(0, 0, True, 0, 0)],  # TL: in from the left, out upwards
    2: [(1, 0, False, 0, 1)],  # TR: in from above, out to the right
    4: [(0, 1, False, 1, 0)],  # BL: in from below, out to the left
    8: [(1, 1, True, 1, 1)],  # BR: in from the right, out downwards
    14: [(0, 0, False, 1, 1)],  # all but TL: in from above, out to the left
    13: [(1, 0, True, 0, 0)],  # all but TR: in from the right, out upwards
    11: [(0, 1, True, 0, 0)],  # all but BL: in from the left, out downwards
    7: [(1, 1, False, 0, 0)],  # all but BR: in from below, out to the right
    9: [(0, 0, True, 0, 0), (1, 1, True, 1, 1)],  # TL and BR: around TL, around BR
    6: [(1, 0, False, 0, 1), (0, 1, False, 1, 0)],  # TR and BL: around TR, around BL
}
_N_INSTANCES = np.array([len(_INSTANCES.get(code, [])) for code in range(16)], dtype=np.uint8)
_TABLE = np.zeros((32, 5), dtype=np.int64)  # row 2 * code + instance
_TABLE[[2 * code + i for code, rows in _INSTANCES.items() for i in range(len(rows))]] = [
    row for rows in _INSTANCES.values() for row in rows]


class _Rings(NamedTuple):
    """Rings in the order they are to be joined, each from its first corner (row by row). xy (N, 2) int64
    vertices (x, y) in image pixel-corner coordinates, ring after ring; start, length (R,) each ring's
    slice of xy; part (R,) the polygon each ring goes into (consecutive)."""

    xy: np.ndarray
    start: np.ndarray
    length: np.ndarray
    part: np.ndarray


def _rings(mask: np.ndarray, max_vertices: int | None, per_part: bool) -> _Rings | None:
    """The mask's boundary rings, or None when joining them (one polygon per part, or one in all)
    would give more than max_vertices vertices."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return _Rings(*(np.zeros((0, 2) if k == 0 else 0, dtype=np.int64) for k in range(4)))
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[r0:r1].any(axis=0))
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    padded = np.ascontiguousarray(np.pad(mask[r0:r1, c0:c1], 1))  # (h + 2, w + 2), background all round
    corners = _corners(padded, max_vertices)  # vertex (y, x) is the top-left corner of crop pixel (y, x)
    if corners is None:
        return None
    ys, xs, row = corners
    n = ys.size
    hside, vside, out_v, dr, dc = _TABLE[row].T
    ny, nx = padded.shape[0] - 1, padded.shape[1] - 1
    succ = np.where(out_v == 1, _pair((xs * ny + ys) * 2 + vside), _pair((ys * nx + xs) * 2 + hside))
    root, dist = _cycles(succ)
    order = np.argsort(root * n + (n - dist))  # ring by ring, each from its root along `succ`

    ring_start = np.flatnonzero(np.diff(root[order], prepend=-1))  # (R,) each ring's slice of `order`
    length = np.diff(ring_start, append=n)
    ring_root = order[ring_start]
    cross = xs * ys[succ] - xs[succ] * ys  # int64, exact: summed over a ring, twice its signed area
    hole = np.add.reduceat(cross[order], ring_start) > 0
    n_rings, n_outer = ring_start.size, int(ring_start.size - hole.sum())
    if per_part and n_outer == n_rings:  # no holes: every ring is a part
        part = np.arange(n_rings)
    elif per_part and n_outer > 1:  # which part owns each hole: the 4-connected part beside it
        labels = cv2.connectedComponents(padded.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)[1]
        part = labels[ys[ring_root] + dr[ring_root], xs[ring_root] + dc[ring_root]].astype(np.int64) - 1
    else:  # one part, or one polygon in all
        part = np.zeros(n_rings, dtype=np.int64)
    if max_vertices is not None and n + 2 * (n_rings - (n_outer if per_part else 1)) > max_vertices:
        return None

    # order the rings for short bridges: a part's outer ring first, then its holes (or every ring, for one
    # polygon) along a snake: bands of rows, alternately left to right and right to left
    ry, rx = ys[ring_root], xs[ring_root]
    band = ry // max(1, round(float(np.sqrt(ny * nx / n_rings))))
    snake = np.where(band % 2 == 0, rx, -rx)
    ring_order = np.lexsort((snake, band, hole, part) if per_part else (snake, band))
    length, part = length[ring_order], part[ring_order]
    start = np.cumsum(length) - length
    vertex = order[np.repeat(ring_start[ring_order] - start, length) + np.arange(n)]
    xy = np.stack([xs[vertex] + c0, ys[vertex] + r0], axis=1)
    return _Rings(xy, start, length, part)


def _corners(padded: np.ndarray, max_vertices: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(h + 2, w + 2) bool, background all round -> the boundary's corner instances: vertex row y and
    column x in the (h + 1, w + 1) grid of pixel corners, and each one's row in _TABLE. A corner is a
    vertex where a boundary edge along x meets one along y. None when there are more corners than
    max_vertices (every corner is a vertex), found before any per-corner array is made."""
    across = padded[:, 1:] != padded[:, :-1]  # (h + 2, w + 1): an edge along y between two columns
    down = padded[1:] != padded[:-1]  # (h + 1, w + 2): an edge along x between two rows
    corner = (across[1:] | across[:-1]) & (down[:, 1:] | down[:, :-1])
    if max_vertices is not None and np.count_nonzero(corner) > max_vertices:
        return None
    ys, xs = np.divmod(np.flatnonzero(corner), corner.shape[1])  # (np.nonzero is ~10x slower on 2-D)
    px = padded.view(np.uint8)
    code = px[ys, xs] | (px[ys, xs + 1] << 1) | (px[ys + 1, xs] << 2) | (px[ys + 1, xs + 1] << 3)
    row = 2 * code.astype(np.int64)
    two = np.flatnonzero(_N_INSTANCES[code] == 2)  # diagonal pixels: one corner instance for each
    if two.size:
        ys, xs, row = np.concatenate([ys, ys[two]]), np.concatenate([xs, xs[two]]), np.concatenate([row, row[two] + 1])
    if max_vertices is not None and ys.size > max_vertices:
        return None
    return ys, xs, row


def _pair(keys: np.ndarray) -> np.ndarray:
    """Corners along one grid line, sorted, pair up into the boundary's straight runs: (0, 1), (2, 3), ...
    (each corner ends one run on the line; a diagonal corner's two instances end one each, and the sort
    key puts the one whose run lies before it first). -> each corner's partner."""
    order = np.argsort(keys)
    partner = np.empty_like(order)
    partner[order] = order[np.arange(order.size) ^ 1]
    return partner


def _cycles(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A permutation's cycles by pointer jumping (log2(n) rounds of vectorized gathers): each element's
    root (the smallest index on its cycle) and its number of steps to the root's predecessor."""
    n = succ.size
    rounds = max(1, (n - 1).bit_length())  # 2**rounds >= n >= any cycle's length
    root, jump = np.arange(n), succ
    for _ in range(rounds):
        root, jump = np.minimum(root, root[jump]), jump[jump]
    last = succ == root  # cut each cycle before its root: a list, ranked from its end
    dist, jump = (~last).astype(np.int64), np.where(last, np.arange(n), succ)
    for _ in range(rounds):
        dist, jump = dist + dist[jump], jump[jump]
    return root, dist


def _join(rings: _Rings, limit_outline: bool) -> list[list[int]] | None:
    """Rings -> one flat polygon per part: the part's rings chained by bridges, each from the vertex of a
    ring nearest the next ring's start to that start, walked there and back (so they add no area under
    the even-odd rule). The walk: ring 0 up to its bridge vertex, ring 1 up to its, ..., the last ring
    all the way round, then back down the chain, finishing each ring. None when limit_outline and the
    outline is longer than polygons_to_mask accepts (MAX_RASTER_OUTLINE)."""
    r, length, start, xy = rings.length.size, rings.length, rings.start, rings.xy
    if r == 0:
        return []
    group, ring = rings.part, np.arange(r)
    first, last = np.ones(r, dtype=bool), np.ones(r, dtype=bool)
    first[1:] = last[:-1] = group[1:] != group[:-1]
    has_next = ~last
    bridge = np.zeros(r, dtype=np.int64)  # ring-local index of the vertex the bridge leaves from
    if has_next.any():
        ring_of = np.repeat(ring, length)
        target = xy[start[np.minimum(ring + 1, r - 1)]]  # the next ring's start
        gap = np.abs(xy - target[ring_of]).max(axis=1)  # Chebyshev: the length pycocotools walks
        bridge = np.where(has_next, np.lexsort((gap, ring_of))[start] - start, 0)
    # two pieces a ring: going out (start .. bridge vertex; a chain's last ring: all round and its start
    # again) and coming back (bridge vertex .. end, and its start again unless it is the chain's first)
    out_len = np.where(has_next, bridge + 1, length + (~first).astype(np.int64))
    back_len = np.where(has_next, length - bridge + (~first).astype(np.int64), 0)
    order = np.lexsort((np.concatenate([ring, -ring]), np.repeat([0, 1], r), np.concatenate([group, group])))
    piece_ring = np.concatenate([ring, ring])[order]
    piece_from = np.concatenate([np.zeros(r, dtype=np.int64), bridge])[order]
    piece_len = np.concatenate([out_len, back_len])[order]
    slot = np.repeat(np.arange(2 * r), piece_len)
    k = np.arange(int(piece_len.sum())) - np.repeat(np.cumsum(piece_len) - piece_len, piece_len)
    slot_ring = piece_ring[slot]
    path = xy[start[slot_ring] + (piece_from[slot] + k) % length[slot_ring]]
    sizes = np.bincount(group[piece_ring], weights=piece_len).astype(np.int64)
    if limit_outline and _outline(path, sizes) > MAX_RASTER_OUTLINE:
        return None
    flat, ends = path.ravel().tolist(), np.cumsum(2 * sizes).tolist()
    return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
