"""MM-Grounding-DINO: our model against transformers' MMGroundingDinoForObjectDetection on the same random
weights (saved with save_pretrained), the per-layer head key spellings, and the files we refuse."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from compare import fraction_within, per_query_error
from safetensors.torch import load_file, save_file
from test_parity import run_both
from tiny_models import make_mm_hf_model, make_tokenizer, save_hf

import gdino
import gdino.modeling.model as model_module
from gdino import WeightsError
from gdino.modeling.config import MM_TINY


@pytest.fixture(scope="module")
def mm_hf(tokenizer, tmp_path_factory):
    """(transformers oracle, the directory it was saved to with save_pretrained)."""
    model = make_mm_hf_model("tiny", seed=0)
    return model, save_hf(model, tokenizer, tmp_path_factory.mktemp("mm_tiny_hf"))


@pytest.fixture(scope="module")
def mm_ours(mm_hf):
    return gdino.load_model(mm_hf[1])


def test_family_and_sizes_come_from_config_json(mm_hf, mm_ours):
    cfg = json.loads((mm_hf[1] / "config.json").read_text())
    assert cfg["model_type"] == "mm-grounding-dino" and cfg["architectures"] == ["MMGroundingDinoForObjectDetection"]
    assert mm_ours.config == MM_TINY
    assert len(mm_ours.bbox_embed) == len(mm_ours.class_embed) == 3


def test_the_oracle_has_distinct_per_layer_heads(mm_hf):
    """Guards the test itself: a tied oracle would let a model using layer 0's heads everywhere pass."""
    hf, directory = mm_hf
    biases = [h.bias.item() for h in hf.class_embed] + [hf.model.encoder_output_class_embed.bias.item()]
    assert len(set(biases)) == len(biases)
    boxes = [h.layers[0].weight for h in hf.bbox_embed]
    assert not any(torch.equal(boxes[0], b) for b in boxes[1:])
    for top, dec in zip(hf.bbox_embed, hf.model.decoder.bbox_embed, strict=True):  # refinement uses the decoder's copy
        assert torch.equal(top.layers[0].weight, dec.layers[0].weight)
    keys = set(load_file(str(directory / "model.safetensors")))
    assert {f"class_embed.{i}.bias" for i in range(3)} <= keys and "model.encoder_output_class_embed.bias" in keys


@pytest.mark.parametrize(
    "size, caption",
    [
        ((100, 131), "a cat . remote control ."),  # not divisible by the window (7) at any level
        ((96, 160), "a cat . a dog . person . car . red truck ."),  # several phrases
        ((120, 100), "a cat sitting on the couch"),  # no trailing period
    ],
)
def test_tiny_matches_transformers(mm_hf, mm_ours, tokenizer, size, caption):
    err, _, out = run_both(mm_hf[0], mm_ours, tokenizer, torch.randn(1, 3, *size), [caption])
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"
    assert out.pred_boxes.std() > 0.05 and torch.isfinite(out.logits).sum() > 0


def test_batch_of_two_with_padding_and_different_prompts(mm_hf, mm_ours, tokenizer):
    pixel_values = torch.randn(2, 3, 128, 150)
    pixel_mask = torch.zeros(2, 128, 150, dtype=torch.long)
    pixel_mask[0] = 1
    pixel_mask[1, :90, :117] = 1  # the second image is smaller, padded right and bottom
    pixel_values[1, :, 90:, :] = 0
    pixel_values[1, :, :, 117:] = 0
    err, _, _ = run_both(mm_hf[0], mm_ours, tokenizer, pixel_values, ["a cat . remote control .", "a dog on a leash ."],
                         pixel_mask)
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"


def test_five_feature_levels_as_swin_l(tokenizer, tmp_path):
    """Swin-L's layout (stages 1-4 read, one extra level) at the tiny size."""
    hf = make_mm_hf_model("tiny5", seed=3)
    ours = gdino.load_model(save_hf(hf, tokenizer, tmp_path / "tiny5"))
    assert ours.config.num_feature_levels == 5 and ours.config.swin.out_indices == (0, 1, 2, 3)
    err, _, _ = run_both(hf, ours, tokenizer, torch.randn(1, 3, 100, 131), ["a cat . remote control ."])
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"


