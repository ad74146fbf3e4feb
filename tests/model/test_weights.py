"""load_model: the transformers layout (hub and in-memory names), the original .pth layout, strict
loading, and one clear error per broken input."""

import json
import shutil

import pytest
import torch
from compare import fraction_within, per_query_error
from safetensors.torch import load_file, save_file
from tiny_models import hub_state_to_original

import gdino
from gdino import WeightsError


def outputs(model, tokenizer, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, 100, 131, generator=g)
    enc = tokenizer(["a cat . remote control ."], return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=x, **enc)  # keywords: transformers orders token_type_ids before attention_mask
    return out.logits, out.pred_boxes


def assert_same_as_oracle(hf, ours, tokenizer):
    ref = outputs(hf, tokenizer)
    got = outputs(ours, tokenizer)
    err = per_query_error(ref[0], ref[1], got[0], got[1])
    assert fraction_within(err, 1e-4) == 1.0, f"worst query error {err.max().item():.2e}"


def bert_dir(tiny_hf, tokenizer, tmp_path):
    """A text-encoder directory (BERT config.json + tokenizer), as bert-base-uncased's would be."""
    hf, _ = tiny_hf
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(hf.config.text_config.to_json_string())
    tokenizer.save_pretrained(d)
    return d


def test_loaded_model_is_eval_and_frozen(tiny_ours):
    assert not tiny_ours.training
    assert not any(p.requires_grad for p in tiny_ours.parameters())
    assert tiny_ours.tokenizer("a cat .")["input_ids"] == [101, 1000, 1001, 1012, 102]


def test_hub_layout_file_uses_hub_names(tiny_hf):
    keys = set(load_file(str(tiny_hf[1] / "model.safetensors")))
    assert any(".encoder.layers.0.blocks.0.attention.self.query.weight" in k for k in keys)


def test_in_memory_names_of_transformers_5_load_too(tiny_hf, tokenizer, tmp_path):
    hf, directory = tiny_hf
    d = tmp_path / "inmem"
    shutil.copytree(directory, d)
    state = {k: v.clone() for k, v in hf.state_dict().items()}  # tied box-head copies saved as copies
    assert any(".swin.encoder." in k and ".attention.q_proj." in k for k in state)  # the renamed spelling
    (d / "model.safetensors").unlink()
    save_file(state, str(d / "model.safetensors"))
    assert_same_as_oracle(hf, gdino.load_model(d), tokenizer)


def test_pytorch_model_bin_loads(tiny_hf, tokenizer, tmp_path):
    hf, directory = tiny_hf
    d = tmp_path / "bin"
    shutil.copytree(directory, d)
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    assert_same_as_oracle(hf, gdino.load_model(d), tokenizer)


@pytest.mark.parametrize("module_prefix", [False, True])
def test_original_pth_layout(tiny_hf, tokenizer, tmp_path, module_prefix):
    hf, directory = tiny_hf
    state = hub_state_to_original(load_file(str(directory / "model.safetensors")), hf.config.decoder_layers,
                                  module_prefix=module_prefix)
    assert "transformer.encoder.text_layers.0.self_attn.in_proj_weight" in {k.removeprefix("module.") for k in state}
    path = tmp_path / "groundingdino_tiny.pth"
    torch.save({"model": state, "optimizer": None, "epoch": 3}, path)
    ours = gdino.load_model(path, text_encoder=bert_dir(tiny_hf, tokenizer, tmp_path))
    assert ours.config == gdino.load_model(directory).config  # every size inferred from the shapes
    assert_same_as_oracle(hf, ours, tokenizer)


