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
        returns the updates (B, S, D) for the image and (B, N, D) for the text.

        The checkpoints' attention, with every product over the S image tokens taken against the few text
        tokens instead of the embed_dim (E) channels: the same sums, grouped otherwise (S is ~20,000 at 800x1200,
        N at most 256 <= Eh). Per head h, with the projections' weights W (out, in) and biases b:
          scores_h = (x Wq_h^T + bq_h) k_h^T * scale  = x [Wq_h^T k_h^T * scale] + [bq_h k_h^T * scale]
          out_v    = sum_h softmax_N(scores_h) vl_h Wo_h^T + bo = [P_1 .. P_H] [vl_1 Wo_1^T; ..; vl_H Wo_H^T] + bo
          text_h   = softmax_S(scores_h^T) (x Wvv_h^T + bvv_h) = (softmax_S(scores_h^T) x) Wvv_h^T + bvv_h
        (a softmax's weights sum to 1). No (B, S, E) tensor is made: ~30 of the 31 GFLOP a layer at 800x1200."""
        b, s, d = image.shape
        n, h, eh = text.shape[1], self.num_heads, self.head_dim
        k = self._heads(self.l_proj(text))  # (B, H, N, Eh)
        wq = self.v_proj.weight.view(h, eh, d)
        a = (wq.transpose(1, 2) @ k.transpose(-1, -2)) * self.scale  # (B, H, D, N)
        c = (self.v_proj.bias.view(h, 1, eh) @ k.transpose(-1, -2)) * self.scale  # (B, H, 1, N)
        a = a.permute(0, 2, 1, 3).reshape(b, d, h * n)  # (B, D, H*N): one product for every head
        scores = torch.baddbmm(c.permute(0, 2, 1, 3).reshape(b, 1, h * n), image, a).view(b, s, h, n)
        # Stabilise as the checkpoints' code does: subtract the global max, clamp to +-5e4; the text side's
        # scores are these, less their max over the image tokens.
        scores = (scores - scores.max()).clamp(-50000, 50000)
        scores_t = (scores - scores.max(dim=1, keepdim=True).values).clamp(-50000, 50000)
        scores_t = scores_t.masked_fill(image_pad[:, :, None, None], float("-inf")).softmax(1)  # over S
        probs = scores.masked_fill(text_pad[:, None, None, :], float("-inf")).softmax(-1)  # over N
        vl = self._heads(self.values_l_proj(text))  # (B, H, N, Eh)
        wo = self.out_v_proj.weight.view(d, h, eh).permute(1, 2, 0)  # (H, Eh, D)
        m = (vl @ wo).reshape(b, h * n, d)  # (B, H*N, D)
        image_out = torch.baddbmm(self.out_v_proj.bias, probs.view(b, s, h * n), m)  # (B, S, D)
        pooled = (scores_t.view(b, s, h * n).transpose(1, 2) @ image).view(b, h, n, d)  # (B, H, N, D)
        wv = self.values_v_proj.weight.view(h, eh, d).transpose(1, 2)  # (H, D, Eh)
        text_out = pooled @ wv + self.values_v_proj.bias.view(h, 1, eh)  # (B, H, N, Eh)
        text_out = text_out.transpose(1, 2).reshape(b, n, h * eh)
        return image_out, self.out_l_proj(text_out)


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
