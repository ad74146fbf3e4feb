"""SAM 3's inputs and outputs, as the official `Sam3Processor` makes and reads them.

Coordinate spaces: the model sees the upright image stretched to (S, S) (S = the config's image size, 1008);
its boxes are normalized xyxy of that square, which is the normalized xyxy of the original too (the stretch
keeps proportions along each axis). Exemplar boxes go in as normalized (cx, cy, w, h). Masks come out as
logits at a quarter of S and are upsampled to the original size.
"""

from __future__ import annotations

import torch
from PIL import Image

from ..train.boxes import xyxy_to_cxcywh

TEXT_LENGTH = 32  # CLIP context of SAM 3's text encoder: start token + up to 30 tokens + end token
MASK_CHUNK = 8  # masks upsampled to the original size this many at a time (a 12 MP float mask is 48 MB)


def pixels(image: Image.Image, size: int) -> torch.Tensor:
    """An upright RGB image -> (1, 3, size, size) float32 in [-1, 1]: uint8 resize with antialiasing,
    then / 255, then (x - 0.5) / 0.5, as the official processor does."""
    from torchvision.transforms.v2 import functional as F

    tensor = F.pil_to_tensor(image)  # (3, H, W) uint8
    tensor = F.resize(tensor, [size, size], antialias=True)
    tensor = F.to_dtype(tensor, torch.float32, scale=True)
    return F.normalize(tensor, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]).unsqueeze(0)


def token_ids(tokenizer, phrase: str) -> list[int]:
    """One phrase -> [start, tokens..., end] (not padded)."""
    return list(tokenizer(phrase)["input_ids"])


def text_batch(tokenizer, phrases: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Phrases -> input_ids (P, 32) padded with 0 and attention_mask (P, 32), as the official tokenizer pads
    (the text encoder is causal, so what follows a phrase never changes it; the mask hides it downstream)."""
    ids = torch.zeros(len(phrases), TEXT_LENGTH, dtype=torch.long)
    mask = torch.zeros(len(phrases), TEXT_LENGTH, dtype=torch.long)
    for i, phrase in enumerate(phrases):
        tokens = token_ids(tokenizer, phrase)
        if len(tokens) > TEXT_LENGTH:
            raise ValueError(f"{phrase!r} is {len(tokens) - 2} tokens; SAM 3 reads at most {TEXT_LENGTH - 2}")
        ids[i, :len(tokens)] = torch.tensor(tokens)
        mask[i, :len(tokens)] = 1
    return ids, mask


def exemplar_boxes(xyxy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) xyxy pixels of the upright original (h, w) -> (N, 4) normalized (cx, cy, w, h)."""
    h, w = size
    return xyxy_to_cxcywh(xyxy.float() / torch.tensor([w, h, w, h], dtype=torch.float32))


def boxes_to_pixels(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) normalized xyxy -> xyxy pixels of the original (h, w), clipped to it."""
    h, w = size
    out = boxes.float() * torch.tensor([w, h, w, h], dtype=torch.float32)
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


def masks_to_original(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) mask logits -> (N, H, W) bool at the original size: bilinear upsampling (no corner alignment),
    then sigmoid > 0.5, as the official processor does; MASK_CHUNK masks at a time."""
    n = logits.shape[0]
    out = torch.zeros((n, *size), dtype=torch.bool)
    for start in range(0, n, MASK_CHUNK):
        part = logits[start:start + MASK_CHUNK].float().unsqueeze(1)
        up = torch.nn.functional.interpolate(part, size=size, mode="bilinear", align_corners=False)
        out[start:start + MASK_CHUNK] = up.squeeze(1).sigmoid() > 0.5
    return out
