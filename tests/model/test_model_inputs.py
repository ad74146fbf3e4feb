"""Bad inputs to the model itself get a ValueError that says what to do, not a deep traceback."""

import pytest
import torch


def test_prompt_longer_than_the_model_allows(tiny_ours):
    ids = torch.full((1, 300), 1000)
    ids[:, 0], ids[:, -1] = 101, 102
    with pytest.raises(ValueError, match="300 tokens, more than the model's 256.*split the class list"):
        tiny_ours(torch.randn(1, 3, 100, 100), ids)


def test_pixel_values_of_the_wrong_shape(tiny_ours, tokenizer):
    enc = tokenizer(["a cat ."], return_tensors="pt")
    with pytest.raises(ValueError, match=r"pixel_values must be \(B, 3, H, W\), got \(3, 100, 100\)"):
        tiny_ours(torch.randn(3, 100, 100), **enc)
    with pytest.raises(ValueError, match=r"got \(1, 4, 100, 100\)"):
        tiny_ours(torch.randn(1, 4, 100, 100), **enc)


def test_image_and_prompt_counts_differ(tiny_ours, tokenizer):
    enc = tokenizer(["a cat .", "a dog ."], return_tensors="pt")
    with pytest.raises(ValueError, match="1 images but 2 prompts"):
        tiny_ours(torch.randn(1, 3, 100, 100), **enc)


def test_image_too_small_for_the_query_count(tiny_ours, tokenizer):
    enc = tokenizer(["a cat ."], return_tensors="pt")
    with pytest.raises(ValueError, match="image is too small"):
        tiny_ours(torch.randn(1, 3, 16, 16), **enc)


def test_image_features_are_reusable_across_prompts(tiny_ours, tokenizer):
    """encode_image once, decode with two prompts == two full forwards (the re-prompt cache's basis)."""
    x = torch.randn(1, 3, 100, 120)
    with torch.no_grad():
        image = tiny_ours.encode_image(x)
        for caption in ["a cat .", "remote control . person ."]:
            enc = tokenizer([caption], return_tensors="pt")
            cached = tiny_ours.decode(image, tiny_ours.encode_text(**enc))
            full = tiny_ours(x, **enc)
            assert torch.equal(cached.logits, full.logits) and torch.equal(cached.pred_boxes, full.pred_boxes)
