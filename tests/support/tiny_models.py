"""Random transformers Grounding DINO models and a tokenizer, built inside the tests (never downloaded).

transformers' `GroundingDinoForObjectDetection` is our oracle: the tests build one at random, save it
with `save_pretrained` in the real hub layout, load it with `gdino.load_model` and compare outputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

# bert-base-uncased's special ids, which the model's phrase splitting depends on
SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
WORDS = ["a", "cat", "dog", "remote", "control", "person", "car", "the", "on", "red", "couch", "sitting",
         "##s", "man", "shirt", "in", "leash", "of", "and", "bird", "truck", "with", ",", "green", "big",
         "blue", "square", "circle", "triangle"]  # appended: earlier words keep their ids
VOCAB_SIZE = 1100


def make_tokenizer():
    from transformers import BertTokenizer

    table = {i: f"[unused{i}]" for i in range(VOCAB_SIZE)}
    for token, i in SPECIAL_IDS.items():
        table[i] = token
    free = (i for i in range(1000, VOCAB_SIZE) if i not in SPECIAL_IDS.values())
    for word, i in zip(WORDS, free, strict=False):
        table[i] = word
    # transformers 5's BertTokenizer takes the table itself as `vocab=` (it ignores vocab_file=)
    return BertTokenizer(vocab={token: i for i, token in table.items()})


def _hf_parts(size: str):
    """(SwinConfig, BertConfig, other config fields) of a size: "tiny" (the unit-test size), "tiny5" (tiny with
    Swin-L's five feature levels: stages 1-4 plus one extra), "swin_t", "swin_b", "swin_l" (MM-Grounding-DINO
    large: five levels)."""
    from transformers import BertConfig, SwinConfig

    if size in ("tiny", "tiny5"):
        stages = ["stage1", "stage2", "stage3", "stage4"] if size == "tiny5" else ["stage2", "stage3", "stage4"]
        swin = SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7,
                          out_features=stages)
        bert = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=300)
        kw = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                  num_queries=30, num_feature_levels=5 if size == "tiny5" else 4)
    elif size in ("swin_t", "swin_b"):
        big = size == "swin_b"
        swin = SwinConfig(embed_dim=128 if big else 96, depths=[2, 2, 18, 2] if big else [2, 2, 6, 2],
                          num_heads=[4, 8, 16, 32] if big else [3, 6, 12, 24], window_size=12 if big else 7,
                          out_features=["stage2", "stage3", "stage4"])
        bert = BertConfig()  # bert-base-uncased's shape
        kw = {}
    elif size == "swin_l":
        swin = SwinConfig(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
        bert = BertConfig()
        kw = dict(num_feature_levels=5)
    else:
        raise ValueError(size)
    return swin, bert, kw


def hf_config(size: str = "tiny", **overrides):
    from transformers import GroundingDinoConfig

    swin, bert, kw = _hf_parts(size)
    kw.update(overrides)
    return GroundingDinoConfig(backbone_config=swin, text_config=bert, **kw)


def make_hf_model(size: str = "tiny", seed: int = 0, **overrides):
    """A random GroundingDinoForObjectDetection, perturbed so layer-scale gammas (1e-4) and
    zero-initialised layers do not hide any path."""
    from transformers import GroundingDinoForObjectDetection

    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(hf_config(size, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.2 if name.endswith(("vision_param", "text_param")) else 0.02
            p.add_(scale * torch.randn_like(p))
    return model


def make_mm_hf_model(size: str = "tiny", seed: int = 0, **overrides):
    """A random MMGroundingDinoForObjectDetection whose every parameter is perturbed, so that each decoder
    layer's box head and class bias differ (as in the published checkpoints) and no path is hidden.

    The *_share flags are off: with them on (transformers' default), __init__ makes layers 1..N-1 the very
    same tensors as layer 0, and no perturbation could separate them."""
    from transformers import MMGroundingDinoConfig, MMGroundingDinoForObjectDetection

    swin, bert, kw = _hf_parts(size)
    if size.startswith("tiny"):
        kw["decoder_layers"] = 3  # a middle layer's own box head is then used too (gdino.modeling.config.MM_TINY)
    kw.update(decoder_bbox_embed_share=False, decoder_cls_embed_share=False)
    kw.update(overrides)
    torch.manual_seed(seed)
    model = MMGroundingDinoForObjectDetection(MMGroundingDinoConfig(backbone_config=swin, text_config=bert, **kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("vision_param", "text_param")):
                scale = 0.2
            elif name.endswith("class_embed.bias") or re.search(r"class_embed\.\d+\.bias$", name):
                scale = 0.5  # the class biases (about -4.6 at init) move the scores visibly
            else:
                scale = 0.02
            p.add_(scale * torch.randn_like(p))
    return model


def save_hf(model, tokenizer, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# ----------------------------------------------- the original (.pth) layout, written independently
# These rules come from transformers' convert_grounding_dino_to_hf.py, read in the other direction,
# so that the test does not reuse gdino's own mapping to produce the file gdino then reads.

_SWIN = [
    (r"model\.backbone\.conv_encoder\.model\.embeddings\.patch_embeddings\.projection\.", "backbone.0.patch_embed.proj."),
    (r"model\.backbone\.conv_encoder\.model\.embeddings\.norm\.", "backbone.0.patch_embed.norm."),
    (r"model\.backbone\.conv_encoder\.model\.encoder\.layers\.", "backbone.0.layers."),
    (r"model\.backbone\.conv_encoder\.model\.hidden_states_norms\.stage2\.", "backbone.0.norm1."),
    (r"model\.backbone\.conv_encoder\.model\.hidden_states_norms\.stage3\.", "backbone.0.norm2."),
    (r"model\.backbone\.conv_encoder\.model\.hidden_states_norms\.stage4\.", "backbone.0.norm3."),
    (r"\.layernorm_before\.", ".norm1."), (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.self\.relative_position_bias_table", ".attn.relative_position_bias_table"),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"(blocks\.\d+)\.intermediate\.dense\.", r"\1.mlp.fc1."), (r"(blocks\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
]
_TRANSFORMER = [
    (r"model\.text_projection\.", "feat_map."),
    (r"model\.input_proj_vision\.", "input_proj."), (r"model\.level_embed", "transformer.level_embed"),
    (r"model\.query_position_embeddings\.", "transformer.tgt_embed."),
    (r"model\.enc_output\.", "transformer.enc_output."), (r"model\.enc_output_norm\.", "transformer.enc_output_norm."),
    (r"model\.encoder_output_bbox_embed\.", "transformer.enc_out_bbox_embed."),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.self_attn_layer_norm\.", r"transformer.encoder.layers.\1.norm1."),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.final_layer_norm\.", r"transformer.encoder.layers.\1.norm2."),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.fc(\d)\.", r"transformer.encoder.layers.\1.linear\2."),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.", r"transformer.encoder.layers.\1."),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.layer_norm_before\.", r"transformer.encoder.text_layers.\1.norm1."),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.layer_norm_after\.", r"transformer.encoder.text_layers.\1.norm2."),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.fc(\d)\.", r"transformer.encoder.text_layers.\1.linear\2."),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.", r"transformer.encoder.text_layers.\1."),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.", r"transformer.encoder.fusion_layers.\1."),
    (r"layer_norm_vision", "layer_norm_v"), (r"layer_norm_text", "layer_norm_l"),
    (r"vision_param", "gamma_v"), (r"text_param", "gamma_l"),
    (r"attn\.vision_proj", "attn.v_proj"), (r"attn\.text_proj", "attn.l_proj"),
    (r"attn\.values_vision_proj", "attn.values_v_proj"), (r"attn\.values_text_proj", "attn.values_l_proj"),
    (r"attn\.out_vision_proj", "attn.out_v_proj"), (r"attn\.out_text_proj", "attn.out_l_proj"),
    (r"model\.decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_text_layer_norm\.", r"transformer.decoder.layers.\1.catext_norm."),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_text\.", r"transformer.decoder.layers.\1.ca_text."),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn\.", r"transformer.decoder.layers.\1.cross_attn."),
    (r"model\.decoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (r"model\.decoder\.layers\.(\d+)\.fc(\d)\.", r"transformer.decoder.layers.\1.linear\2."),
    (r"model\.decoder\.layers\.", "transformer.decoder.layers."),
    (r"model\.decoder\.layer_norm\.", "transformer.decoder.norm."),
    (r"model\.decoder\.reference_points_head\.", "transformer.decoder.ref_point_head."),
]


def hub_state_to_original(state: dict[str, torch.Tensor], num_decoder_layers: int,
                          module_prefix: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a saved transformers checkpoint written as an original .pth state dict:
    merged Swin qkv, merged in_proj of the text/decoder attentions, the shared box head under both of
    its original names, the BERT pooler and label_enc the original files carry."""
    out: dict[str, torch.Tensor] = {}
    merged: dict[str, dict[str, torch.Tensor]] = {}
    box_head = {}
    for key, t in state.items():
        if key.endswith("relative_position_index") or ".swin.layernorm." in key or "swin.layernorm" in key:
            continue
        m = re.fullmatch(r"(?:model\.decoder\.)?bbox_embed\.\d+\.(.*)", key)
        if m:
            box_head[m[1]] = t
            continue
        if key.startswith("model.text_backbone."):
            out["bert." + key[len("model.text_backbone."):]] = t
            continue
        new = key
        is_swin = key.startswith("model.backbone.")
        for pattern, repl in _SWIN if is_swin else _TRANSFORMER:
            new = re.sub(pattern, repl, new)
        m = re.fullmatch(r"(.*)\.attention\.self\.(query|key|value)\.(weight|bias)", new)
        if is_swin and m:  # Swin: qkv
            merged.setdefault(f"{m[1]}.attn.qkv.{m[3]}", {})[m[2]] = t
            continue
        m = re.fullmatch(r"(transformer\.(?:encoder\.text_layers|decoder\.layers)\.\d+\.(?:self_attn|ca_text))"
                         r"\.(query|key|value)\.(weight|bias)", new)
        if m:  # nn.MultiheadAttention: in_proj
            merged.setdefault(f"{m[1]}.in_proj_{m[3]}", {})[m[2]] = t
            continue
        assert new != key, f"no rule for {key}"
        out[new] = t
    for name, parts in merged.items():
        out[name] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    for i in range(num_decoder_layers):
        for rest, t in box_head.items():
            out[f"bbox_embed.{i}.{rest}"] = t
            out[f"transformer.decoder.bbox_embed.{i}.{rest}"] = t
    hidden = out["bert.embeddings.word_embeddings.weight"].shape[1]
    out["bert.pooler.dense.weight"] = torch.randn(hidden, hidden)
    out["bert.pooler.dense.bias"] = torch.randn(hidden)
    out["label_enc.weight"] = torch.randn(2001, out["feat_map.weight"].shape[0])
    if module_prefix:
        out = {f"module.{k}": v for k, v in out.items()}
    return out
