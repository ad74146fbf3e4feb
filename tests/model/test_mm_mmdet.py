"""MM-Grounding-DINO from mmdetection's `.pth` layout: a random transformers model saved with save_pretrained,
written again as mmdetection's state dict by tests/support/mmdet_layout.py (an independent inverse mapping), loaded with
gdino.load_model: the same tensors and outputs as the hub-layout load and as MMGroundingDinoForObjectDetection."""

import re

import pytest
import torch
import torch.nn.functional as F
from compare import fraction_within
from mmdet_layout import hub_state_to_mmdet, llmdet_extras
from safetensors.torch import load_file
from test_mm_parity import same_outputs
from test_parity import run_both
from tiny_models import make_mm_hf_model, save_hf

import gdino
from gdino import WeightsError
from gdino.modeling.config import MM_TINY


def write_mmdet(state: dict, path):
    """As mmengine saves a checkpoint: the weights under "state_dict", beside meta data."""
    torch.save({"meta": {"mmdet_version": "3.3.0", "epoch": 30}, "state_dict": state, "message_hub": {}}, path)
    return path


def text_encoder_dir(hf, tokenizer, directory):
    """The BERT directory (config.json + tokenizer) a `.pth` is loaded with: bert-base-uncased's, at tiny size."""
    directory.mkdir()
    (directory / "config.json").write_text(hf.config.text_config.to_json_string())
    tokenizer.save_pretrained(directory)
    return directory


class Saved:
    """One random oracle saved in both layouts, and gdino loads of each."""

    def __init__(self, size, seed, tokenizer, root):
        self.hf = make_mm_hf_model(size, seed=seed)
        self.hub_dir = save_hf(self.hf, tokenizer, root / "hub")
        self.hub_state = load_file(str(self.hub_dir / "model.safetensors"))
        c = self.hf.config
        self.mmdet_state = hub_state_to_mmdet(self.hub_state, c.decoder_layers, len(c.backbone_config.out_features),
                                              c.backbone_config.window_size)
        self.pth = write_mmdet(self.mmdet_state, root / "grounding_dino_swin-tiny_mm.pth")
        self.bert = text_encoder_dir(self.hf, tokenizer, root / "bert")

    def load(self, path=None):
        return gdino.load_model(path or self.pth, text_encoder=self.bert)


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    return Saved("tiny", 0, tokenizer, tmp_path_factory.mktemp("mm_mmdet"))


def assert_same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k])]
    assert not different, f"tensors that differ between the two loads: {different[:10]}"


def test_the_file_is_in_mmdetection_layout(saved):
    """Guards the test itself: the names, the fused projections, branch 6 (here 3), the [1]-shaped biases."""
    s = saved.mmdet_state
    layers = saved.hf.config.decoder_layers
    assert "backbone.stages.0.downsample.reduction.weight" in s and "backbone.stages.0.blocks.0.attn.w_msa.qkv.weight" in s
    assert "encoder.text_layers.0.self_attn.attn.in_proj_weight" in s
    assert "decoder.layers.0.cross_attn_text.attn.in_proj_weight" in s
    assert {f"bbox_head.cls_branches.{i}.bias" for i in range(layers + 1)} <= s.keys()
    assert f"bbox_head.reg_branches.{layers}.4.weight" in s and f"bbox_head.reg_branches.{layers + 1}.0.weight" not in s
    assert s["bbox_head.cls_branches.0.bias"].shape == (1,)
    assert "dn_query_generator.label_embedding.weight" in s
    assert not any(k.startswith(("model.", "transformer.", "bert.")) for k in s)
    # the permutation is not the identity: a file written without it would load into a different model
    hub = saved.hub_state["model.backbone.conv_encoder.model.encoder.layers.0.downsample.reduction.weight"]
    assert not torch.equal(hub, s["backbone.stages.0.downsample.reduction.weight"])


def test_mmdet_pth_loads_as_the_hub_layout_does(saved, tokenizer):
    ours = saved.load()
    hub = gdino.load_model(saved.hub_dir)
    assert ours.config == hub.config == MM_TINY  # family and every size from the tensors alone
    assert_same_tensors(ours, hub)
    assert same_outputs(ours, hub, tokenizer)
    assert ours.tokenizer("a cat .")["input_ids"] == [101, 1000, 1001, 1012, 102]


@pytest.mark.parametrize("size, caption", [((100, 131), "a cat . remote control ."),
                                           ((96, 160), "a cat . a dog . person . car . red truck .")])
def test_mmdet_pth_matches_transformers(saved, tokenizer, size, caption):
    err, _, out = run_both(saved.hf, saved.load(), tokenizer, torch.randn(1, 3, *size), [caption])
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"
    assert out.pred_boxes.std() > 0.05


def test_five_feature_levels_as_swin_l(tokenizer, tmp_path):
    """Swin-L's layout: backbone.norm0..3 read, neck.convs.0..3 plus neck.extra_convs.0 as the fifth level."""
    five = Saved("tiny5", 3, tokenizer, tmp_path)
    assert "backbone.norm0.weight" in five.mmdet_state and "neck.extra_convs.0.conv.weight" in five.mmdet_state
    assert "neck.convs.3.conv.weight" in five.mmdet_state
    ours = five.load()
    assert ours.config.num_feature_levels == 5 and ours.config.swin.out_indices == (0, 1, 2, 3)
    assert_same_tensors(ours, gdino.load_model(five.hub_dir))
    err, _, _ = run_both(five.hf, ours, tokenizer, torch.randn(1, 3, 100, 131), ["a cat . remote control ."])
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"


