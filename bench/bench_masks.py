"""Mask -> polygon tracing and the COCO export of SAM-like masks: the previous pure-Python edge walk vs
the vectorized tracer in gdino.masks, and the whole `coco_records` cost (RLE decode, tracing, the
exactness check that rasterizes the polygons back, rounding).

    python bench/bench_masks.py [--images 50] [--objects 20] [--size 1200x800] [--old-sample 20]

The masks imitate SAM's: a 256-pixel-wide logit field (ellipses unioned, smaller ellipses cut out, a
smooth noise on top), upsampled bilinearly to the image and thresholded at 0, as SAM does. Seeded.
Goal: 1,000 such masks (50 images x 20 objects, 1200x800) exported to COCO in under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import cv2
import numpy as np

from gdino.formats.coco import coco_records
from gdino.formats.dataset import Dataset, LabeledImage, LabeledObject
from gdino.masks import MAX_POLYGON_VERTICES, mask_to_polygon, mask_to_polygons, mask_to_rle, polygons_to_mask, rle_to_mask


def sam_like_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) bool: one object, smooth at SAM's logit resolution, often with holes, islands, and parts
    cut by the image border."""
    lh, lw = max(8, round(256 * h / max(h, w))), max(8, round(256 * w / max(h, w)))
    yy, xx = np.mgrid[:lh, :lw].astype(np.float32)
    cy, cx = rng.uniform(0.1, 0.9) * lh, rng.uniform(0.1, 0.9) * lw
    size = rng.uniform(0.05, 0.35) * min(lh, lw)
    logit = np.full((lh, lw), -np.inf, np.float32)
    for _ in range(int(rng.integers(1, 5))):  # the object: a union of ellipses around (cy, cx)
        ey, ex = cy + rng.normal(0, size / 2), cx + rng.normal(0, size / 2)
        ry, rx = rng.uniform(0.4, 1.2, 2) * size
        logit = np.maximum(logit, 1 - ((yy - ey) / ry) ** 2 - ((xx - ex) / rx) ** 2)
    for _ in range(int(rng.integers(0, 4))):  # holes
        ey, ex = cy + rng.normal(0, size / 2), cx + rng.normal(0, size / 2)
        ry, rx = rng.uniform(0.05, 0.3, 2) * size
        logit = np.minimum(logit, ((yy - ey) / ry) ** 2 + ((xx - ex) / rx) ** 2 - 1)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (lh, lw)).astype(np.float32), (0, 0), rng.uniform(1, 3))
    logit += noise * rng.uniform(0.1, 0.4) / max(float(noise.std()), 1e-6)  # ragged edges, specks near them
    return cv2.resize(logit, (w, h), interpolation=cv2.INTER_LINEAR) > 0


# ---------------------------------------------------------------------------------------------------
# The previous implementation of gdino.masks.mask_to_polygons (pure-Python edge walk, one pixel edge at
# a time; per-hole point-in-polygon), kept here only to compare against. Not used by the package.

def previous_mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    outers, holes = _previous_rings_by_part(mask.astype(bool))
    return [_previous_bridge([o, *hs]).reshape(-1).tolist() for o, hs in zip(outers, holes, strict=True)]


def _previous_bridge(rings):
    anchor = rings[0][0]
    path = [rings[0], anchor[None]]
    for ring in rings[1:]:
        k = int(np.argmin(((ring - anchor) ** 2).sum(1)))
        ring = np.roll(ring, -k, axis=0)
        path += [ring, ring[:1], anchor[None]]
    return np.concatenate(path)


def _previous_rings_by_part(mask):
    rings = _previous_trace_rings(mask)
    areas = [_previous_signed_area(r) for r in rings]
    outers = [r for r, a in zip(rings, areas, strict=True) if a < 0]
    outer_areas = [-a for a in areas if a < 0]
    holes = [[] for _ in outers]
    for ring, area in zip(rings, areas, strict=True):
        if area <= 0:
            continue
        (x0, y0), (x1, y1) = ring[0], ring[1]
        dx, dy = np.sign(x1 - x0), np.sign(y1 - y0)
        probe = (x0 + 0.5 * dx - 0.5 * dy, y0 + 0.5 * dy + 0.5 * dx)
        owners = [i for i, outer in enumerate(outers) if _previous_contains(outer, probe)]
        if owners:
            holes[min(owners, key=lambda i: outer_areas[i])].append(ring)
    return outers, holes


def _previous_trace_rings(mask):
    m = np.pad(mask, 1)
    fg = m[1:-1, 1:-1]
    edges = []
    for sel, start, end in (
        (fg & ~m[:-2, 1:-1], (1, 0), (0, 0)),  # top edges: right to left
        (fg & ~m[2:, 1:-1], (0, 1), (1, 1)),  # bottom edges: left to right
        (fg & ~m[1:-1, :-2], (0, 0), (0, 1)),  # left edges: down
        (fg & ~m[1:-1, 2:], (1, 1), (1, 0)),  # right edges: up
    ):
        rows, cols = np.nonzero(sel)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            edges.append(((c + start[0], r + start[1]), (c + end[0], r + end[1])))
    outgoing = defaultdict(list)
    for s, e in edges:
        outgoing[s].append(e)
    rings = []
    while outgoing:
        start = next((v for v, out in outgoing.items() if len(out) == 1), next(iter(outgoing)))
        ring, prev, cur = [start], None, start
        while True:
            nexts = outgoing[cur]
            if len(nexts) > 1:
                dx, dy = cur[0] - prev[0], cur[1] - prev[1]
                nxt = min(nexts, key=lambda c, dx=dx, dy=dy, cur=cur: dx * (c[1] - cur[1]) - dy * (c[0] - cur[0]))
            else:
                nxt = nexts[0]
            nexts.remove(nxt)
            if not nexts:
                del outgoing[cur]
            prev, cur = cur, nxt
            if cur == start:
                break
            ring.append(cur)
        ring = np.array(ring, dtype=np.float64)
        prv, nx = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
        cross = (ring[:, 0] - prv[:, 0]) * (nx[:, 1] - ring[:, 1]) - (ring[:, 1] - prv[:, 1]) * (nx[:, 0] - ring[:, 0])
        rings.append(ring[cross != 0])
    return rings


