"""ui.mask_edits against brute-force definitions written out pixel by pixel."""

import math

import numpy as np
import pytest

from ui.mask_edits import bounding_box, inside_box, shift, stroke


def brute_stroke(h, w, points, radius):
    """Pixel centre within `radius` of any segment of the polyline (a point: of the point)."""
    out = np.zeros((h, w), bool)
    segments = list(zip(points, points[1:], strict=False)) if len(points) > 1 else [(points[0], points[0])]
    for y in range(h):
        for x in range(w):
            cx, cy = x + 0.5, y + 0.5
            for (ax, ay), (bx, by) in segments:
                vx, vy = bx - ax, by - ay
                n = vx * vx + vy * vy
                t = 0.0 if n == 0 else max(0.0, min(1.0, ((cx - ax) * vx + (cy - ay) * vy) / n))
                if math.hypot(cx - (ax + t * vx), cy - (ay + t * vy)) <= radius:
                    out[y, x] = True
                    break
    return out


@pytest.mark.parametrize("points, radius", [
    ([(10.0, 12.0)], 4.0),  # a dot
    ([(3.2, 4.7), (30.9, 20.1), (31.0, 2.5)], 2.5),  # a bent line
    ([(-5.0, 10.0), (45.0, 10.0)], 1.0),  # through both edges
    ([(20.0, 20.0), (20.0, 20.0), (25.5, 21.5)], 0.6),  # repeated points, thin
])
def test_stroke_paints_exactly_the_pixels_within_the_radius(points, radius):
    assert np.array_equal(stroke((30, 40), points, radius), brute_stroke(30, 40, points, radius))


def test_a_long_random_stroke_matches_too():
    rng = np.random.default_rng(0)
    points = np.cumsum(rng.normal(0, 2, (200, 2)), axis=0) + 30
    assert np.array_equal(stroke((60, 70), points.tolist(), 3.3), brute_stroke(60, 70, points.tolist(), 3.3))


def test_shift_moves_every_pixel_by_the_offset():
    rng = np.random.default_rng(1)
    mask = rng.random((20, 30)) > 0.6
    for dx, dy in [(3, -2), (-7, 5), (0, 0), (29, 0), (-30, 4)]:
        moved = shift(mask, dx, dy)
        expected = np.zeros_like(mask)
        for y, x in zip(*np.nonzero(mask), strict=True):
            if 0 <= x + dx < 30 and 0 <= y + dy < 20:
                expected[y + dy, x + dx] = True
        assert np.array_equal(moved, expected), (dx, dy)


def test_inside_box_uses_pixel_centres():
    inside = inside_box((10, 10), (2.5, 3.0, 5.5, 3.6))
    assert [tuple(p) for p in np.argwhere(inside)] == [(3, 2), (3, 3), (3, 4), (3, 5)]  # (y, x)


def test_bounding_box_is_in_pixel_edges():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    assert bounding_box(mask) == (3.0, 2.0, 9.0, 5.0)
    assert bounding_box(np.zeros((4, 4), bool)) is None
