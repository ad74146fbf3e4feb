"""A linear layer that multiplies in bfloat16 and answers in its input's dtype: fast mode's layer on CPUs with
bfloat16 units (AMX / AVX512-BF16), where a bfloat16 matrix product is ~3x a float32 one. Only the product is
bfloat16: what comes in and goes out (the residual stream, norms, softmaxes) stays float32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bfloat16Linear(nn.Module):
    """y = x W^T + b with W and b kept in bfloat16; x (..., in) any float dtype -> y (..., out) in x's dtype."""

    def __init__(self, linear: nn.Linear, keep_bfloat16: bool = False):
        super().__init__()
        self.keep_bfloat16 = keep_bfloat16  # answer in bfloat16 (for a consumer that reads bfloat16 itself)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight, self.bias)
        return y if self.keep_bfloat16 else y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bfloat16"