def _previous_signed_area(ring):
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _previous_contains(ring, point):
    x, y = point
    xs, ys = ring[:, 0], ring[:, 1]
    xn, yn = np.roll(xs, -1), np.roll(ys, -1)
    crosses = (ys > y) != (yn > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = xs + (y - ys) * (xn - xs) / (yn - ys)
    return bool(np.count_nonzero(crosses & (at > x)) % 2)

# ---------------------------------------------------------------------------------------------------


def per_mask(fn, masks) -> float:
    """Seconds per mask of fn(mask) over `masks`."""
    t = time.perf_counter()
    for m in masks:
        fn(m)
    return (time.perf_counter() - t) / max(len(masks), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--objects", type=int, default=20, help="masks per image")
    parser.add_argument("--size", default="1200x800", help="image WxH")
    parser.add_argument("--old-sample", type=int, default=20, help="masks timed with the previous implementation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(args.seed)

    t = time.perf_counter()
    images, rles = [], []
    for i in range(args.images):
        objects = []
        for j in range(args.objects):
            m = sam_like_mask(rng, h, w)
            if not m.any():
                m[h // 2, w // 2] = True
            ys, xs = np.nonzero(m)
            rle = mask_to_rle(m)
            rles.append(rle)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            objects.append(LabeledObject(class_id=j % 3, box=box, mask=rle, id=i * args.objects + j + 1))
        images.append(LabeledImage(file_name=f"img{i:04d}.png", path=None, width=w, height=h, objects=tuple(objects),
                                   id=i + 1))
    dataset = Dataset(classes=("a", "b", "c"), images=tuple(images))
    n = len(rles)
    print(f"generated {n} SAM-like {w}x{h} masks in {time.perf_counter() - t:.1f} s")

    masks = [rle_to_mask(r) for r in rles]
    polys = [mask_to_polygons(m) for m in masks]
    vertices = np.array([sum(len(p) for p in ps) // 2 for ps in polys])
    parts = np.array([len(ps) for ps in polys])
    exact = sum(np.array_equal(polygons_to_mask(ps, h, w), m) for ps, m in zip(polys, masks, strict=True))
    capped = sum(mask_to_polygons(m, max_vertices=MAX_POLYGON_VERTICES) is None for m in masks)
    print(f"vertices per mask: median {np.median(vertices):.0f}, max {vertices.max()}; parts per mask: mean "
          f"{parts.mean():.1f}; exact round trips {exact}/{n}; over MAX_POLYGON_VERTICES={MAX_POLYGON_VERTICES}: {capped}")

    sample = masks[: args.old_sample]
    for m in sample:  # both implementations give the same pixels
        old = previous_mask_to_polygons(m)
        assert np.array_equal(polygons_to_mask(old, h, w), polygons_to_mask(mask_to_polygons(m), h, w))
    old_s = per_mask(previous_mask_to_polygons, sample)
    new_sample_s = per_mask(mask_to_polygons, sample)
    new_s = per_mask(mask_to_polygons, masks)
    single_s = per_mask(mask_to_polygon, masks)
    t = time.perf_counter()
    for ps in polys:
        polygons_to_mask(ps, h, w)
    raster_s = (time.perf_counter() - t) / n
    decode_s = per_mask(rle_to_mask, rles)

    t = time.perf_counter()
    records = coco_records(dataset, list(dataset.images), segmentation="polygon")
    coco_polygon_s = time.perf_counter() - t
    as_polygons = sum(isinstance(a["segmentation"], list) for a in records["annotations"])
    t = time.perf_counter()
    coco_records(dataset, list(dataset.images), segmentation="rle")
    coco_rle_s = time.perf_counter() - t
    t = time.perf_counter()  # what an exporter needs at least: decode, trace under the cap, RLE when over it
    for r in rles:
        m = rle_to_mask(r)
        if mask_to_polygons(m, max_vertices=MAX_POLYGON_VERTICES) is None:
            mask_to_rle(m)
    minimal_s = time.perf_counter() - t

    rows = [
        (f"previous mask_to_polygons (first {len(sample)} masks)", old_s, old_s * n),
        (f"new mask_to_polygons (same {len(sample)} masks)", new_sample_s, new_sample_s * n),
        (f"new mask_to_polygons (all {n})", new_s, new_s * n),
        (f"new mask_to_polygon, one polygon (all {n})", single_s, single_s * n),
        ("polygons_to_mask, the exactness check", raster_s, raster_s * n),
        ("rle_to_mask", decode_s, decode_s * n),
        (f"coco_records, polygon ({as_polygons}/{n} as polygons)", coco_polygon_s / n, coco_polygon_s),
        ("coco_records, rle", coco_rle_s / n, coco_rle_s),
        ("decode + capped mask_to_polygons (+ RLE over the cap)", minimal_s / n, minimal_s),
    ]
    print(f"\n{'step':<56} {'ms/mask':>9} {f's/{n} masks':>13}")
    for name, each, total in rows:
        print(f"{name:<56} {each * 1e3:>9.2f} {total:>13.2f}")
    print(f"\ntracing speed-up on the sample: {old_s / new_sample_s:.0f}x; COCO export of {n} masks: "
          f"{coco_polygon_s:.2f} s (goal < 10 s)")


if __name__ == "__main__":
    main()
