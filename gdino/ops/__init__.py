"""Multi-scale deformable attention behind one function.

`ms_deform_attn` is the only entry point the model uses. It runs a compiled kernel when one can be built
for the tensors' device and dtype (CPU: float32, bfloat16; CUDA: float32, float16, bfloat16; forward
and backward on both), and the pure-PyTorch reference otherwise (other dtypes, no compiler, no CUDA
toolkit). `GDINO_MSDA=reference` forces the reference, `GDINO_MSDA=compiled` forces the kernel (an error
if it cannot be had: for testing), `auto` (default) chooses.
"""

from __future__ import annotations

import os

import torch

from . import compiled
from .reference import ms_deform_attn_reference

__all__ = ["describe", "kernel_for", "ms_deform_attn", "ms_deform_attn_reference"]

_MODES = ("auto", "reference", "compiled")
KERNEL_DTYPES = {"cpu": (torch.float32, torch.bfloat16), "cuda": (torch.float32, torch.float16, torch.bfloat16)}


def _mode() -> str:
    mode = os.environ.get("GDINO_MSDA", "auto").lower()
    if mode not in _MODES:
        raise ValueError(f"GDINO_MSDA must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


def kernel_for(value: torch.Tensor) -> str:
    """"compiled" or "reference": what `ms_deform_attn` will run for such a value tensor."""
    mode = _mode()
    if mode == "reference":
        return "reference"
    kind = value.device.type
    fits = value.dtype in KERNEL_DTYPES.get(kind, ())
    if mode == "compiled":
        if not fits:
            raise RuntimeError(f"GDINO_MSDA=compiled, but no compiled kernel runs {value.dtype} on {value.device}")
        if compiled.kernel(kind) is None:
            raise RuntimeError(f"GDINO_MSDA=compiled, but the {kind} kernel is unavailable: "
                               f"{compiled._state[kind]['error']}")
        return "compiled"
    return "compiled" if fits and compiled.kernel(kind) is not None else "reference"


def describe(device: torch.device | str, dtype: torch.dtype, build: bool = False) -> str:
    """One line for people: what runs deformable attention for this device and dtype, and why not the
    compiled kernel if it is not. build=False never waits for a build (the app's status line)."""
    device = torch.device(device)
    if _mode() == "reference":
        return "PyTorch reference (GDINO_MSDA=reference)"
    if dtype not in KERNEL_DTYPES.get(device.type, ()):
        return f"PyTorch reference (no compiled kernel for {str(dtype).removeprefix('torch.')} on {device.type})"
    state = compiled._state[device.type]
    if build:
        compiled.kernel(device.type)
    elif not state["tried"]:
        return f"compiled {device.type.upper()} kernel (being built)"
    if state["module"] is not None:
        return f"compiled {device.type.upper()} kernel"
    return f"PyTorch reference (the compiled kernel is unavailable: {state['error']})"


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    value:              (B, S, H, Dh)
    spatial_shapes:     [(h, w)] per level, S = sum(h * w)
    sampling_locations: (B, Q, H, L, P, 2), (x, y) in [0, 1], any float dtype
    attention_weights:  (B, Q, H, L, P), any float dtype
    returns:            (B, Q, H*Dh), value's dtype
    """
    if kernel_for(value) == "compiled":
        # the kernels read locations and weights in float32 for every value dtype they take (a bfloat16
        # location is off by up to 1/256 of the map: half a pixel on a 150-pixel level)
        return compiled.run(compiled.kernel(value.device.type), value, spatial_shapes,
                            sampling_locations.float(), attention_weights.float())
    return ms_deform_attn_reference(value, spatial_shapes, sampling_locations.to(value.dtype),
                                    attention_weights.to(value.dtype))
