"""Multi-scale deformable attention behind one function.

`ms_deform_attn` is the only entry point the model uses. Today it runs the pure-PyTorch reference;
compiled CPU/CUDA kernels plug in here (chosen per device and dtype) without touching the model.
"""

from __future__ import annotations

import torch

from .reference import ms_deform_attn_reference

__all__ = ["ms_deform_attn", "ms_deform_attn_reference"]


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    value:              (B, S, H, Dh)
    spatial_shapes:     [(h, w)] per level, S = sum(h * w)
    sampling_locations: (B, Q, H, L, P, 2), (x, y) in [0, 1]
    attention_weights:  (B, Q, H, L, P)
    returns:            (B, Q, H*Dh)
    """
    return ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights)