# ------------------------------------------------------------------------------ key spellings and refusals

def edited_copy(directory, tmp_path, edit_state=None, edit_config=None):
    d = tmp_path / "edited"
    shutil.copytree(directory, d)
    if edit_state:
        state = load_file(str(d / "model.safetensors"))
        state = edit_state(state) or state
        save_file(state, str(d / "model.safetensors"))
    if edit_config:
        cfg = json.loads((d / "config.json").read_text())
        edit_config(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    return d


def same_outputs(a, b, tokenizer):
    enc = tokenizer(["a cat . remote control ."], return_tensors="pt")
    x = torch.randn(1, 3, 100, 131)
    with torch.no_grad():
        oa, ob = a(x, **enc), b(x, **enc)
    return torch.equal(oa.logits, ob.logits) and torch.equal(oa.pred_boxes, ob.pred_boxes)


def test_decoder_spelling_of_the_heads_and_hub_share_flags_load(mm_hf, mm_ours, tokenizer, tmp_path):
    """`model.decoder.bbox_embed.N.*` / `model.decoder.class_embed.N.bias` instead of the top-level names, and a
    config.json with the share flags at transformers' defaults (True), as converted hub files have them."""
    def to_decoder_names(state):
        return {re.sub(r"^(bbox_embed|class_embed)\.", r"model.decoder.\1.", k): v for k, v in state.items()}

    def hub_flags(cfg):
        cfg["decoder_bbox_embed_share"] = cfg["decoder_cls_embed_share"] = True

    d = edited_copy(mm_hf[1], tmp_path, to_decoder_names, hub_flags)
    assert any(k.startswith("model.decoder.bbox_embed.2.") for k in load_file(str(d / "model.safetensors")))
    assert same_outputs(gdino.load_model(d), mm_ours, tokenizer)


def test_in_memory_state_dict_with_both_spellings_loads(mm_hf, mm_ours, tokenizer, tmp_path):
    """hf.state_dict() holds every head twice (top level and the decoder's copy) and transformers 5's in-memory
    Swin names: equal copies are one tensor to us."""
    hf, directory = mm_hf
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    assert "model.decoder.class_embed.2.bias" in state and "class_embed.2.bias" in state
    d = edited_copy(directory, tmp_path, lambda _: state)
    assert same_outputs(gdino.load_model(d), mm_ours, tokenizer)


def test_both_spellings_must_agree(mm_hf, tmp_path):
    def add_different_decoder_copy(state):
        state["model.decoder.class_embed.1.bias"] = state["class_embed.1.bias"] + 1
    with pytest.raises(WeightsError, match="differs from another copy of class_embed.1.bias"):
        gdino.load_model(edited_copy(mm_hf[1], tmp_path, add_different_decoder_copy))


def test_identical_per_layer_heads_are_refused(mm_hf, tmp_path):
    def copy_layer_0(state):
        for key in [k for k in state if k.startswith(("bbox_embed.0.", "class_embed.0."))]:
            for i in (1, 2):
                state[key.replace(".0.", f".{i}.", 1)] = state[key].clone()
    with pytest.raises(WeightsError, match=r"box head of decoder layer\(s\) \[1, 2\] is identical to layer 0's"):
        gdino.load_model(edited_copy(mm_hf[1], tmp_path, copy_layer_0))


def test_missing_per_layer_heads_are_refused(mm_hf, tmp_path):
    """transformers would fill layers 1.. with layer 0's heads without a word."""
    def keep_layer_0_only(state):
        return {k: v for k, v in state.items() if not re.match(r"(bbox|class)_embed\.[12]\.", k)}
    with pytest.raises(WeightsError, match=r"no box head for decoder layer\(s\) \[1, 2\]"):
        gdino.load_model(edited_copy(mm_hf[1], tmp_path, keep_layer_0_only))


def test_detector_detects_classes(mm_ours):
    det = gdino.Detector(mm_ours)
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    classes = ["cat", "remote control", "dog"]
    dets = det.detect(image, classes=classes, box_threshold=0.0)
    assert len(dets) > 0 and set(dets.data["class_name"]) <= set(classes)
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, 2] <= 400).all() and (dets.xyxy[:, 3] <= 300).all()


