"""What every SAM backend gives the Segmenter: an image embedding, and masks for prompts on it.

Coordinate spaces at the boundary:
- pixels: (x, y) in the upright image (EXIF applied), (H, W) = `Embedding.original_size`;
- frame: (x, y) in the encoder's input (SAM 1: long side resized to 1024 and padded; SAM 2: stretched to
  1024 x 1024). `to_frame` maps pixels to it;
- low-res: the decoder's (g, g) mask logits over the whole frame (g = 4 x the embedding's grid, 256).

A backend holds no cache and checks no prompt: the Segmenter does both, the same for every backend.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass
class Embedding:
    features: dict[str, torch.Tensor]  # the backend's image features, batch 1, on its device
    input_size: tuple[int, int]  # (h, w) the image covers in the frame
    original_size: tuple[int, int]  # (h, w) of the upright image

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.features.values())


class Backend(Protocol):
    name: str  # what --sam calls it: "vit_b", "sam2.1-tiny", "edgetam", or the file / folder name
    identity: str  # name + a digest of the weights: embeddings of one identity are interchangeable
    mask_threshold: float  # logits above it are the mask
    low_res_side: int  # g: the side of the decoder's low-res logits (256)

    @property
    def device(self) -> torch.device: ...

    def embed(self, rgb: np.ndarray) -> Embedding:
        """(H, W, 3) uint8 upright image -> its embedding (the expensive part: the image encoder)."""

    def to_frame(self, xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(N, 2) (x, y) in pixels -> (N, 2) in the encoder's frame."""

    def decode(self, emb: Embedding, *, points: torch.Tensor | None, labels: torch.Tensor | None,
               boxes: torch.Tensor | None, masks: torch.Tensor | None,
               multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts on one image -> (low-res logits (B, K, g, g), predicted IoU (B, K)); K = 3 with
        multimask, else 1. points (B, P, 2) and boxes (B, 4) in the frame, labels (B, P) of 0 / 1,
        masks (B, 1, g, g) low-res logits of a previous mask."""

    def upscale(self, low_res: torch.Tensor, emb: Embedding) -> torch.Tensor:
        """(B, 1, g, g) low-res logits -> (B, 1, H, W) logits in the image's pixels."""

    def mask_prompt(self, mask: torch.Tensor, emb: Embedding) -> torch.Tensor:
        """(H, W) float 0 / 1 mask in pixels -> (1, 1, g, g) low-res logits (+-20) of the same region."""


def weights_digest(module: torch.nn.Module) -> str:
    """A short digest of a model's weights (names, shapes, sums): two loads of the same weights agree, a
    fine-tuned copy differs. One pass over the parameters, no copy."""
    h = hashlib.sha1()
    with torch.no_grad():
        for name, t in module.state_dict().items():
            h.update(f"{name}{tuple(t.shape)}".encode())
            if t.is_floating_point() and t.numel():
                flat = t.reshape(-1)
                h.update(np.float64([t.double().sum().item(), flat[: 64].double().abs().sum().item()]).tobytes())
    return h.hexdigest()[:16]
