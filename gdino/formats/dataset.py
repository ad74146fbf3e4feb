"""What exporters read and importers produce: a plain, in-memory view of labeled images.

Coordinates are pixels of the upright image (EXIF applied), boxes xyxy, masks COCO RLE.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..masks import rle_to_mask


@dataclass(frozen=True)
class LabeledObject:
    class_id: int  # index into Dataset.classes
    box: tuple[float, float, float, float]  # xyxy pixels
    mask: dict | None = None  # COCO RLE {"size": [h, w], "counts": str}
    score: float | None = None
    id: int | None = None  # stable id (the project's), used as the COCO annotation id

    def mask_array(self) -> np.ndarray | None:
        return None if self.mask is None else rle_to_mask(self.mask)


@dataclass(frozen=True)
class LabeledImage:
    file_name: str  # unique within the dataset; the name the image gets in an export
    path: Path | None  # where the pixels are (None for records that were never on disk, or are in an object store)
    width: int  # upright
    height: int
    objects: tuple[LabeledObject, ...] = ()
    id: int | None = None  # stable id (the project's), used as the COCO image id
    uri: str | None = None  # an object-store image's URI (`gdino.sources`): exported images are fetched from it


@dataclass(frozen=True)
class Dataset:
    classes: tuple[str, ...]
    images: tuple[LabeledImage, ...] = field(default_factory=tuple)


def split_images(images: tuple[LabeledImage, ...], val_fraction: float, seed: int = 0) -> dict[str, list[LabeledImage]]:
    """{"train": [...]} or {"train": [...], "val": [...]}: a shuffled split by image with a fixed seed,
    so the same project exports to the same split every time."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0 or len(images) < 2:
        return {"train": list(images)}
    order = sorted(images, key=lambda im: im.file_name)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction))
    return {"train": order[n_val:], "val": order[:n_val]}
