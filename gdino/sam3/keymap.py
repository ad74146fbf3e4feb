"""The official SAM 3 checkpoint (`sam3.pt`, the `sam3` package's names) -> transformers' `Sam3Model` names.

Facts read from both codebases (the official `sam3` 0.1.4 and transformers 5.25): the official model fuses
q, k and v into one projection (`qkv` in the ViT, `in_proj_*` in every `nn.MultiheadAttention`), where
transformers keeps three; the ViT's position table carries one extra (class token) row that the model never
uses; CLIP's text projection is stored transposed; the ViT's rotary tables (`freqs_cis`) are computed from
sizes, the point-prompt projections serve only point prompts, which transformers' image model lacks, and the
second feature pyramid (`sam2_convs`, in the released sam3.pt) serves the interactive tracker, not the detector.
Every other tensor maps one to one. `convert` refuses a checkpoint with a tensor it cannot place or a
model tensor it leaves unset: loading is strict.
"""

from __future__ import annotations

import re

import torch

# (official name pattern, transformers name) in order; the first pattern that matches decides. A None target
# drops the tensor (the reason is in the module docstring).
_TEXT = r"backbone\.language_backbone\.encoder\."  # the official CLIP text encoder's names begin so
_CLIP = "text_encoder.text_model."  # and transformers' CLIP text model's
_RULES: list[tuple[str, str | None]] = [
    # the ViT trunk
    (r"backbone\.vision_backbone\.trunk\.pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (r"backbone\.vision_backbone\.trunk\.patch_embed\.proj\.", "vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (r"backbone\.vision_backbone\.trunk\.ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (r"backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.freqs_cis$", None),
    (r"backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.layers.\1.layer_norm\2."),
    (r"backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.qkv\.", r"vision_encoder.backbone.layers.\1.attention.qkv."),
    (r"backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (r"backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.mlp\.", r"vision_encoder.backbone.layers.\1.mlp."),
    # the tracker's own feature pyramid (SAM 3's interactive head, gdino.sam.sam3), built beside the detector's
    (r"backbone\.vision_backbone\.sam2_convs\.", None),
    # the feature pyramid: per level, the up / down sampling convolutions, then a 1x1 and a 3x3 projection
    (r"backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2(_0)?\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (r"backbone\.vision_backbone\.convs\.(\d+)\.conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (r"backbone\.vision_backbone\.convs\.(\d+)\.conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    # the CLIP text encoder and its resizer to the detector's width
    (_TEXT + r"token_embedding\.", _CLIP + "embeddings.token_embedding."),
    (_TEXT + r"positional_embedding$", _CLIP + "embeddings.position_embedding.weight"),
    (_TEXT + r"ln_final\.", _CLIP + "final_layer_norm."),
    (_TEXT + r"text_projection$", "text_encoder.text_projection.weight"),
    (_TEXT + r"transformer\.resblocks\.(\d+)\.attn\.", _CLIP + r"encoder.layers.\1.self_attn."),
    (_TEXT + r"transformer\.resblocks\.(\d+)\.ln_(\d)\.", _CLIP + r"encoder.layers.\1.layer_norm\2."),
    (_TEXT + r"transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", _CLIP + r"encoder.layers.\1.mlp.fc1."),
    (_TEXT + r"transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", _CLIP + r"encoder.layers.\1.mlp.fc2."),
    (r"backbone\.language_backbone\.resizer\.", "text_projection."),
    # the exemplar (geometry) encoder
    (r"geometry_encoder\.points_(direct|pool|pos_enc)_project\.", None),
    (r"geometry_encoder\.encode\.(\d+)\.cross_attn_image\.", r"geometry_encoder.layers.\1.cross_attn."),
    (r"geometry_encoder\.encode\.(\d+)\.self_attn\.", r"geometry_encoder.layers.\1.self_attn."),
    (r"geometry_encoder\.encode\.(\d+)\.linear(\d)\.", r"geometry_encoder.layers.\1.mlp.fc\2."),
    (r"geometry_encoder\.encode\.(\d+)\.norm(\d)\.", r"geometry_encoder.layers.\1.layer_norm\2."),
    (r"geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    (r"geometry_encoder\.", "geometry_encoder."),  # the box projections, label and class embeddings keep their names
    # the DETR encoder
    (r"transformer\.encoder\.layers\.(\d+)\.cross_attn_image\.", r"detr_encoder.layers.\1.cross_attn."),
    (r"transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"detr_encoder.layers.\1.self_attn."),
    (r"transformer\.encoder\.layers\.(\d+)\.linear(\d)\.", r"detr_encoder.layers.\1.mlp.fc\2."),
    (r"transformer\.encoder\.layers\.(\d+)\.norm(\d)\.", r"detr_encoder.layers.\1.layer_norm\2."),
    # the DETR decoder: its MLP heads number their layers from 1
    (r"transformer\.decoder\.presence_token_head\.layers\.(\d)\.", lambda m: f"detr_decoder.presence_head.layer{int(m[1]) + 1}."),
    (r"transformer\.decoder\.presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (r"transformer\.decoder\.norm\.", "detr_decoder.output_layer_norm."),
    (r"transformer\.decoder\.bbox_embed\.layers\.(\d)\.", lambda m: f"detr_decoder.box_head.layer{int(m[1]) + 1}."),
    (r"transformer\.decoder\.ref_point_head\.layers\.(\d)\.", lambda m: f"detr_decoder.ref_point_head.layer{int(m[1]) + 1}."),
    (r"transformer\.decoder\.boxRPB_embed_([xy])\.layers\.(\d)\.",
     lambda m: f"detr_decoder.box_rpb_embed_{m[1]}.layer{int(m[2]) + 1}."),
    (r"transformer\.decoder\.layers\.(\d+)\.ca_text\.", r"detr_decoder.layers.\1.text_cross_attn."),
    (r"transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn."),
    (r"transformer\.decoder\.layers\.(\d+)\.self_attn\.", r"detr_decoder.layers.\1.self_attn."),
    (r"transformer\.decoder\.layers\.(\d+)\.linear(\d)\.", r"detr_decoder.layers.\1.mlp.fc\2."),
    (r"transformer\.decoder\.layers\.(\d+)\.norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (r"transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (r"transformer\.decoder\.layers\.(\d+)\.norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (r"transformer\.decoder\.layers\.(\d+)\.norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (r"transformer\.decoder\.(query_embed|reference_points|presence_token)\.", r"detr_decoder.\1."),
    # scoring and the mask head
    (r"dot_prod_scoring\.prompt_mlp\.layers\.(\d)\.", lambda m: f"dot_product_scoring.text_mlp.layer{int(m[1]) + 1}."),
    (r"dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    (r"segmentation_head\.pixel_decoder\.", "mask_decoder.pixel_decoder."),
    (r"segmentation_head\.mask_predictor\.mask_embed\.layers\.", "mask_decoder.mask_embedder.layers."),
    (r"segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (r"segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
]
_COMPILED = [(re.compile(pattern), target) for pattern, target in _RULES]


def rename(name: str) -> str | None:
    """One official name -> the transformers name (None: a tensor the image model does not use). Raises KeyError
    for a name no rule knows."""
    for pattern, target in _COMPILED:
        m = pattern.match(name)
        if m:
            if target is None:
                return None
            head = target(m) if callable(target) else m.expand(target)
            renamed = head + name[m.end():]
            # transformers' own attention modules call the output projection o_proj; CLIP's keeps out_proj
            return renamed if renamed.startswith("text_encoder.") else renamed.replace(".out_proj.", ".o_proj.")
    raise KeyError(name)


def detector_tensors(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The image detector's tensors of an official checkpoint, without the "detector." prefix (the file also
    holds the video tracker's, "tracker.*", which the image model does not use)."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError("not a SAM 3 checkpoint: expected a dict of tensors (under 'model')")
    prefixed = {k[len("detector."):]: v for k, v in state.items() if k.startswith("detector.")}
    return prefixed or {k: v for k, v in state.items() if not k.startswith("tracker.")}


def _split_three(name: str, tensor: torch.Tensor, out: dict) -> None:
    """A fused q/k/v projection -> three (the rows are q, then k, then v)."""
    for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
        if name.endswith("in_proj_weight") or name.endswith("in_proj_bias"):
            kind = "weight" if name.endswith("weight") else "bias"
            out[f"{name.rsplit('.', 1)[0]}.{part}.{kind}"] = chunk
        else:  # "....qkv.weight" / "....qkv.bias"
            out[name.replace(".qkv.", f".{part}.")] = chunk


def convert(official: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Official detector tensors -> transformers' names and layouts, checked against `expected` (the target
    model's names and shapes): every expected tensor set, every official tensor placed or knowingly dropped,
    every shape equal. Raises ValueError naming what does not fit."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in official.items():
        try:
            target = rename(name)
        except KeyError:
            unknown.append(name)
            continue
        if target is None:
            continue
        if target.endswith("position_embeddings") and tensor.dim() == 3:
            tensor = tensor[:, 1:]  # the class-token row
        if target.endswith("text_encoder.text_projection.weight"):
            tensor = tensor.t()
        if ".qkv." in target or ".in_proj_" in target:
            _split_three(target, tensor, out)
        else:
            out[target] = tensor
    missing = sorted(set(expected) - set(out))
    extra = sorted(set(out) - set(expected))
    wrong = sorted(k for k in set(out) & set(expected) if tuple(out[k].shape) != tuple(expected[k]))
    if unknown or missing or extra or wrong:
        parts = []
        for label, names in (("unknown tensors", unknown), ("tensors the model needs but the file lacks", missing),
                             ("tensors the model does not have", extra), ("tensors of another size", wrong)):
            if names:
                parts.append(f"{len(names)} {label} (e.g. {', '.join(names[:3])})")
        raise ValueError("this SAM 3 checkpoint does not fit the model: " + "; ".join(parts))
    return out
