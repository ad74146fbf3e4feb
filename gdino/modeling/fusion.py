"""Bi-directional image-text cross-attention (the feature enhancer's fusion step)."""

from __future__ import annotations

import torch
from torch import nn


class BiMultiHeadAttention(nn.Module):
    """Image tokens attend to text tokens and text tokens to image tokens, from one score matrix."""

    def __init__(self, dim: int, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.v_proj = nn.Linear(dim, embed_dim)
        self.l_proj = nn.Linear(dim, embed_dim)
        self.values_v_proj = nn.Linear(dim, embed_dim)
        self.values_l_proj = nn.Linear(dim, embed_dim)
        self.out_v_proj = nn.Linear(embed_dim, dim)
        self.out_l_proj = nn.Linear(embed_dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B, N, E) -> (B, heads, N, Eh), a view: matmul reads it strided, no copy
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor, image_pad: torch.Tensor, text_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (B, S, D), text: (B, N, D), image_pad: (B, S), text_pad: (B, N) bool, True on padding.
        returns the updates (B, S, D) for the image and (B, N, D) for the text."""
        b, s, _ = image.shape
        q = self._heads(self.v_proj(image))
        k = self._heads(self.l_proj(text))
        scores = (q @ k.transpose(-1, -2)) * self.scale  # (B, heads, S, N); scaled here, S*N is small
        # Stabilise as the checkpoints' code does: subtract the global max, clamp to +-5e4.
        scores = (scores - scores.max()).clamp(-50000, 50000)
        scores_t = scores.transpose(-1, -2)  # (B, heads, N, S)
        scores_t = (scores_t - scores_t.max(dim=-1, keepdim=True).values).clamp(-50000, 50000)
        scores_t = scores_t.masked_fill(image_pad[:, None, None, :], float("-inf"))
        scores = scores.masked_fill(text_pad[:, None, None, :], float("-inf"))
        image_out = scores.softmax(-1) @ self._heads(self.values_l_proj(text))  # (B, heads, S, Eh)
        text_out = scores_t.softmax(-1) @ self._heads(self.values_v_proj(image))  # (B, heads, N, Eh)
        image_out = image_out.transpose(1, 2).reshape(b, s, -1)
        text_out = text_out.transpose(1, 2).reshape(b, text.shape[1], -1)
        return self.out_v_proj(image_out), self.out_l_proj(text_out)


class BiAttentionBlock(nn.Module):
    """LayerNorm both sides, cross-attend, add the layer-scaled update to the *normed* inputs."""

    def __init__(self, dim: int, embed_dim: int, num_heads: int, eps: float):
        super().__init__()
        self.layer_norm_v = nn.LayerNorm(dim, eps=eps)
        self.layer_norm_l = nn.LayerNorm(dim, eps=eps)
        self.attn = BiMultiHeadAttention(dim, embed_dim, num_heads)
        self.gamma_v = nn.Parameter(torch.full((dim,), 1e-4))
        self.gamma_l = nn.Parameter(torch.full((dim,), 1e-4))

    def forward(self, image, text, image_pad, text_pad):
        image = self.layer_norm_v(image)
        text = self.layer_norm_l(text)
        delta_image, delta_text = self.attn(image, text, image_pad, text_pad)
        return image + self.gamma_v * delta_image, text + self.gamma_l * delta_text
