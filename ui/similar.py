"""Find similar: what the exemplars' search adds to an image, and what it leaves out (pure: no model, no store).

The rule (stated in the README): a found object is added unless its box overlaps a box already on the image,
the exemplars included, at IoU >= SIMILAR_IOU (0.5, the duplicate rule of Grounding DINO's NMS). Found
objects come in score order; each one kept also blocks the later ones it overlaps as much, so one search never
adds two boxes for one thing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIMILAR_IOU = 0.5


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of (N, 4) boxes."""
    if len(others) == 0:
        return np.zeros(0)
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def new_ones(found: np.ndarray, scores: np.ndarray, existing: Sequence[Sequence[float]],
             iou: float = SIMILAR_IOU) -> list[int]:
    """Indices of `found` (K, 4) xyxy to add, best score first: those overlapping no existing box (nor a found
    box kept before them) at IoU >= iou."""
    kept_boxes = [np.asarray(b, dtype=np.float64) for b in existing]
    keep = []
    for k in np.argsort(-np.asarray(scores), kind="stable"):
        box = np.asarray(found[k], dtype=np.float64)
        if kept_boxes and (_iou(box, np.stack(kept_boxes)) >= iou).any():
            continue
        keep.append(int(k))
        kept_boxes.append(box)
    return keep