def test_llmdet_training_branch_is_dropped(saved, tokenizer, tmp_path):
    """LLMDet's files are mmdetection's layout plus its language-model branch (lmm, connector, ...)."""
    path = write_mmdet(llmdet_extras(saved.mmdet_state), tmp_path / "llmdet_tiny.pth")
    assert same_outputs(saved.load(path), saved.load(), tokenizer)


def test_patch_merging_order_against_an_unfold_merge(saved):
    """mmdetection's PatchMerging (mmcv) gathers 2x2 patches with nn.Unfold, then norm and reduction. The same
    merge written that way, with the file's own (unconverted) tensors, must equal our converted downsample."""
    ours = saved.load()
    s = saved.mmdet_state
    for stage, layer in enumerate(ours.backbone.layers):
        if layer.downsample is None:
            continue
        c = layer.downsample.norm.normalized_shape[0] // 4
        x = torch.randn(2, 6, 10, c)  # (B, H, W, C)
        unfolded = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).transpose(1, 2)  # (B, H/2*W/2, 4C)
        p = f"backbone.stages.{stage}.downsample."
        expected = F.layer_norm(unfolded, (4 * c,), s[p + "norm.weight"], s[p + "norm.bias"]) @ s[p + "reduction.weight"].T
        with torch.no_grad():
            got = layer.downsample(x).flatten(1, 2)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_idea_pth_path_is_unchanged(tiny_hf, tokenizer, tmp_path):
    """An IDEA-layout file (under "model") still reads as Grounding DINO, not MM."""
    from tiny_models import hub_state_to_original

    hf, directory = tiny_hf
    state = hub_state_to_original(load_file(str(directory / "model.safetensors")), hf.config.decoder_layers)
    path = tmp_path / "groundingdino.pth"
    torch.save({"model": state}, path)
    ours = gdino.load_model(path, text_encoder=text_encoder_dir(hf, tokenizer, tmp_path / "bert"))
    assert ours.config.family == "gdino" and ours.config == gdino.load_model(directory).config


# ------------------------------------------------------------------------------------------------ refusals

def edited(saved, tmp_path, edit):
    state = dict(saved.mmdet_state)
    state = edit(state) or state
    return write_mmdet(state, tmp_path / "edited.pth")


def test_truncated_file_is_refused(saved, tmp_path):
    path = tmp_path / "truncated.pth"
    path.write_bytes(saved.pth.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        saved.load(path)


def test_file_without_the_encoder_branch_is_refused(saved, tmp_path):
    layers = saved.hf.config.decoder_layers

    def drop_branch(state):
        return {k: v for k, v in state.items() if not re.match(rf"bbox_head\.(cls|reg)_branches\.{layers}\.", k)}
    with pytest.raises(WeightsError, match=rf"bbox_head branches \[0, 1, 2\]; it needs 0..{layers}"):
        saved.load(edited(saved, tmp_path, drop_branch))


def test_a_truncated_state_dict_names_what_is_missing(saved, tmp_path):
    """A state dict cut short (the last decoder layer's FFN gone) names the missing tensors."""
    def drop(state):
        return {k: v for k, v in state.items() if not k.startswith("decoder.layers.2.ffn.")}
    with pytest.raises(WeightsError, match=r"missing: transformer\.decoder\.layers\.2\.linear1\.bias"):
        saved.load(edited(saved, tmp_path, drop))


def test_plain_grounding_dino_in_mmdet_layout_is_refused(saved, tmp_path):
    """mmdetection's own Grounding DINO (no class-branch bias) is another head: refused, pointing elsewhere."""
    def drop_biases(state):
        return {k: v for k, v in state.items() if not k.startswith("bbox_head.cls_branches.")}
    with pytest.raises(WeightsError, match="without class-branch biases.*original .pth"):
        saved.load(edited(saved, tmp_path, drop_biases))


def test_learned_log_scale_is_refused(saved, tmp_path):
    """ContrastiveEmbed(log_scale=<float>) multiplies by a learned exp(scale): not the published head ('auto')."""
    def add_log_scale(state):
        state["bbox_head.cls_branches.0.log_scale"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"unrecognised key: bbox_head\.cls_branches\.0\.log_scale"):
        saved.load(edited(saved, tmp_path, add_log_scale))


def test_unknown_key_and_wrong_shape_are_named(saved, tmp_path):
    with pytest.raises(WeightsError, match=r"unrecognised key: neck\.something\.weight"):
        saved.load(edited(saved, tmp_path, lambda s: s.__setitem__("neck.something.weight", torch.zeros(1))))
    with pytest.raises(WeightsError, match=r"shape: transformer\.enc_output\.weight: checkpoint \(3, 3\)"):
        saved.load(edited(saved, tmp_path, lambda s: s.__setitem__("memory_trans_fc.weight", torch.zeros(3, 3))))


def test_identical_per_layer_heads_are_refused(saved, tmp_path):
    def copy_branch_0(state):
        for key in [k for k in state if k.startswith(("bbox_head.reg_branches.0.", "bbox_head.cls_branches.0."))]:
            state[key.replace("branches.0.", "branches.1.")] = state[key].clone()
    with pytest.raises(WeightsError, match=r"box head of decoder layer\(s\) \[1\] is identical to layer 0's"):
        saved.load(edited(saved, tmp_path, copy_branch_0))


def test_state_dict_that_is_not_tensors_is_refused(saved, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {"backbone.stages.0.x": "not a tensor"}}, path)
    with pytest.raises(WeightsError, match="does not hold a state dict of tensors"):
        saved.load(path)
