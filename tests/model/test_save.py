"""gdino.weights.save.save_pretrained: our model -> the transformers layout, read back by transformers and by us."""

import pytest
import torch
from compare import fraction_within, per_query_error
from tiny_models import make_hf_model, make_mm_hf_model, save_hf

import gdino
from gdino.weights.save import _transformers_class, save_pretrained


def changed(model_dir, seed=0):
    """Our model loaded from model_dir with every parameter moved: weights transformers never saw."""
    model = gdino.load_model(model_dir)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("make, size", [(make_hf_model, "tiny"), (make_mm_hf_model, "tiny"), (make_mm_hf_model, "tiny5")])
def test_saved_model_loads_in_transformers_and_in_gdino_with_the_same_outputs(make, size, tokenizer, tmp_path):
    base = save_hf(make(size, seed=2), tokenizer, tmp_path / "base")
    ours = changed(base)
    out = save_pretrained(ours, tmp_path / "tuned", extra_files={"README.md": "# a model card\n"})
    assert (out / "README.md").read_text() == "# a model card\n"

    back = gdino.load_model(out)
    assert back.config == ours.config
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    hf = _transformers_class(ours.config).from_pretrained(out).eval()
    enc = tokenizer(["a cat . remote control .", "a dog on a leash ."], padding="longest", return_tensors="pt")
    x = torch.randn(2, 3, 100, 131)
    with torch.no_grad():
        theirs, mine = hf(pixel_values=x, **enc), ours(x, **enc)
    err = per_query_error(theirs.logits, theirs.pred_boxes, mine.logits, mine.pred_boxes)
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"
    # and the weights really are the changed ones, not the base file's
    with torch.no_grad():
        original = gdino.load_model(base)(x, **enc)
    assert (original.pred_boxes - mine.pred_boxes).abs().max() > 1e-3


def test_a_model_directory_is_never_overwritten(tiny_hf, tmp_path):
    model = gdino.load_model(tiny_hf[1])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="never overwritten"):
        save_pretrained(model, taken)
    assert (taken / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no half-written directory left beside it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert save_pretrained(model, empty) == empty and (empty / "model.safetensors").is_file()


def test_a_failed_save_leaves_nothing_behind(tiny_hf, tmp_path, monkeypatch):
    import gdino.weights.save as save

    def broken(model, directory):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(save, "_check_round_trip", broken)
    with pytest.raises(OSError, match="No space left"):
        save_pretrained(gdino.load_model(tiny_hf[1]), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