def test_bfloat16(mm_hf):
    m = gdino.load_model(mm_hf[1], dtype=torch.bfloat16)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    enc = m.tokenizer(["a cat ."], return_tensors="pt")
    with torch.no_grad():
        out = m(torch.randn(1, 3, 100, 100), **enc)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.pred_boxes).all()


# ---------------------------------------------------------------------------------------------- full size

def same_rows(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """Do (Q, 4) a and b hold the same rows in any order (each row of one within tol of a row of the other)?"""
    d = torch.cdist(a.double(), b.double(), p=float("inf"))
    return bool((d.amin(1) <= tol).all() and (d.amin(0) <= tol).all())


def compare_tie_aware(hf, ours, tokenizer, pixel_values, captions, pixel_mask, monkeypatch):
    """Our outputs against transformers' per query, and the check that holds even where top-k query selection
    breaks a float32 tie the other way: per image the same set of proposals is selected, and our decoder, fed
    transformers' selected reference boxes, gives every query's logits and box. Returns (direct, fed) per-query
    errors (B, Q)."""
    enc = tokenizer(captions, padding="longest", return_tensors="pt")
    with torch.no_grad():
        ref = hf(pixel_values=pixel_values, pixel_mask=pixel_mask, **enc)
    real = model_module.select_queries
    selected = []

    def run(replace_with=None):
        def select(*args, **kwargs):
            selected.append(real(*args, **kwargs))
            return selected[-1] if replace_with is None else replace_with
        monkeypatch.setattr(model_module, "select_queries", select)
        with torch.no_grad():
            out = ours(pixel_values, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], pixel_mask)
        monkeypatch.setattr(model_module, "select_queries", real)
        return per_query_error(ref.logits, ref.pred_boxes, out.logits, out.pred_boxes)

    direct = run()
    for b in range(pixel_values.shape[0]):
        assert same_rows(selected[0][b], ref.init_reference_points[b], 1e-4), f"image {b}: another proposal set"
    fed = run(ref.init_reference_points)
    return direct, fed


@pytest.mark.parametrize("size, tol", [("tiny", 1e-4), ("swin_t", 1e-3), ("swin_b", 1e-3), ("swin_l", 1e-3)])
def test_matches_transformers_per_query_at_every_size(size, tol, tmp_path, monkeypatch):
    """MM-Grounding-DINO tiny's, base's and large's architectures (Swin-T / B / L, BERT-base, 6+6 layers,
    900 queries; Swin-L with five feature levels) and the unit-test size, random weights with every parameter
    perturbed, saved with save_pretrained: a batch of two odd-sized images, the second padded, different prompts."""
    tokenizer = make_tokenizer()
    hf = make_mm_hf_model(size, seed=1)
    ours = gdino.load_model(save_hf(hf, tokenizer, tmp_path / size))
    if size != "tiny":
        assert ours.config == gdino.preset(f"mm_{size}")
    h, w = (101, 131) if size == "tiny" else (203, 267)  # odd, and not a multiple of any window
    pixel_values = torch.randn(2, 3, h, w)
    pixel_mask = torch.ones(2, h, w, dtype=torch.long)
    pixel_mask[1, h * 3 // 4:, :] = 0
    pixel_mask[1, :, w * 3 // 4:] = 0
    pixel_values[1] *= pixel_mask[1]
    direct, fed = compare_tie_aware(hf, ours, tokenizer, pixel_values,
                                    ["a cat . remote control .", "a dog on a leash . red truck ."], pixel_mask,
                                    monkeypatch)
    print(f"mm {size}: {fraction_within(direct, tol):.4f} of queries within {tol:g} directly (worst "
          f"{direct.max().item():.1e}); fed transformers' references: worst {fed.max().item():.1e}")
    assert fraction_within(fed, tol) == 1.0, f"worst query error {fed.max().item():.2e}"
    assert fraction_within(direct, tol) >= 0.98
