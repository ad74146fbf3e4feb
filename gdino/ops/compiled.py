"""The compiled kernels of multi-scale deformable attention: built on first use with
torch.utils.cpp_extension (ninja from PyPI), cached per torch and Python version, never at install.

Any failure (no compiler, a build error, sources missing from a non-editable install) is logged in
one line and the PyTorch reference keeps working. Nothing here is required to run gdino.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

import torch

log = logging.getLogger("gdino")

CSRC = Path(__file__).resolve().parents[2] / "csrc"
_lock = threading.Lock()
_cpu = {"tried": False, "module": None, "error": None}


def _simd_flags() -> tuple[str, list[str]]:
    """8-wide float math where this CPU has it (the build is for this machine; the cache is keyed by it)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512") and sys.platform.startswith("linux"):
        return "avx2", ["-mavx2", "-mfma"]
    return "generic", []


def build_dir() -> Path:
    root = Path(os.environ.get("GDINO_CACHE", Path.home() / ".cache" / "gdino"))
    tag = (f"torch{torch.__version__.replace('+', '_')}-py{sys.version_info.major}{sys.version_info.minor}"
           f"-{_simd_flags()[0]}")
    return root / "kernels" / tag


def cpu_kernel():
    """The compiled CPU module, building it the first time; None if it cannot be had."""
    if _cpu["tried"]:
        return _cpu["module"]
    with _lock:
        if _cpu["tried"]:
            return _cpu["module"]
        try:
            source = CSRC / "ms_deform_attn_cpu.cpp"
            if not source.is_file():
                raise FileNotFoundError(f"{source} is not there (a non-editable install carries no sources)")
            from torch.utils.cpp_extension import load

            directory = build_dir()
            directory.mkdir(parents=True, exist_ok=True)
            if not any(directory.glob("*.so")):
                log.warning("gdino: compiling the deformable-attention CPU kernel (first use only, about a minute; "
                            "cached in %s)", directory)
            _cpu["module"] = load(name="gdino_msda_cpu", sources=[str(source)], extra_cflags=["-O3", *_simd_flags()[1]],
                                  build_directory=str(directory), verbose=False)
        except Exception as err:  # no compiler, no ninja, a build error: the reference still works
            _cpu["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            log.warning("gdino: the compiled deformable-attention kernel is unavailable (%s); using the PyTorch "
                        "reference", _cpu["error"])
        finally:
            _cpu["tried"] = True
    return _cpu["module"]


def prepare_in_background() -> threading.Thread:
    """Start building the CPU kernel now, so that the first detection does not wait for it (the app)."""
    thread = threading.Thread(target=cpu_kernel, name="gdino-kernel-build", daemon=True)
    thread.start()
    return thread


def cpu_forward(module, value, spatial_shapes, sampling_locations, attention_weights) -> torch.Tensor:
    shapes = torch.tensor(spatial_shapes, dtype=torch.int64)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return module.forward(value, shapes, starts, sampling_locations, attention_weights)
