"""Language-guided query selection: every encoder position proposes a box; the ones whose features
best match any text token become the decoder's initial reference boxes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .heads import contrastive_logits


def encoder_proposals(
    valid: torch.Tensor, spatial_shapes: list[tuple[int, int]], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    valid: (B, S) bool, False on padding.
    returns: proposals (B, S, 4) cxcywh in logit space (+inf where unusable) and usable (B, S, 1) bool.
    A proposal is a box of side 0.05 * 2**level centred on its pixel, in units of the valid image;
    it is usable only on a valid pixel with every coordinate in (0.01, 0.99).
    """
    batch = valid.shape[0]
    proposals, start = [], 0
    for level, (h, w) in enumerate(spatial_shapes):
        level_valid = valid[:, start:start + h * w].view(batch, h, w)
        start += h * w
        valid_h = level_valid[:, :, 0].sum(1)
        valid_w = level_valid[:, 0, :].sum(1)
        ys, xs = torch.meshgrid(
            torch.linspace(0, h - 1, h, dtype=dtype, device=valid.device),
            torch.linspace(0, w - 1, w, dtype=dtype, device=valid.device),
            indexing="ij",
        )
        grid = torch.stack((xs, ys), -1)  # (h, w, 2)
        scale = torch.stack((valid_w, valid_h), -1).view(batch, 1, 1, 2)
        centre = (grid[None] + 0.5) / scale
        size = torch.full_like(centre, 0.05 * 2.0**level)
        proposals.append(torch.cat((centre, size), -1).view(batch, -1, 4))
    boxes = torch.cat(proposals, 1)
    usable = ((boxes > 0.01) & (boxes < 0.99)).all(-1, keepdim=True) & valid[..., None]
    logits = torch.log(boxes / (1 - boxes)).masked_fill(~usable, float("inf"))
    return logits, usable


def top_positions(
    scored_memory: torch.Tensor,
    text: torch.Tensor,
    text_valid: torch.Tensor,
    num_queries: int,
    class_head: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """
    scored_memory: (B, S, D) encoder output after enc_output + norm; text: (B, N, D); text_valid: (B, N).
    returns: (B, Q) int64 indices of the `num_queries` positions with the best token score, best first.
    class_head: the encoder's own class head (MM-Grounding-DINO), (B, S, D), (B, N, D), (B, N) -> (B, S, T);
    None: the plain dot product. A scale and a bias keep the ranking, up to the rounding of near ties.
    """
    if class_head is None:
        logits = contrastive_logits(scored_memory, text, text_valid, text.shape[1])
    else:
        logits = class_head(scored_memory, text, text_valid)
    scores = logits.max(-1).values
    return torch.topk(scores, num_queries, dim=1).indices


def select_queries(
    scored_memory: torch.Tensor,
    box_logits: torch.Tensor,
    text: torch.Tensor,
    text_valid: torch.Tensor,
    num_queries: int,
    class_head: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """
    scored_memory: (B, S, D) encoder output after enc_output + norm; box_logits: (B, S, 4) proposals
    refined by the encoder box head, logit space. returns the top `num_queries` boxes (B, Q, 4),
    cxcywh in [0, 1], ranked by their best token score (see `top_positions`), detached.
    """
    top = top_positions(scored_memory, text, text_valid, num_queries, class_head)
    return torch.gather(box_logits, 1, top[..., None].expand(-1, -1, 4)).detach().sigmoid()
