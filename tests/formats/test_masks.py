"""Mask geometry: exact polygon and RLE round trips with holes and several parts, COCO areas."""

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from gdino.masks import (
    MAX_MASK_PIXELS,
    MAX_POLYGON_VERTICES,
    mask_area,
    mask_to_polygon,
    mask_to_polygons,
    mask_to_rle,
    polygons_to_mask,
    rle_to_mask,
)


def iou(a, b):
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


def ring_with_hole_and_island():
    """A donut with an island in its hole, a separate square, and a diagonal pixel pair."""
    yy, xx = np.mgrid[:120, :160]
    r2 = (yy - 60) ** 2 + (xx - 60) ** 2
    m = (r2 < 50**2) & ~(r2 < 25**2)
    m |= r2 < 8**2  # island inside the hole
    m[10:30, 120:150] = True  # second part
    m[100, 140] = m[101, 141] = True  # two pixels touching only at a corner
    return m


SHAPES = {
    "donut+island+parts": ring_with_hole_and_island(),
    "single pixel": np.pad(np.ones((1, 1), bool), 5),
    "full image": np.ones((20, 30), bool),
    "checkerboard": (np.indices((16, 16)).sum(0) % 2).astype(bool),
    "empty": np.zeros((10, 10), bool),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_polygons_round_trip_exactly(name):
    m = SHAPES[name]
    h, w = m.shape
    parts = mask_to_polygons(m)
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in parts)
    assert np.array_equal(polygons_to_mask(parts, h, w), m)  # exact, so IoU 1.0 >= 0.98
    single = mask_to_polygon(m)
    assert np.array_equal(polygons_to_mask([single] if single else [], h, w), m)


def test_every_part_and_hole_is_kept():
    m = SHAPES["donut+island+parts"]
    parts = mask_to_polygons(m)
    # donut (with its hole), island, square, and the two corner-touching pixels as separate parts
    assert len(parts) == 5
    n_components = cv2.connectedComponents(m.astype(np.uint8), connectivity=4)[0] - 1
    assert len(parts) == n_components
    donut = max(parts, key=len)
    assert not polygons_to_mask([donut], *m.shape)[60, 60 + 15]  # the hole stays a hole


def test_random_masks_round_trip():
    rng = np.random.default_rng(0)
    for t in range(100):
        m = rng.random((30, 40)) < rng.uniform(0.05, 0.9)
        if t % 2:
            m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
        assert iou(polygons_to_mask(mask_to_polygons(m), 30, 40), m) == 1.0
        assert iou(polygons_to_mask([mask_to_polygon(m)] if m.any() else [], 30, 40), m) == 1.0


@pytest.mark.parametrize("name", list(SHAPES))
def test_rle_round_trip_and_area(name):
    m = SHAPES[name]
    rle = mask_to_rle(m)
    assert rle["size"] == list(m.shape) and isinstance(rle["counts"], str)
    json.dumps(rle)  # JSON-ready
    assert np.array_equal(rle_to_mask(rle), m)
    assert mask_area(m) == int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()})) == m.sum()


def test_uncompressed_rle_is_read():
    m = SHAPES["donut+island+parts"]
    flat = m.flatten(order="F")
    counts, value, run = [], False, 0
    for px in flat:
        if px != value:
            counts.append(run)
            value, run = px, 0
        run += 1
    counts.append(run)
    assert np.array_equal(rle_to_mask({"size": list(m.shape), "counts": counts}), m)


def test_polygon_areas_match_pycocotools():
    m = SHAPES["donut+island+parts"]
    rles = coco_mask.frPyObjects(mask_to_polygons(m), *m.shape)
    assert int(coco_mask.area(coco_mask.merge(rles))) == mask_area(m)


def test_bad_masks():
    with pytest.raises(ValueError, match=r"a mask is \(H, W\)"):
        mask_to_polygons(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="'size'"):
        rle_to_mask({"counts": "abc"})


# ------------------------------------------------------------------------ randomized exactness

