"""Prediction heads: the box MLP and the contrastive (query . token) class scores."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def contrastive_logits(queries: torch.Tensor, text: torch.Tensor, text_valid: torch.Tensor,
                       max_text_len: int) -> torch.Tensor:
    """
    queries: (B, Q, D), text: (B, N, D), text_valid: (B, N) bool.
    returns: (B, Q, max_text_len) raw scores (no bias, no scale); padding and positions >= N are -inf.
    """
    scores = (queries @ text.transpose(-1, -2)).masked_fill(~text_valid[:, None, :], float("-inf"))
    return F.pad(scores, (0, max_text_len - scores.shape[-1]), value=float("-inf"))


class ScaledContrastiveHead(nn.Module):
    """MM-Grounding-DINO's class head: (query . token) / sqrt(D) + a learned scalar bias (one per head)."""

    def __init__(self, max_text_len: int):
        super().__init__()
        self.max_text_len = max_text_len
        self.bias = nn.Parameter(torch.zeros(()))  # a 0-d tensor, as transformers stores it

    def forward(self, queries: torch.Tensor, text: torch.Tensor, text_valid: torch.Tensor) -> torch.Tensor:
        """queries: (B, Q, D), text: (B, N, D), text_valid: (B, N) bool -> (B, Q, max_text_len), -inf past the text."""
        # divide, then add: the order of the published implementations, so that rounding (and top-k ties) match
        scores = (queries @ text.transpose(-1, -2)) / math.sqrt(queries.shape[-1]) + self.bias
        scores = scores.masked_fill(~text_valid[:, None, :], float("-inf"))
        return F.pad(scores, (0, self.max_text_len - scores.shape[-1]), value=float("-inf"))


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return torch.special.logit(x, eps=eps)
