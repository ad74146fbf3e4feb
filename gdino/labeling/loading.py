"""The one place a labeling run's models are loaded: `load_detector(spec)` and `load_segmenter(spec)`, used by
`gdino label`, the Ray actors and the app's model hub.

The specs are plain values (strings, not torch objects), so that they travel to Ray actors and compare
equal. torch is imported inside the functions only. Loading errors are the loaders' own ValueErrors
(`WeightsError`, `SegmenterError`: an offline hub, a missing file), passed on unchanged: each caller says
them in its own words.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class DetectorSpec:
    """A Grounding DINO to load. model: hub id, local directory or .pth file; text_encoder: BERT directory
    or hub id for original .pth checkpoints; device: "cpu", "cuda", "cuda:1" (None: CUDA when available,
    else CPU); dtype: one of DTYPES (float16 is CUDA only; None: as the checkpoint loads, float32)."""

    model: str
    text_encoder: str | None = None
    device: str | None = None
    dtype: str | None = None
    precision: str = "exact"  # or "fast" (gdino/modeling/precision.py)


@dataclass(frozen=True)
class SegmenterSpec:
    """A SAM to load. sam: "vit_b", "vit_l", "vit_h" or a checkpoint path; device as DetectorSpec's."""

    sam: str
    device: str | None = None


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu". Imports torch."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_detector(spec: DetectorSpec):
    """spec -> a `gdino.Detector` on spec.device in spec.dtype. Raises ValueError when the weights cannot be
    found or read (its message names the files and the fix)."""
    import torch

    from ..detector import Detector

    if spec.dtype is not None and spec.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {spec.dtype!r}")
    return Detector.from_pretrained(spec.model, text_encoder=spec.text_encoder, device=spec.device or default_device(),
                                    dtype=None if spec.dtype is None else getattr(torch, spec.dtype),
                                    precision=spec.precision)


def load_segmenter(spec: SegmenterSpec):
    """spec -> a `gdino.Segmenter` on spec.device. Raises ValueError (SegmenterError) when SAM cannot be
    loaded."""
    from ..sam.segmenter import Segmenter

    return Segmenter.from_pretrained(spec.sam, device=spec.device or default_device())