def random_masks(seed: int, count: int):
    """Small masks of every kind the tracer must get right: noise (diagonal pixels everywhere), opened
    noise, blurred-noise blobs with holes and islands, ellipses minus ellipses, lines, masks touching the
    border, single pixels, empty and full masks, 1-pixel-wide images."""
    rng = np.random.default_rng(seed)
    for t in range(count):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        kind = t % 9
        if kind == 0:
            m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        elif kind == 1:
            m = rng.random((h, w)) < rng.uniform(0.3, 0.8)
            m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)).astype(bool)
        elif kind == 2:
            noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), rng.uniform(0.7, 4))
            m = noise > np.quantile(noise, rng.uniform(0.2, 0.8))
        elif kind == 3:
            yy, xx = np.mgrid[:h, :w]
            m = np.zeros((h, w), bool)
            for _ in range(int(rng.integers(1, 5))):
                cy, cx, ry, rx = rng.uniform(-0.2, 1.2, 4) * [h, w, h / 2, w / 2]
                inside = ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 < 1
                m = m & ~inside if rng.random() < 0.4 else m | inside
        elif kind == 4:  # diagonal chains and isolated pixels
            m = np.zeros((h, w), bool)
            for _ in range(int(rng.integers(1, 6))):
                y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
                for _ in range(int(rng.integers(1, 10))):
                    m[y % h, x % w] = True
                    y, x = y + int(rng.choice([-1, 1])), x + int(rng.choice([-1, 1]))
        elif kind == 5:  # a frame around the border with a hole, an island and noise inside
            m = np.ones((h, w), bool)
            m[1:-1, 1:-1] = rng.random((max(h - 2, 0), max(w - 2, 0))) < 0.15
        elif kind == 6:
            m = np.zeros((h, w), bool)
            m[int(rng.integers(0, h)), int(rng.integers(0, w))] = True
        elif kind == 7:  # nested rings: holes with islands with holes ..., a few pixels flipped
            yy, xx = np.mgrid[:h, :w]
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            m = (np.maximum(np.abs(yy - cy), np.abs(xx - cx)) // rng.integers(1, 4)).astype(int) % 2 == 0
            m ^= rng.random((h, w)) < 0.03
            m = np.full((h, w), rng.random() < 0.5)
        yield m


def test_randomized_round_trip_is_exact():
    for m in random_masks(seed=1, count=1200):
        h, w = m.shape
        parts = mask_to_polygons(m)
        assert np.array_equal(polygons_to_mask(parts, h, w), m)
        n_labels, labels = cv2.connectedComponents(m.astype(np.uint8), connectivity=4)
        assert len(parts) == n_labels - 1
        for p in parts:  # each polygon is exactly one 4-connected part, with its own holes
            part = polygons_to_mask([p], h, w)
            assert np.array_equal(part, labels == labels[part][0])
            assert len(p) >= 6 and len(p) % 2 == 0
            assert all(type(v) is int for v in p)  # pixel corners
            xs, ys = np.array(p[0::2]), np.array(p[1::2])
            assert xs.min() >= 0 and xs.max() <= w and ys.min() >= 0 and ys.max() <= h
        single = mask_to_polygon(m)
        assert np.array_equal(polygons_to_mask([single] if single else [], h, w), m)
        assert (single == []) == (parts == []) == (not m.any())


def test_large_blob_round_trip_is_exact():
    rng = np.random.default_rng(2)
    noise = cv2.GaussianBlur(rng.random((800, 1200)).astype(np.float32), (0, 0), 6)
    m = noise > 0.5
    parts = mask_to_polygons(m)
    assert np.array_equal(polygons_to_mask(parts, 800, 1200), m)
    assert np.array_equal(polygons_to_mask([mask_to_polygon(m)], 800, 1200), m)


# ------------------------------------------------------------------------------- vertex cap

def n_vertices(polygons):
    return sum(len(p) for p in polygons) // 2


@pytest.mark.parametrize("name", [n for n in SHAPES if n != "empty"])
def test_vertex_cap(name):
    m = SHAPES[name]
    parts = mask_to_polygons(m)
    n = n_vertices(parts)
    assert mask_to_polygons(m, max_vertices=n) == parts
    assert mask_to_polygons(m, max_vertices=n - 1) is None
    single = mask_to_polygon(m)
    assert mask_to_polygon(m, max_vertices=len(single) // 2) == single
    assert mask_to_polygon(m, max_vertices=len(single) // 2 - 1) is None


def test_vertex_cap_default():
    assert MAX_POLYGON_VERTICES == 10_000
    assert mask_to_polygons(np.zeros((5, 5), bool), max_vertices=0) == []
    assert mask_to_polygon(np.zeros((5, 5), bool), max_vertices=0) == []
    noise = np.random.default_rng(0).random((400, 600)) < 0.5  # ~10^5 corners: store as RLE
    assert mask_to_polygons(noise, max_vertices=MAX_POLYGON_VERTICES) is None
    assert mask_to_polygon(noise, max_vertices=MAX_POLYGON_VERTICES) is None
    blob = SHAPES["donut+island+parts"]
    assert mask_to_polygons(blob, max_vertices=MAX_POLYGON_VERTICES) == mask_to_polygons(blob)


def test_pixel_limit_matches_the_image_limit():
    from gdino.processing import MAX_PIXELS

    assert MAX_MASK_PIXELS == MAX_PIXELS


# ----------------------------------------------------------------------------- hostile input

SQUARE = [1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]


@pytest.mark.parametrize(("polygons", "message"), [
    ([[1.0, 1.0, float("nan"), 1.0, 5.0, 5.0]], "finite"),
    ([[1.0, 1.0, float("inf"), 1.0, 5.0, 5.0]], "finite"),
    ([[1.0, 1.0, 5.0, float("-inf"), 5.0, 5.0]], "finite"),
    ([[0, 0, 1e9, 0, 1e9, 1e9]], "outside"),
    ([[0, 0, 1e11, 0, 1e11, 1e11]], "outside"),
    ([[0, 0, -1e11, 0, 5, 5]], "outside"),
    ([SQUARE, [0, 0, 10, 0, 10, 1e9]], "polygon 1"),
    ([[1.0, 1.0, 5.0, 1.0, 5.0]], "odd"),
    ([[1.0, 1.0, 5.0, 1.0]], "at least 3 points"),
    ([[]], "at least 3 points"),
    ([["a", 1, 2, 3, 4, 5]], "numbers"),
    ([[[1, 2], [3, 4], [5, 6]]], "flat"),
    ("1 2 3 4 5 6", "list"),
    ([[0.0, 0.0] * 110_000], "vertices"),
    ([[0.0, 0.0, 100.0, 100.0] * 30_000], "outline"),
])
def test_hostile_polygons_are_refused(polygons, message):
    with pytest.raises(ValueError, match=message):
        polygons_to_mask(polygons, 100, 100)


@pytest.mark.parametrize(("height", "width"), [(0, 10), (10, -1), (10.0, 10), ("10", 10), (True, 10), (None, 10),
                                                (10_000, 10_000)])
def test_bad_raster_sizes_are_refused(height, width):
    with pytest.raises(ValueError, match="height|width|pixels"):
        polygons_to_mask([SQUARE], height, width)


def test_polygons_just_outside_the_image_are_clipped():
    inside = polygons_to_mask([SQUARE], 10, 10)
    around = polygons_to_mask([[-5.5, -5.5, 15.5, -5.5, 15.5, 15.5, -5.5, 15.5]], 10, 10)
    assert inside.sum() == 16 and around.all()
    assert not polygons_to_mask([[-20.0, -20.0, -10.0, -20.0, -10.0, -10.0]], 10, 10).any()


HOSTILE_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("masks", sys.argv[1])  # not via gdino/__init__: no torch
masks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(masks)
polygons_to_mask, rle_to_mask = masks.polygons_to_mask, masks.rle_to_mask
cases = [
    lambda: polygons_to_mask([[0, 0, 1e9, 0, 1e9, 1e9]], 10, 10),
    lambda: polygons_to_mask([[0, 0, 1e11, 0, 1e11, 1e11]], 10, 10),
    lambda: polygons_to_mask([[0, 0, float("nan"), 0, 5, 5]], 10, 10),
    lambda: rle_to_mask({"size": [10, 10], "counts": "1"}),
    lambda: rle_to_mask({"size": [10, 10], "counts": [5, 1000]}),
]
for case in cases:
    try:
        case()
    except ValueError:
        continue
    sys.exit("accepted")
"""


def test_hostile_input_does_not_crash_the_process():
    """pycocotools segfaults on coordinates like 1e9 (and reads uninitialized memory on short RLE counts):
    run them in a child process, so that a regression fails this test instead of killing the run."""
    import subprocess
    import sys

    import gdino.masks

    done = subprocess.run([sys.executable, "-c", HOSTILE_SCRIPT, gdino.masks.__file__], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])


@pytest.mark.parametrize(("rle", "message"), [
    ({"size": [0, 10], "counts": ""}, "size"),
    ({"size": [10, -10], "counts": ""}, "size"),
    ({"size": [10], "counts": ""}, "size"),
    ({"size": [10.5, 10], "counts": ""}, "size"),
    ({"size": ["10", 10], "counts": ""}, "size"),
    ({"size": [100_000, 100_000], "counts": ""}, "pixels"),
    ({"size": [10, 10], "counts": "1"}, "counts"),  # 1 pixel of 100: pycocotools returns uninitialized memory
    ({"size": [10, 10], "counts": "zzzz"}, "counts"),
    ({"size": [10, 10], "counts": "1\x00"}, "counts"),
    ({"size": [10, 10], "counts": "\u00e9\u00e9"}, "counts"),
    ({"size": [10, 10], "counts": 12}, "counts"),
    ({"size": [10, 10], "counts": [5, 1000]}, "counts"),
    ({"size": [10, 10], "counts": [50, -3, 53]}, "counts"),
    ({"size": [10, 10], "counts": [50, 50.5]}, "counts"),
    ({"size": [10, 10], "counts": ["50", "50"]}, "counts"),
    ({"size": [10, 10], "counts": [2**70, 1]}, "counts"),
    ("not a dict", "'size'"),
])
def test_hostile_rles_are_refused(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_to_mask(rle)


def test_rle_counts_are_checked_not_guessed():
    m = SHAPES["donut+island+parts"]
    rle = mask_to_rle(m)
    assert np.array_equal(rle_to_mask({"size": rle["size"], "counts": rle["counts"].encode()}), m)  # bytes too
    assert np.array_equal(rle_to_mask({"size": (np.int64(120), np.int64(160)), "counts": rle["counts"]}), m)
    with pytest.raises(ValueError, match="counts"):
        rle_to_mask({"size": rle["size"], "counts": rle["counts"][:-1]})
    with pytest.raises(ValueError, match="counts"):
        rle_to_mask({"size": [120, 161], "counts": rle["counts"]})
    assert not rle_to_mask({"size": [3, 4], "counts": [12]}).any()
    assert rle_to_mask({"size": [3, 4], "counts": [0, 12]}).all()
