"""Multi-head attention with a merged input projection.

Parameter names (`in_proj_weight`, `in_proj_bias`, `out_proj`) are those of `nn.MultiheadAttention`,
which is what the original checkpoints store; the computation is scaled dot-product attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        allowed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        query: (B, Nq, D); key, value: (B, Nk, D)
        allowed: bool, broadcastable to (B, heads, Nq, Nk); True where a query may attend to a key.
                 Every query must be allowed at least one key.
        returns: (B, Nq, D)
        """
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._heads(F.linear(query, w_q, b_q))
        k = self._heads(F.linear(key, w_k, b_k))
        v = self._heads(F.linear(value, w_v, b_v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        b, h, n, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * dh))
