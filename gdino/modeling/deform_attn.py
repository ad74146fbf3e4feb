"""Multi-scale deformable attention layer (Deformable DETR): learned offsets around reference points."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import ms_deform_attn


class MSDeformAttn(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        value_valid: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """
        query:            (B, Q, D), position embedding already added.
        reference_points: (B, Q, L, 2) points (x, y) or (B, Q, L, 4) boxes (cx, cy, w, h), normalized to
                          [0, 1] over each level's padded map (valid ratios applied); float32 in any model
                          dtype, so the sampling locations are float32 too.
        value:            (B, S, D) flattened multi-level features.
        value_valid:      (B, S) bool, False on padding (those values are zeroed).
        returns:          (B, Q, D)
        """
        b, q, _ = query.shape
        h, lv, p = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).masked_fill(~value_valid[..., None], 0.0)
        v = v.view(b, v.shape[1], h, -1)
        offsets = self.sampling_offsets(query).view(b, q, h, lv, p, 2)
        weights = self.attention_weights(query).view(b, q, h, lv * p).softmax(-1).view(b, q, h, lv, p)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalize by (w, h)
            wh = torch.tensor([(w, hh) for hh, w in spatial_shapes], dtype=torch.float32, device=query.device)
            locations = reference_points[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]
        else:
            # offsets are relative to the box size: half the box is reached at num_points
            centre = reference_points[:, :, None, :, None, :2]
            size = reference_points[:, :, None, :, None, 2:]
            locations = centre + offsets / p * size * 0.5
        return self.output_proj(ms_deform_attn(v, spatial_shapes, locations, weights))
