"""Per-query comparison of two Grounding DINO outputs."""

import torch


def per_query_error(ref_logits, ref_boxes, logits, boxes) -> torch.Tensor:
    """(B, Q) worst absolute difference per query over its finite logits and its box.
    The -inf pattern (text padding) must be identical; a mismatch there counts as an infinite error."""
    finite = torch.isfinite(ref_logits)
    same_pattern = (finite == torch.isfinite(logits)).all(-1)
    dl = (ref_logits - logits).abs().masked_fill(~finite, 0).amax(-1)
    db = (ref_boxes - boxes).abs().amax(-1)
    err = torch.maximum(dl, db)
    return err.masked_fill(~same_pattern, float("inf"))


def fraction_within(err: torch.Tensor, tol: float) -> float:
    return (err <= tol).float().mean().item()
