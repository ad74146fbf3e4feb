"""Our model against transformers' GroundingDinoForObjectDetection on the same random weights."""

import pytest
import torch
from compare import fraction_within, per_query_error
from tiny_models import make_hf_model, make_tokenizer, save_hf

import gdino


def run_both(hf, ours, tokenizer, pixel_values, captions, pixel_mask=None):
    enc = tokenizer(captions, padding="longest", return_tensors="pt")
    with torch.no_grad():
        ref = hf(pixel_values=pixel_values, pixel_mask=pixel_mask, **enc)
        out = ours(pixel_values, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], pixel_mask)
    assert out.logits.shape == ref.logits.shape and out.pred_boxes.shape == ref.pred_boxes.shape
    return per_query_error(ref.logits, ref.pred_boxes, out.logits, out.pred_boxes), ref, out


@pytest.mark.parametrize(
    "size, caption",
    [
        ((100, 131), "a cat . remote control ."),  # not divisible by the window (7) at any level
        ((112, 224), "a cat sitting on the red couch ."),
        ((96, 160), "a cat . a dog . person . car . red truck ."),  # several phrases
        ((120, 100), "a cat sitting on the couch"),  # no trailing period
    ],
)
def test_tiny_matches_transformers(tiny_hf, tiny_ours, tokenizer, size, caption):
    hf, _ = tiny_hf
    err, ref, out = run_both(hf, tiny_ours, tokenizer, torch.randn(1, 3, *size), [caption])
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"
    # the comparison must be able to fail: outputs are not degenerate
    assert out.pred_boxes.std() > 0.05 and torch.isfinite(out.logits).sum() > 0


def test_batch_of_two_sizes_with_padding_and_different_prompts(tiny_hf, tiny_ours, tokenizer):
    hf, _ = tiny_hf
    pixel_values = torch.randn(2, 3, 128, 150)
    pixel_mask = torch.zeros(2, 128, 150, dtype=torch.long)
    pixel_mask[0, :128, :150] = 1
    pixel_mask[1, :90, :117] = 1  # second image smaller, padded right and bottom
    pixel_values[1, :, 90:, :] = 0
    pixel_values[1, :, :, 117:] = 0
    captions = ["a cat . remote control .", "a dog on a leash ."]
    err, _, out = run_both(hf, tiny_ours, tokenizer, pixel_values, captions, pixel_mask)
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"

    # Batched == one at a time, item by item. An item must be run with the padding it had in the batch:
    # the Swin backbone and the neck's GroupNorm see the zero padding (as in transformers and the
    # reference), so a padded image is not the same input as the cropped one. The first image was not
    # padded, so it also equals its plain single run.
    for i in range(2):
        enc = tokenizer([captions[i]], return_tensors="pt")
        n = enc["input_ids"].shape[1]
        with torch.no_grad():
            single = tiny_ours(pixel_values[i:i + 1], pixel_mask=pixel_mask[i:i + 1], **enc)
        err_i = per_query_error(single.logits[..., :n], single.pred_boxes,
                                out.logits[i:i + 1, :, :n], out.pred_boxes[i:i + 1])
        assert fraction_within(err_i, 1e-4) == 1.0


def test_forward_is_deterministic_and_inputs_matter(tiny_ours, tokenizer):
    enc = tokenizer(["a cat ."], return_tensors="pt")
    x = torch.randn(1, 3, 100, 100)
    with torch.no_grad():
        a = tiny_ours(x, **enc)
        b = tiny_ours(x, **enc)
        c = tiny_ours(x + 0.5, **enc)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.pred_boxes, b.pred_boxes)
    assert not torch.allclose(a.pred_boxes, c.pred_boxes, atol=1e-3)


@pytest.mark.parametrize("size", ["swin_t", "swin_b"])
def test_full_size_matches_transformers(size, tmp_path, monkeypatch):
    """The real architectures (Swin-T OGC and Swin-B, 6+6 layers, 900 queries) with random weights.
    float32 rounding alone reaches ~1e-4 at this depth, so 99% of queries within 1e-3.

    Deformable attention runs the PyTorch reference here, as transformers does: this test had depended on
    whether an earlier test left the compiled kernel loaded. With the compiled CPU kernel (1e-6 from the
    reference per call, tests/model/test_ops_compiled.py) Swin-T's random model gives 95.9% of queries within 1e-3,
    median 6.6e-4 (Swin-B: 100%): measured, not yet explained (a top-k near tie, as at Swin-L in
    test_mm_parity.py, is the first suspect)."""
    monkeypatch.setenv("GDINO_MSDA", "reference")
    tokenizer = make_tokenizer()
    hf = make_hf_model(size, seed=1)
    directory = save_hf(hf, tokenizer, tmp_path / size)
    ours = gdino.load_model(directory)
    assert ours.config == gdino.preset(size)  # every size read from config.json
    err, _, _ = run_both(hf, ours, tokenizer, torch.randn(1, 3, 200, 260), ["a cat . remote control ."])
    frac = fraction_within(err, 1e-3)
    print(f"{size}: {frac:.4f} of queries within 1e-3, median error {err.median().item():.1e}")
    assert frac >= 0.99
