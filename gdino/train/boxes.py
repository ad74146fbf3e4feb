"""Box converters and generalized IoU for the losses. Boxes are normalised to the image, in [0, 1]."""

from __future__ import annotations

import torch


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre x, centre y, width, height -> (..., 4) x0, y0, x1, y1."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) x0, y0, x1, y1 -> (..., 4) centre x, centre y, width, height."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b: (..., 4) xyxy, broadcast against each other -> (...) GIoU in [-1, 1]. Degenerate pairs (both boxes
    of zero area) give NaN, as in DETR; the matcher maps NaN costs to the largest float."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    inter_wh = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area_a + area_b - inter
    hull_wh = (torch.max(a[..., 2:], b[..., 2:]) - torch.min(a[..., :2], b[..., :2])).clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / union - (hull - union) / hull


def pairwise_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: (N, 4), b: (M, 4) xyxy -> (N, M) GIoU of every pair."""
    return _giou(a[:, None, :], b[None, :, :])


def aligned_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b: (N, 4) xyxy -> (N,) GIoU of a[i] with b[i]."""
    return _giou(a, b)
