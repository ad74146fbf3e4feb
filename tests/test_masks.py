"""Mask geometry: exact polygon and RLE round trips with holes and several parts, COCO areas."""

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from gdino.masks import mask_area, mask_to_polygon, mask_to_polygons, mask_to_rle, polygons_to_mask, rle_to_mask


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
