"""A saved transformers MM-Grounding-DINO written as mmdetection's `.pth` state dict, independently of gdino.

The rules are transformers' convert_mm_grounding_dino_to_hf.py (ORIGINAL_TO_CONVERTED_KEY_MAPPING and
preprocess_old_state) read in the other direction, so that the tests do not reuse gdino's own mapping to write
the file gdino then reads. mmdetection's files also carry tensors the model does not use (the Swin relative
position index, BERT's position_ids, the denoising label embedding, LLMDet's language-model branch): added here
with random values, so that the loader has to drop them.
"""

from __future__ import annotations

import re

import torch

_SWIN = r"model\.backbone\.conv_encoder\.model\.(?:swin\.)?"

# (hub pattern, mmdetection replacement), re.fullmatch, first match wins; q/k/v and the heads are handled apart.
_RULES: list[tuple[str, str]] = [
    (_SWIN + r"embeddings\.patch_embeddings\.projection\.(.*)", r"backbone.patch_embed.projection.\1"),
    (_SWIN + r"embeddings\.norm\.(.*)", r"backbone.patch_embed.norm.\1"),
    (_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.(.*)", r"backbone.stages.\1.blocks.\2.norm1.\3"),
    (_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_after\.(.*)", r"backbone.stages.\1.blocks.\2.norm2.\3"),
    (_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.relative_position_bias_table",
     r"backbone.stages.\1.blocks.\2.attn.w_msa.relative_position_bias_table"),
    (_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.output\.dense\.(.*)",
     r"backbone.stages.\1.blocks.\2.attn.w_msa.proj.\3"),
    (_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.intermediate\.dense\.(.*)",
     r"backbone.stages.\1.blocks.\2.ffn.layers.0.0.\3"),
    (_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.output\.dense\.(.*)", r"backbone.stages.\1.blocks.\2.ffn.layers.1.\3"),
    (_SWIN + r"encoder\.layers\.(\d+)\.downsample\.(.*)", r"backbone.stages.\1.downsample.\2"),
    (r"model\.text_backbone\.(.*)", r"language_model.language_backbone.body.model.\1"),
    (r"model\.text_projection\.(.*)", r"text_feat_map.\1"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.vision_param", r"encoder.fusion_layers.\1.gamma_v"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.text_param", r"encoder.fusion_layers.\1.gamma_l"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.layer_norm_vision\.(.*)", r"encoder.fusion_layers.\1.layer_norm_v.\2"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.layer_norm_text\.(.*)", r"encoder.fusion_layers.\1.layer_norm_l.\2"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.attn\.vision_proj\.(.*)", r"encoder.fusion_layers.\1.attn.v_proj.\2"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.attn\.text_proj\.(.*)", r"encoder.fusion_layers.\1.attn.l_proj.\2"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.attn\.values_vision_proj\.(.*)",
     r"encoder.fusion_layers.\1.attn.values_v_proj.\2"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.attn\.values_text_proj\.(.*)",
     r"encoder.fusion_layers.\1.attn.values_l_proj.\2"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.attn\.out_vision_proj\.(.*)", r"encoder.fusion_layers.\1.attn.out_v_proj.\2"),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.attn\.out_text_proj\.(.*)", r"encoder.fusion_layers.\1.attn.out_l_proj.\2"),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.self_attn\.(.*)", r"encoder.layers.\1.self_attn.\2"),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.self_attn_layer_norm\.(.*)", r"encoder.layers.\1.norms.0.\2"),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.final_layer_norm\.(.*)", r"encoder.layers.\1.norms.1.\2"),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.fc1\.(.*)", r"encoder.layers.\1.ffn.layers.0.0.\2"),
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.fc2\.(.*)", r"encoder.layers.\1.ffn.layers.1.\2"),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.self_attn\.out_proj\.(.*)",
     r"encoder.text_layers.\1.self_attn.attn.out_proj.\2"),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.layer_norm_before\.(.*)", r"encoder.text_layers.\1.norms.0.\2"),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.layer_norm_after\.(.*)", r"encoder.text_layers.\1.norms.1.\2"),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.fc1\.(.*)", r"encoder.text_layers.\1.ffn.layers.0.0.\2"),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.fc2\.(.*)", r"encoder.text_layers.\1.ffn.layers.1.\2"),
    (r"model\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.(.*)", r"decoder.layers.\1.self_attn.attn.out_proj.\2"),
    (r"model\.decoder\.layers\.(\d+)\.self_attn_layer_norm\.(.*)", r"decoder.layers.\1.norms.0.\2"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_text\.out_proj\.(.*)", r"decoder.layers.\1.cross_attn_text.attn.out_proj.\2"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_text_layer_norm\.(.*)", r"decoder.layers.\1.norms.1.\2"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn\.(.*)", r"decoder.layers.\1.cross_attn.\2"),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.(.*)", r"decoder.layers.\1.norms.2.\2"),
    (r"model\.decoder\.layers\.(\d+)\.fc1\.(.*)", r"decoder.layers.\1.ffn.layers.0.0.\2"),
    (r"model\.decoder\.layers\.(\d+)\.fc2\.(.*)", r"decoder.layers.\1.ffn.layers.1.\2"),
    (r"model\.decoder\.layers\.(\d+)\.final_layer_norm\.(.*)", r"decoder.layers.\1.norms.3.\2"),
    (r"model\.decoder\.layer_norm\.(.*)", r"decoder.norm.\1"),
    (r"model\.decoder\.reference_points_head\.(.*)", r"decoder.ref_point_head.\1"),
    (r"model\.level_embed", r"level_embed"),
    (r"model\.query_position_embeddings\.(.*)", r"query_embedding.\1"),
    (r"model\.enc_output\.(.*)", r"memory_trans_fc.\1"),
    (r"model\.enc_output_norm\.(.*)", r"memory_trans_norm.\1"),
]

