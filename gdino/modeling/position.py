"""Sine position embeddings: 2-D for image feature maps, per-coordinate for text positions and boxes."""

from __future__ import annotations

import math

import torch


def _frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    i = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    # (..., F) -> sin on even features, cos on odd ones, interleaved back to (..., F)
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_embed_2d(valid: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """
    valid:   (B, H, W) bool, True on image pixels, False on padding.
    returns: (B, 2*num_feats, H, W) float32; channels are [y features, x features]. Coordinates are
             normalized by the valid extent of each image, so padding does not shift them.
    """
    scale = 2 * math.pi
    y = valid.cumsum(1, dtype=torch.float32)
    x = valid.cumsum(2, dtype=torch.float32)
    y = y / (y[:, -1:, :] + 1e-6) * scale
    x = x / (x[:, :, -1:] + 1e-6) * scale
    freqs = _frequencies(num_feats, temperature, valid.device)
    pos_x = _interleave_sin_cos(x[..., None] / freqs)
    pos_y = _interleave_sin_cos(y[..., None] / freqs)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def sine_embed_coords(coords: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """
    coords:  (..., n) values in [0, 1] (boxes as cx, cy, w, h) or raw positions (text position ids).
    returns: (..., n*num_feats), same dtype as `coords`; each coordinate embedded on its own, in the
             order (y, x, rest...) when n >= 2, which is the order the checkpoints were trained with.
    """
    scale = 2 * math.pi
    freqs = _frequencies(num_feats, temperature, coords.device)
    parts = [_interleave_sin_cos(c[..., None].float() * scale / freqs) for c in coords.unbind(-1)]
    if len(parts) >= 2:
        parts[0], parts[1] = parts[1], parts[0]
    return torch.cat(parts, dim=-1).to(coords.dtype)
