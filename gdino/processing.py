"""Images -> normalized, padded pixel batches; captions -> tokens; model boxes -> image pixels.

Matches transformers' GroundingDinoImageProcessor (its default torchvision backend): the shorter side
resized to 800 with the longer at most 1333 (same rounding rule), bilinear with antialiasing on the
uint8 image, ImageNet mean/std, zero padding right/bottom to the largest image of the batch, and a
pixel mask (1 = image, 0 = padding).

Deliberate difference: images are read upright. EXIF orientation is applied and every PIL mode is
converted to RGB on purpose (alpha composited on white, 16-bit scaled to 8-bit), where transformers
takes the pixels as stored. Boxes therefore refer to the image as a viewer shows it.

Reading images needs no torch (the project store, the exporters and the CLI's file handling use it):
torch is imported by the functions that make tensors, when they are called.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = Image.Image | np.ndarray | str | os.PathLike


MAX_PIXELS = 50_000_000  # larger inputs are refused: decoding them alone takes GBs, and the model sees 1 MP
MIN_SIDE = 8  # smaller images hold nothing to detect once upsampled to 800 px


class ImageError(ValueError):
    """An input image could not be read or understood."""


def check_image_size(width: int, height: int, max_pixels: int, name: str) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels), more than the limit of "
                         f"{max_pixels / 1e6:.0f} MP; downscale it first (the model looks at about 1 MP anyway)")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name} is only {width}x{height} pixels; gdino needs at least {MIN_SIDE} px on each side")


@contextmanager
def open_image_file(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """PIL's lazy open of an image file, its size checked from the header before any decoding. Every
    failure inside the block (unreadable, truncated, too large) becomes an ImageError naming the file."""
    name = f"the image {os.fspath(path)!r}"
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ImageError(f"{name} is an empty file (0 bytes)")
    try:
        with Image.open(path) as f:
            check_image_size(f.width, f.height, max_pixels, name)
            yield f
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name} is too large to decode safely: {err}") from err
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"could not read {name}: {err}") from err


def to_rgb(image: ImageLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Any supported input -> an upright 8-bit RGB PIL image.

    image: PIL image of any mode, numpy array (H, W) or (H, W, 3|4) (RGB order), or a file path. Arrays of
    uint8 are taken as they are, floats in [0, 1] are scaled by 255, other numbers are clipped to 0..255,
    bool is black and white; NaN / infinite values, empty arrays and other dtypes are refused. Images over
    `max_pixels` or under MIN_SIDE px on a side are refused with an ImageError.
    """
    name = "the image"
    if isinstance(image, (str, os.PathLike)):
        with open_image_file(image, max_pixels) as f:
            f.load()
            loaded = f.copy() if f.mode != "P" else f.convert("RGBA")
            loaded.info.update(f.info)
            exif = f.getexif()
        if exif:
            loaded.info["exif"] = exif.tobytes()
        image = loaded
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise ImageError(f"expected a PIL image, a numpy array or a path, got {type(image).__name__}")
    check_image_size(image.width, image.height, max_pixels, name)
    image = ImageOps.exif_transpose(image)
    return _mode_to_rgb(image)


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"a numpy image must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.size == 0:
        raise ImageError(f"the numpy image is empty (shape {array.shape})")
    if array.dtype == bool:
        return Image.fromarray(np.where(array, np.uint8(255), np.uint8(0)))
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageError(f"a numpy image must hold numbers (uint8, or integers / floats), got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ImageError(f"the numpy image has NaN or infinite values ({bad} of {array.size}); replace them first, "
                         "e.g. np.nan_to_num(image)")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.min() >= 0.0 and array.max() <= 1.0:
            array = (array * 255).round()
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _mode_to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit scans use the full 16-bit range; 32-bit int / float images are scaled by their own range
        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else (255.0 if a.max() <= 255 else float(a.max()))
        return Image.fromarray(np.clip(a / top * 255.0, 0, 255).round().astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def resized_size(height: int, width: int, shortest: int = 800, longest: int = 1333) -> tuple[int, int]:
    """(h, w) after scaling the shorter side to `shortest`, unless the longer would pass `longest`, in
    which case the longer side is capped (transformers' rounding, so sizes agree pixel for pixel)."""
    short, long_ = min(height, width), max(height, width)
    target, exact = float(shortest), None
    if long_ / short * shortest > longest:
        exact = longest * short / long_
        target = round(exact)
    if short == target:
        return height, width
    scale_from = exact if exact is not None else target
    if width < height:
        return int(scale_from * height / width), int(target)
    return int(target), int(scale_from * width / height)


@dataclass
class ImageBatch:
    pixel_values: torch.Tensor  # (B, 3, Hp, Wp) float32, normalized, zero-padded right/bottom
    pixel_mask: torch.Tensor  # (B, Hp, Wp) int64, 1 on image pixels
    original_sizes: list[tuple[int, int]]  # (h, w) of each upright input image
    resized_sizes: list[tuple[int, int]]  # (h, w) each image was resized to, before padding


def resize_to_uint8(image: Image.Image, shortest: int = 800, longest: int = 1333) -> torch.Tensor:
    """An RGB PIL image -> (3, h, w) uint8 at the model's input size (`resized_size`)."""
    import torch
    import torchvision.transforms.v2.functional as tvF

    size = resized_size(image.height, image.width, shortest, longest)
    if min(size) < 32:
        raise ImageError(f"the image's aspect ratio is too extreme ({image.width}x{image.height}): scaled to the model's "
                         f"{longest} px limit its short side is {min(size)} px; crop it into parts")
    t = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return tvF.resize(t, list(size), interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)


def batch_from_uint8(resized: Sequence[torch.Tensor], original_sizes: Sequence[tuple[int, int]]) -> ImageBatch:
    """(3, h, w) uint8 images -> normalized float batch, zero-padded right/bottom, with pixel mask."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255.0
    hp = max(t.shape[1] for t in resized)
    wp = max(t.shape[2] for t in resized)
    pixel_values = torch.zeros(len(resized), 3, hp, wp)
    pixel_mask = torch.zeros(len(resized), hp, wp, dtype=torch.int64)
    for i, t in enumerate(resized):
        pixel_values[i, :, : t.shape[1], : t.shape[2]] = (t.float() - mean) / std
        pixel_mask[i, : t.shape[1], : t.shape[2]] = 1
    return ImageBatch(pixel_values, pixel_mask, list(original_sizes), [tuple(t.shape[1:]) for t in resized])


def preprocess_images(images: Sequence[ImageLike], shortest: int = 800, longest: int = 1333) -> ImageBatch:
    """Images -> one padded batch ready for `GroundingDINO.forward` / `encode_image`."""
    if isinstance(images, (Image.Image, np.ndarray, str, os.PathLike)):
        images = [images]
    if len(images) == 0:
        raise ImageError("no images given")
    rgbs = [to_rgb(image) for image in images]
    resized = [resize_to_uint8(rgb, shortest, longest) for rgb in rgbs]
    return batch_from_uint8(resized, [(rgb.height, rgb.width) for rgb in rgbs])


def tokenize(tokenizer, captions: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """Captions -> input_ids, attention_mask, token_type_ids, each (B, N), padded to the longest."""
    if isinstance(captions, str):
        captions = [captions]
    if not captions or any(not isinstance(c, str) or not c.strip() for c in captions):
        raise ValueError("every caption must be a non-empty string, e.g. 'a cat . a remote control .'")
    enc = tokenizer(list(captions), padding="longest", return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def boxes_to_pixels(pred_boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """Model boxes -> original image pixels, clipped to the image.

    pred_boxes: (..., 4) cxcywh normalized to the unpadded image (what the model predicts).
    original_size: (h, w) of the upright input image.
    returns: (..., 4) xyxy in pixels of that image (float), each coordinate clipped to [0, w] x [0, h]
    (a box wholly outside keeps no width or height). The resize keeps the image's extent, so normalized
    coordinates scale straight to the original size. transformers' post-processing does not clip.
    """
    import torch

    h, w = original_size
    cx, cy, bw, bh = pred_boxes.unbind(-1)
    xyxy = torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), -1)
    size = torch.tensor([w, h, w, h], dtype=xyxy.dtype, device=xyxy.device)
    return torch.minimum((xyxy * size).clamp(min=0), size)