# q/k/v projections that mmdetection keeps fused: (hub pattern, fused mmdetection name, the group naming the slot)
_FUSED = [
    (_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)",
     r"backbone.stages.\1.blocks.\2.attn.w_msa.qkv.\4", 3),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.self_attn\.(query|key|value)\.(weight|bias)",
     r"encoder.text_layers.\1.self_attn.attn.in_proj_\3", 2),
    (r"model\.decoder\.layers\.(\d+)\.self_attn\.(query|key|value)\.(weight|bias)",
     r"decoder.layers.\1.self_attn.attn.in_proj_\3", 2),
    (r"model\.decoder\.layers\.(\d+)\.encoder_attn_text\.(query|key|value)\.(weight|bias)",
     r"decoder.layers.\1.cross_attn_text.attn.in_proj_\3", 2),
]


def swin_to_unfold_order(t: torch.Tensor) -> torch.Tensor:
    """Undo transformers' correct_unfold_reduction_order / correct_unfold_norm_order on the last dimension:
    Swin's [x0, x1, x2, x3] blocks of C channels -> mmcv's nn.Unfold order (channel-major, 4 positions each)."""
    *lead, four_c = t.shape
    blocks = t.reshape(*lead, 4, four_c // 4)[..., [0, 2, 1, 3], :]  # the swap of x1 and x2 is its own inverse
    return blocks.transpose(-1, -2).reshape(*lead, four_c)


def hub_state_to_mmdet(state: dict[str, torch.Tensor], decoder_layers: int, num_convs: int,
                       window_size: int = 7, extras: bool = True) -> dict[str, torch.Tensor]:
    """A saved MMGroundingDinoForObjectDetection (its model.safetensors) as mmdetection's `state_dict`.

    num_convs: the neck's 1x1 convs (len(out_features)); input projections past them are neck.extra_convs.
    Heads: decoder layer i -> bbox_head.{cls,reg}_branches.i, the encoder's -> branch `decoder_layers`;
    class biases get mmdetection's shape [1].
    """
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in state.items():
        if key.startswith("model.decoder.") and re.match(r"model\.decoder\.(bbox|class)_embed\.", key):
            continue  # the decoder's copies of the heads; mmdetection stores each head once
        if re.fullmatch(_SWIN + r"layernorm\..*", key):
            continue  # Swin's final norm, which the detector never uses and mmdetection does not have
        m = re.fullmatch(r"class_embed\.(\d+)\.bias", key)
        if m:
            out[f"bbox_head.cls_branches.{m[1]}.bias"] = t.reshape(1)
            continue
        m = re.fullmatch(r"bbox_embed\.(\d+)\.layers\.(\d)\.(.*)", key)
        if m:
            out[f"bbox_head.reg_branches.{m[1]}.{2 * int(m[2])}.{m[3]}"] = t
            continue
        if key == "model.encoder_output_class_embed.bias":
            out[f"bbox_head.cls_branches.{decoder_layers}.bias"] = t.reshape(1)
            continue
        m = re.fullmatch(r"model\.encoder_output_bbox_embed\.layers\.(\d)\.(.*)", key)
        if m:
            out[f"bbox_head.reg_branches.{decoder_layers}.{2 * int(m[1])}.{m[2]}"] = t
            continue
        m = re.fullmatch(_SWIN + r"hidden_states_norms\.stage(\d)\.(.*)", key)
        if m:
            out[f"backbone.norm{int(m[1]) - 1}.{m[2]}"] = t
            continue
        m = re.fullmatch(r"model\.input_proj_vision\.(\d+)\.([01])\.(.*)", key)
        if m:
            level, part = int(m[1]), ("conv", "gn")[int(m[2])]
            name = f"neck.convs.{level}" if level < num_convs else f"neck.extra_convs.{level - num_convs}"
            out[f"{name}.{part}.{m[3]}"] = t
            continue
        for pattern, target, slot in _FUSED:
            m = re.fullmatch(pattern, key)
            if m:
                fused.setdefault(m.expand(target), {})[m[slot]] = t
                break
        else:
            for pattern, target in _RULES:
                m = re.fullmatch(pattern, key)
                if m:
                    new = m.expand(target)
                    out[new] = swin_to_unfold_order(t) if ".downsample." in new else t
                    break
            else:
                raise AssertionError(f"no mmdetection name for {key}")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    if extras:
        g = torch.Generator().manual_seed(0)
        d_model = out["query_embedding.weight"].shape[1]
        for key in [k for k in out if k.endswith("attn.w_msa.relative_position_bias_table")]:
            out[key.replace("relative_position_bias_table", "relative_position_index")] = torch.randint(
                0, (2 * window_size - 1) ** 2, (window_size**2, window_size**2), generator=g)
        positions = out["language_model.language_backbone.body.model.embeddings.position_embeddings.weight"].shape[0]
        out["language_model.language_backbone.body.model.embeddings.position_ids"] = torch.arange(positions)[None]
        out["dn_query_generator.label_embedding.weight"] = torch.randn(256, d_model, generator=g)
    return out


def llmdet_extras(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LLMDet's `.pth` adds its training-time language-model branch; transformers' conversion drops these."""
    g = torch.Generator().manual_seed(1)
    extra = {"lmm.model.embed_tokens.weight": torch.randn(10, 4, generator=g),
             "connector.proj.weight": torch.randn(4, 4, generator=g),
             "region_connector.proj.weight": torch.randn(4, 4, generator=g),
             "ref_point_head.layers.0.weight": torch.randn(4, 4, generator=g),
             "image_seperate.weight": torch.randn(1, 4, generator=g)}
    return {**state, **extra}
