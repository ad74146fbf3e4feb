"""What the SAM parity tests share (tests/model/test_sam2_parity.py, test_sam3_parity.py): mask IoU, the check of
one mask and its low-res logits against an oracle's, and a record of what a backend's decoder returned."""

from __future__ import annotations

import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def check_mask(ours_mask, ours_logits, ref_mask, ref_logits, what: str, *, trivial: float = 0.01,
               seen: dict[str, list[float]] | None = None) -> None:
    """Mask IoU >= 0.999, low-res logits within 1e-3 (both clamped to the +-32 the official predictors hand back).
    The reference mask must cover more than `trivial` of the image and less than 1 - trivial (else the check says
    little). seen: lists "iou" and "logit diff" the numbers are appended to (a file's report)."""
    ref_mask, ours_mask = np.asarray(ref_mask, bool), np.asarray(ours_mask, bool)
    assert trivial < ref_mask.mean() < 1 - trivial, \
        f"{what}: the reference mask is trivial ({ref_mask.mean():.3f} of the image)"
    iou = mask_iou(ours_mask, ref_mask)
    diff = float(np.abs(np.clip(np.asarray(ours_logits, np.float64), -32, 32)
                        - np.clip(np.asarray(ref_logits, np.float64), -32, 32)).max())
    if seen is not None:
        seen["iou"].append(iou)
        seen["logit diff"].append(diff)
    assert iou >= 0.999 and diff <= 1e-3, f"{what}: mask IoU {iou:.5f}, max low-res logit difference {diff:.2e}"


def record_decodes(seg, monkeypatch) -> list:
    """What the backend's decoder returns during the Segmenter's calls (the low-res logits segment() keeps)."""
    calls = []
    original = seg.backend.decode

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(seg.backend, "decode", spy)
    return calls