def test_dtype_and_device(tiny_hf):
    m = gdino.load_model(tiny_hf[1], dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    enc = m.tokenizer(["a cat ."], return_tensors="pt")
    with torch.no_grad():
        out = m(torch.randn(1, 3, 100, 100), **enc)
    assert out.logits.dtype == torch.bfloat16
    assert out.pred_boxes.dtype == torch.float32 and torch.isfinite(out.pred_boxes).all()  # geometry stays float32


# ------------------------------------------------------------------------------------ bad inputs

def broken_copy(directory, tmp_path, edit):
    d = tmp_path / "broken"
    shutil.copytree(directory, d)
    state = load_file(str(d / "model.safetensors"))
    edit(state)
    save_file(state, str(d / "model.safetensors"))
    return d


def test_missing_tensor_is_named(tiny_hf, tmp_path):
    key = "model.decoder.layers.1.fc2.weight"
    d = broken_copy(tiny_hf[1], tmp_path, lambda s: s.pop(key))
    with pytest.raises(WeightsError, match=r"missing: transformer\.decoder\.layers\.1\.linear2\.weight"):
        gdino.load_model(d)


def test_wrong_shape_is_named(tiny_hf, tmp_path):
    key = "model.enc_output.weight"
    d = broken_copy(tiny_hf[1], tmp_path, lambda s: s.__setitem__(key, torch.zeros(3, 3)))
    with pytest.raises(WeightsError, match=r"shape: transformer\.enc_output\.weight: checkpoint \(3, 3\)"):
        gdino.load_model(d)


def test_unknown_key_is_named(tiny_hf, tmp_path):
    d = broken_copy(tiny_hf[1], tmp_path, lambda s: s.__setitem__("model.something_new.weight", torch.zeros(2)))
    with pytest.raises(WeightsError, match=r"model\.something_new\.weight"):
        gdino.load_model(d)


def test_untied_box_heads_are_refused(tiny_hf, tmp_path):
    def add_different_copy(s):
        s["bbox_embed.1.layers.0.weight"] = s["bbox_embed.0.layers.0.weight"] + 1
    d = broken_copy(tiny_hf[1], tmp_path, add_different_copy)
    with pytest.raises(WeightsError, match="differs from another copy"):
        gdino.load_model(d)


def test_truncated_file(tiny_hf, tmp_path):
    d = tmp_path / "trunc"
    shutil.copytree(tiny_hf[1], d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        gdino.load_model(d)


def test_truncated_pth(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"model": {"a": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        gdino.load_model(path, text_encoder=tmp_path)


def test_pth_that_is_not_grounding_dino(tiny_hf, tokenizer, tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(4, 3, 3, 3)}}, path)
    with pytest.raises(WeightsError, match="not a Grounding DINO checkpoint"):
        gdino.load_model(path, text_encoder=bert_dir(tiny_hf, tokenizer, tmp_path))


def test_missing_files_and_dirs(tiny_hf, tmp_path):
    with pytest.raises(WeightsError, match="checkpoint file not found"):
        gdino.load_model(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="neither a local directory"):
        gdino.load_model(str(tmp_path / "no" / "such" / "dir"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        gdino.load_model(empty)
    d = tmp_path / "noweights"
    shutil.copytree(tiny_hf[1], d)
    (d / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="no model.safetensors or pytorch_model.bin"):
        gdino.load_model(d)


def test_other_model_type_is_refused(tiny_hf, tmp_path):
    d = tmp_path / "detr"
    shutil.copytree(tiny_hf[1], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "detr"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="'detr' model, not grounding-dino"):
        gdino.load_model(d)


def test_unreachable_hub_id_says_how_to_pass_a_local_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    with pytest.raises(WeightsError, match=r"could not get 'IDEA-Research/grounding-dino-tiny'.*local directory"):
        gdino.load_model("IDEA-Research/grounding-dino-tiny")
    with pytest.raises(WeightsError, match=r"could not get 'groundingdino_swint_ogc.pth' from 'ShilongLiu/GroundingDINO'"):
        gdino.load_model("ShilongLiu/GroundingDINO/groundingdino_swint_ogc.pth")
    # the default text encoder of an original checkpoint is also fetched from the hub
    path = tmp_path / "x.pth"
    torch.save({"model": {}}, path)
    with pytest.raises(WeightsError, match="could not get 'bert-base-uncased'"):
        gdino.load_model(path)
