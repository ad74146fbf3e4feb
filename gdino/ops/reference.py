"""Multi-scale deformable attention in plain PyTorch (bilinear sampling with `grid_sample`).

The reference every compiled kernel is tested against. Sampling is bilinear with zero padding, pixel
centres at half-integers (`grid_sample(align_corners=False)`), as in Deformable DETR's CUDA op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    value:              (B, S, H, Dh), S = sum of h*w over levels, levels concatenated row-major.
    spatial_shapes:     [(h, w)] per level.
    sampling_locations: (B, Q, H, L, P, 2), (x, y) normalized to [0, 1] over each level's map.
    attention_weights:  (B, Q, H, L, P), already softmaxed over L*P.
    returns:            (B, Q, H*Dh)
    """
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = sampling_locations * 2 - 1  # grid_sample wants [-1, 1]
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        # (B, h*w, H, Dh) -> (B*H, Dh, h, w), contiguous: torch's CPU grid_sample in bfloat16 / float16 (2.14) reads
        # a map with other strides wrongly (NaN, 1e33 seen on a 100 x 100 map; tests/model/test_ops.py)
        v = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w).contiguous()
        # (B, Q, H, P, 2) -> (B*H, Q, P, 2)
        g = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (B*H, Dh, Q, L*P) weighted by (B*H, 1, Q, L*P), summed over samples
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (stacked * weights).sum(-1).view(batch, heads * head_dim, queries)
    return out.transpose(1, 2).contiguous()
