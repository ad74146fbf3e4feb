"""Feature enhancer: per layer, image-text fusion -> text self-attention -> deformable image self-attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention
from .config import GroundingDINOConfig
from .deform_attn import MSDeformAttn
from .fusion import BiAttentionBlock
from .position import sine_embed_coords


class DeformableEncoderLayer(nn.Module):
    def __init__(self, c: GroundingDINOConfig):
        super().__init__()
        self.self_attn = MSDeformAttn(c.d_model, c.encoder_heads, c.num_feature_levels, c.encoder_points)
        self.norm1 = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.linear1 = nn.Linear(c.d_model, c.encoder_ffn_dim)
        self.linear2 = nn.Linear(c.encoder_ffn_dim, c.d_model)
        self.norm2 = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)

    def forward(self, x, pos, reference_points, valid, spatial_shapes):
        """x, pos: (B, S, D); reference_points: (B, S, L, 2); valid: (B, S) bool -> (B, S, D)."""
        x = self.norm1(x + self.self_attn(x + pos, reference_points, x, valid, spatial_shapes))
        # relu in place: the (B, S, 2048) hidden is the largest tensor of the layer (164 MB at 800x1200); the
        # linear's backward does not need its output, so training is unaffected
        return self.norm2(x + self.linear2(self.linear1(x).relu_()))


class TextEnhancerLayer(nn.Module):
    def __init__(self, c: GroundingDINOConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(c.d_model, c.text_enhancer_heads)
        self.linear1 = nn.Linear(c.d_model, c.text_enhancer_ffn_dim)
        self.linear2 = nn.Linear(c.text_enhancer_ffn_dim, c.d_model)
        self.norm1 = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.norm2 = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)

    def forward(self, t, pos, allowed):
        """t, pos: (B, N, D); allowed: (B, N, N) phrase mask -> (B, N, D)."""
        qk = t + pos
        t = self.norm1(t + self.self_attn(qk, qk, t, allowed[:, None]))
        return self.norm2(t + self.linear2(F.relu(self.linear1(t))))


def encoder_reference_points(
    spatial_shapes: list[tuple[int, int]], valid_ratios: torch.Tensor
) -> torch.Tensor:
    """Pixel centres of every level as (x, y) in [0, 1] of the padded map, per level they attend to.
    valid_ratios: (B, L, 2) as (w, h) -> (B, S, L, 2)."""
    points = []
    for level, (h, w) in enumerate(spatial_shapes):
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=valid_ratios.dtype, device=valid_ratios.device),
            torch.linspace(0.5, w - 0.5, w, dtype=valid_ratios.dtype, device=valid_ratios.device),
            indexing="ij",
        )
        ys = ys.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * h)
        xs = xs.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * w)
        points.append(torch.stack((xs, ys), -1))
    return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]


class Encoder(nn.Module):
    def __init__(self, c: GroundingDINOConfig):
        super().__init__()
        self.d_model = c.d_model
        self.layers = nn.ModuleList(DeformableEncoderLayer(c) for _ in range(c.encoder_layers))
        self.text_layers = nn.ModuleList(TextEnhancerLayer(c) for _ in range(c.encoder_layers))
        self.fusion_layers = nn.ModuleList(
            BiAttentionBlock(c.d_model, c.fusion_dim, c.fusion_heads, c.layer_norm_eps)
            for _ in range(c.encoder_layers)
        )

    def forward(
        self,
        image: torch.Tensor,
        image_pos: torch.Tensor,
        image_valid: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        valid_ratios: torch.Tensor,
        text: torch.Tensor,
        text_valid: torch.Tensor,
        text_allowed: torch.Tensor,
        text_position_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        image, image_pos: (B, S, D); image_valid: (B, S) bool; valid_ratios: (B, L, 2)
        text: (B, N, D); text_valid: (B, N) bool; text_allowed: (B, N, N); text_position_ids: (B, N)
        returns the enhanced image (B, S, D) and text (B, N, D) features.
        """
        reference_points = encoder_reference_points(spatial_shapes, valid_ratios)
        text_pos = sine_embed_coords(text_position_ids[..., None].to(text.dtype), self.d_model)
        image_pad, text_pad = ~image_valid, ~text_valid
        for fusion, text_layer, image_layer in zip(self.fusion_layers, self.text_layers, self.layers, strict=True):
            image, text = fusion(image, text, image_pad, text_pad)
            text = text_layer(text, text_pos, text_allowed)
            image = image_layer(image, image_pos, reference_points, image_valid, spatial_shapes)
        return image, text
