"""Preprocessing against transformers' GroundingDinoImageProcessor, image reading, box mapping."""

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from gdino.processing import ImageError, boxes_to_pixels, preprocess_images, resized_size, to_rgb, tokenize


def random_image(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


def test_resize_rule_matches_transformers():
    from transformers.image_transforms import get_size_with_aspect_ratio

    rng = random.Random(0)
    sizes = [(rng.randint(1, 6000), rng.randint(1, 6000)) for _ in range(3000)] + [(800, 1200), (480, 640), (1, 1)]
    for h, w in sizes:
        assert resized_size(h, w) == get_size_with_aspect_ratio((h, w), 800, 1333), (h, w)


def test_pixels_and_mask_match_transformers_processor():
    from transformers import GroundingDinoImageProcessor

    images = [random_image(480, 640, 0), random_image(333, 210, 1), random_image(1200, 400, 2)]
    ref = GroundingDinoImageProcessor()(images=images, return_tensors="pt")
    ours = preprocess_images(images)
    assert ours.pixel_values.shape == ref["pixel_values"].shape
    assert torch.allclose(ours.pixel_values, ref["pixel_values"], atol=1e-5)
    assert torch.equal(ours.pixel_mask, ref["pixel_mask"])
    assert ours.original_sizes == [(480, 640), (333, 210), (1200, 400)]
    assert ours.resized_sizes == [resized_size(h, w) for h, w in ours.original_sizes]


def test_numpy_and_path_inputs_equal_pil(tmp_path):
    img = random_image(60, 90)
    path = tmp_path / "x.png"
    img.save(path)
    a = preprocess_images([img]).pixel_values
    assert torch.equal(a, preprocess_images([np.asarray(img)]).pixel_values)
    assert torch.equal(a, preprocess_images([path]).pixel_values)
    assert torch.equal(a, preprocess_images(str(path)).pixel_values)


def test_exif_rotation_is_applied(tmp_path):
    img = random_image(40, 100)  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a viewer shows it portrait
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert to_rgb(path).size == (40, 100)  # (w, h): upright
    with Image.open(path) as f:
        assert to_rgb(f).size == (40, 100)
    assert preprocess_images([path]).original_sizes == [(100, 40)]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "I;16", "I", "F", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    if mode == "I;16":
        img = Image.fromarray(np.full((20, 30), 65535, dtype=np.uint16))
        assert img.mode.startswith("I;16")
    else:
        img = random_image(20, 30).convert(mode)
    rgb = to_rgb(img)
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    if mode == "I;16":  # full 16-bit white stays white
        assert np.asarray(rgb).min() == 255


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (16, 16), (10, 20, 30, 0))
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]


def test_bad_images_get_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="could not read the image"):
        preprocess_images([corrupt])
    with pytest.raises(ImageError, match="could not read the image"):
        preprocess_images([tmp_path / "missing.png"])
    with pytest.raises(ImageError, match="numpy image must be"):
        preprocess_images([np.zeros((10, 10, 5), dtype=np.uint8)])
    with pytest.raises(ImageError, match="no images"):
        preprocess_images([])
    with pytest.raises(ImageError, match="expected a PIL image"):
        preprocess_images([42])
    buf = io.BytesIO()
    random_image(50, 50).save(buf, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[:100])
    with pytest.raises(ImageError):
        preprocess_images([truncated])


def test_float_arrays_in_0_1_are_scaled():
    a = np.full((8, 8, 3), 0.5, dtype=np.float32)
    assert np.asarray(to_rgb(a))[0, 0].tolist() == [128, 128, 128]


def test_boxes_to_pixels():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.2, 0.2]])
    px = boxes_to_pixels(boxes, (100, 200))  # h=100, w=200
    assert torch.allclose(px, torch.tensor([[80.0, 30.0, 120.0, 70.0], [0.0, 80.0, 40.0, 100.0]]))


def test_tokenize(tokenizer):
    enc = tokenize(tokenizer, ["a cat .", "remote control ."])
    assert enc["input_ids"].shape == enc["attention_mask"].shape == (2, 5)
    with pytest.raises(ValueError, match="non-empty"):
        tokenize(tokenizer, ["  "])
    with pytest.raises(ValueError, match="non-empty"):
        tokenize(tokenizer, [])


def test_huge_image_file_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (8000, 7000)).save(path)  # 56 MP, a few KB on disk
    with pytest.raises(ImageError, match="8000x7000 \\(56 megapixels\\), more than the limit of 50 MP"):
        to_rgb(path)


@pytest.mark.parametrize("array", [
    np.full((20, 20, 3), np.nan, dtype=np.float32),
    np.where(np.eye(20, dtype=bool)[..., None], np.nan, 0.5).repeat(3, 2),  # a NaN diagonal in a valid image
    np.full((20, 20), np.inf),
    np.full((20, 20, 3), -np.inf, dtype=np.float16),
])
def test_float_images_with_nan_or_inf_are_refused(array):
    with pytest.raises(ImageError, match="NaN or infinite"):
        to_rgb(array)


@pytest.mark.parametrize("array, message", [
    (np.zeros((20, 20, 5), dtype=np.uint8), r"\(H, W\), \(H, W, 3\) or \(H, W, 4\), got shape \(20, 20, 5\)"),
    (np.zeros((1, 20, 20, 3), dtype=np.uint8), r"got shape \(1, 20, 20, 3\)"),
    (np.zeros((20,), dtype=np.uint8), r"got shape \(20,\)"),
    (np.zeros((0, 0, 3), dtype=np.uint8), r"empty \(shape \(0, 0, 3\)\)"),
    (np.zeros((0, 20), dtype=np.float32), r"empty \(shape \(0, 20\)\)"),
    (np.full((20, 20, 3), None, dtype=object), "dtype object"),
    (np.full((20, 20, 3), "a"), "dtype <U1"),
    (np.zeros((20, 20, 3), dtype=complex), "dtype complex128"),
])
def test_badly_shaped_or_typed_arrays_are_refused(array, message):
    with pytest.raises(ImageError, match=message):
        to_rgb(array)


def test_boolean_arrays_are_black_and_white():
    """As PIL reads a 1-bit image: True is white, not the almost-black 1 of 255."""
    a = np.zeros((10, 12), dtype=bool)
    a[:, 6:] = True
    rgb = np.asarray(to_rgb(a))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 11].tolist() == [255, 255, 255]


def test_boxes_to_pixels_are_clipped_to_the_image():
    """Predicted boxes may reach past the image's edges; in pixels they end at the image's border."""
    boxes = torch.tensor([[0.05, 0.5, 0.2, 0.4], [0.9, 0.95, 0.4, 0.3], [1.5, 0.5, 0.2, 0.2], [0.5, 0.5, 1.2, 1.4]])
    px = boxes_to_pixels(boxes, (100, 200))  # h=100, w=200
    expected = torch.tensor([[0.0, 30.0, 30.0, 70.0],  # x0 = -10 -> 0
                             [140.0, 80.0, 200.0, 100.0],  # x1 = 220 -> 200, y1 = 110 -> 100
                             [200.0, 40.0, 200.0, 60.0],  # wholly outside: no width left
                             [0.0, 0.0, 200.0, 100.0]])
    assert torch.allclose(px, expected)
    assert boxes_to_pixels(boxes[None], (100, 200)).shape == (1, 4, 4)  # (..., 4)
