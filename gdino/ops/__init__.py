"""Multi-scale deformable attention behind one function.

`ms_deform_attn` is the only entry point the model uses. It runs the compiled CPU kernel (float32 and
bfloat16, inference) when it can be built, and the pure-PyTorch reference otherwise (other devices and
dtypes, training, or no compiler). `GDINO_MSDA=reference` forces the reference, `GDINO_MSDA=compiled`
forces the kernel (an error if it cannot be built: for testing), `auto` (default) chooses.
"""

from __future__ import annotations

import os

import torch

from . import compiled
from .reference import ms_deform_attn_reference

__all__ = ["kernel_for", "ms_deform_attn", "ms_deform_attn_reference"]

_MODES = ("auto", "reference", "compiled")


def kernel_for(value: torch.Tensor, needs_grad: bool) -> str:
    """"compiled" or "reference": what `ms_deform_attn` will run for such a value tensor."""
    mode = os.environ.get("GDINO_MSDA", "auto").lower()
    if mode not in _MODES:
        raise ValueError(f"GDINO_MSDA must be one of {', '.join(_MODES)}, got {mode!r}")
    if mode == "reference":
        return "reference"
    fits = value.device.type == "cpu" and value.dtype in (torch.float32, torch.bfloat16) and not needs_grad
    if mode == "compiled":
        if not fits:
            raise RuntimeError(f"GDINO_MSDA=compiled, but no compiled kernel runs {value.dtype} on {value.device} "
                               f"{'with gradients' if needs_grad else ''}")
        if compiled.cpu_kernel() is None:
            raise RuntimeError(f"GDINO_MSDA=compiled, but the kernel could not be built: {compiled._cpu['error']}")
        return "compiled"
    return "compiled" if fits and compiled.cpu_kernel() is not None else "reference"


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
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (value, sampling_locations, attention_weights))
    if kernel_for(value, needs_grad) == "compiled":
        return compiled.cpu_forward(compiled.cpu_kernel(), value, spatial_shapes, sampling_locations.to(value.dtype),
                                    attention_weights.to(value.dtype))
    return ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights)
