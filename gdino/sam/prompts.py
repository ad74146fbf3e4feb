"""Checks of a SAM prompt as a person or a script gives it: boxes, points, point labels. Pure numpy; every
refusal is a SegmenterError (a ValueError) that says what was wrong and what to give instead."""

from __future__ import annotations

import numpy as np


class SegmenterError(ValueError):
    """A SAM checkpoint or a prompt could not be used."""


def rows(value, width: int, name: str, example: str, one: bool = False) -> np.ndarray:
    """A list or array of N rows of `width` finite numbers -> (N, width) float64 ((0, width) for []).
    one: exactly one row, given flat ([x0, y0, x1, y1]) or as (1, width). Anything else: a SegmenterError."""
    what = f"{name} must be {example} in pixels" if one else \
        f"{name} must be an (N, {width}) array or list of {example} in pixels ([] for none)"
    if value is None or isinstance(value, (str, bytes)):
        raise SegmenterError(f"{what}, got {value!r}")
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:  # ragged lists, words, objects
        raise SegmenterError(f"{what} ({err})") from err
    if one:
        if out.shape not in ((width,), (1, width)):
            raise SegmenterError(f"{what}, got shape {out.shape}")
        out = out.reshape(1, width)
    elif out.size == 0:
        return np.zeros((0, width))
    elif out.ndim != 2 or out.shape[1] != width:
        hint = f"; a single one needs its own brackets: [{example}]" if out.shape == (width,) else ""
        raise SegmenterError(f"{what}, got shape {out.shape}{hint}")
    if not np.isfinite(out).all():
        raise SegmenterError(f"{name} must be finite numbers {example} in pixels, got NaN or infinity")
    return out


def point_labels(labels, count: int) -> np.ndarray:
    """Point labels -> (count,) int64 of 0 / 1; None, other shapes and other values: a SegmenterError."""
    what = "labels must be a list of 1 (part of the object) or 0 (not part of it), one per point ([] for none)"
    if labels is None or isinstance(labels, (str, bytes)):
        raise SegmenterError(f"{what}, got {labels!r}")
    try:
        lab = np.asarray(labels)  # no dtype: "1" stays a word and is refused below
    except ValueError as err:
        raise SegmenterError(f"{what} ({err})") from err
    if lab.size == 0:
        lab = np.zeros(0, dtype=np.int64)
    elif lab.ndim != 1:
        raise SegmenterError(f"{what}, got shape {lab.shape}")
    if len(lab) != count:
        raise SegmenterError(f"{count} points but {len(lab)} labels: give one label (1 keep, 0 remove) per point")
    if lab.dtype.kind not in "biuf" or not np.isin(lab, (0, 1)).all():
        raise SegmenterError(f"point labels must be 1 (part of the object) or 0 (not part of it), got {lab.tolist()}")
    return lab.astype(np.int64)
