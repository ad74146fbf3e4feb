"""The sam2 repository's checkpoints (`sam2.1_hiera_*.pt`: tensors under "model") in transformers' Sam2Model
layout: the key map, the video-only tensors an image model drops, and the size read from the tensors.

Every official key is matched by exactly one rule below (anchored), or is video-only, or is reported as
unknown; nothing is guessed. Facts: the sam2 repository's module names (SAM2Base, Hiera, FpnNeck,
PromptEncoder, MaskDecoder) and transformers' Sam2Model names; the sizes of its configs/sam2.1/*.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# Tensors of the video predictor only (memory bank, object pointers): an image model has no place for them.
VIDEO_ONLY = re.compile(r"(memory_attention|memory_encoder|mask_downsample|obj_ptr_proj|obj_ptr_tpos_proj)\..*"
                        r"|maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial")

_TRUNK, _NECK = r"image_encoder\.trunk\.", r"image_encoder\.neck\."
_PROMPT, _DECODER = r"sam_prompt_encoder\.", r"sam_mask_decoder\."
_WB = r"(weight|bias)"
_ATTN = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"

# (official key pattern, transformers key): three-layer heads are layers.0/1/2 there, proj_in/layers.0/proj_out here.
RULES: list[tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r"no_mem_embed", "no_memory_embedding"),
    # image encoder: Hiera trunk + FPN neck
    (_TRUNK + r"(pos_embed|pos_embed_window)", r"vision_encoder.backbone.\1"),
    (_TRUNK + r"patch_embed\.proj\." + _WB, r"vision_encoder.backbone.patch_embed.projection.\1"),
    (_TRUNK + r"blocks\.(\d+)\.norm([12])\." + _WB, r"vision_encoder.backbone.blocks.\1.layer_norm\2.\3"),
    (_TRUNK + r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|proj)\." + _WB, r"vision_encoder.backbone.blocks.\1.\2.\3"),
    (_TRUNK + r"blocks\.(\d+)\.mlp\.layers\.0\." + _WB, r"vision_encoder.backbone.blocks.\1.mlp.proj_in.\2"),
    (_TRUNK + r"blocks\.(\d+)\.mlp\.layers\.1\." + _WB, r"vision_encoder.backbone.blocks.\1.mlp.proj_out.\2"),
    (_NECK + r"convs\.(\d+)\.conv\." + _WB, r"vision_encoder.neck.convs.\1.\2"),
    # prompt encoder (point_embeddings.i are stacked into one table after renaming)
    (_PROMPT + r"pe_layer\.positional_encoding_gaussian_matrix", "prompt_encoder.shared_embedding.positional_embedding"),
    (_PROMPT + r"point_embeddings\.(\d)\.weight", r"prompt_encoder.point_embed.\1"),
    (_PROMPT + r"(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
    (_PROMPT + r"mask_downscaling\.0\." + _WB, r"prompt_encoder.mask_embed.conv1.\1"),
    (_PROMPT + r"mask_downscaling\.1\." + _WB, r"prompt_encoder.mask_embed.layer_norm1.\1"),
    (_PROMPT + r"mask_downscaling\.3\." + _WB, r"prompt_encoder.mask_embed.conv2.\1"),
    (_PROMPT + r"mask_downscaling\.4\." + _WB, r"prompt_encoder.mask_embed.layer_norm2.\1"),
    (_PROMPT + r"mask_downscaling\.6\." + _WB, r"prompt_encoder.mask_embed.conv3.\1"),
    # mask decoder: two-way transformer
    (_DECODER + r"transformer\.layers\.(\d+)\." + _ATTN + r"\.(q_proj|k_proj|v_proj)\." + _WB,
     r"mask_decoder.transformer.layers.\1.\2.\3.\4"),
    (_DECODER + r"transformer\.layers\.(\d+)\." + _ATTN + r"\.out_proj\." + _WB,
     r"mask_decoder.transformer.layers.\1.\2.o_proj.\3"),
    (_DECODER + r"transformer\.layers\.(\d+)\.norm([1-4])\." + _WB, r"mask_decoder.transformer.layers.\1.layer_norm\2.\3"),
    (_DECODER + r"transformer\.layers\.(\d+)\.mlp\.layers\.0\." + _WB, r"mask_decoder.transformer.layers.\1.mlp.proj_in.\2"),
    (_DECODER + r"transformer\.layers\.(\d+)\.mlp\.layers\.1\." + _WB, r"mask_decoder.transformer.layers.\1.mlp.proj_out.\2"),
    (_DECODER + r"transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj)\." + _WB,
     r"mask_decoder.transformer.final_attn_token_to_image.\1.\2"),
    (_DECODER + r"transformer\.final_attn_token_to_image\.out_proj\." + _WB,
     r"mask_decoder.transformer.final_attn_token_to_image.o_proj.\1"),
    (_DECODER + r"transformer\.norm_final_attn\." + _WB, r"mask_decoder.transformer.layer_norm_final_attn.\1"),
    # mask decoder: tokens, upscaling, heads
    (_DECODER + r"(iou_token|mask_tokens|obj_score_token)\.weight", r"mask_decoder.\1.weight"),
    (_DECODER + r"(conv_s0|conv_s1)\." + _WB, r"mask_decoder.\1.\2"),
    (_DECODER + r"output_upscaling\.0\." + _WB, r"mask_decoder.upscale_conv1.\1"),
    (_DECODER + r"output_upscaling\.1\." + _WB, r"mask_decoder.upscale_layer_norm.\1"),
    (_DECODER + r"output_upscaling\.3\." + _WB, r"mask_decoder.upscale_conv2.\1"),
    (_DECODER + r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.0\." + _WB,
     r"mask_decoder.\1.proj_in.\2"),
    (_DECODER + r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.1\." + _WB,
     r"mask_decoder.\1.layers.0.\2"),
    (_DECODER + r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.2\." + _WB,
     r"mask_decoder.\1.proj_out.\2"),
]]


def official_to_transformers(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official tensors -> (the same tensors under Sam2Model's names, the official keys no rule knows).
    Video-only tensors are dropped; the point embeddings are stacked into one (4, C) table; the prompt
    encoder's Gaussian matrix also fills the model's image-wide copy (shared_image_embedding)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    points: dict[int, torch.Tensor] = {}
    for key, value in state.items():
        if VIDEO_ONLY.fullmatch(key):
            continue
        new = next((p.sub(r, key) for p, r in RULES if p.fullmatch(key)), None)
        if new is None:
            unknown.append(key)
        elif new.startswith("prompt_encoder.point_embed."):
            points[int(new.rsplit(".", 1)[1])] = value
        else:
            out[new] = value
    if points:
        if sorted(points) != list(range(len(points))):
            unknown += [f"sam_prompt_encoder.point_embeddings.{i}.weight (the others of 0..{max(points)} are missing)"
                        for i in sorted(points)]
        else:
            out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in range(len(points))])
    pe = out.get("prompt_encoder.shared_embedding.positional_embedding")
    if pe is not None:
        out["shared_image_embedding.positional_embedding"] = pe
    return out, unknown


# ------------------------------------------------------------------------------------------ sizes

@dataclass(frozen=True)
class Sam2Size:
    """What a SAM 2 / 2.1 image encoder's tensors cannot tell, per published size (configs/sam2.1/*.yaml)."""

    name: str  # tiny / small / base-plus / large
    heads: int  # attention heads of the first stage (doubled per stage)
    global_attention_blocks: tuple[int, ...]
    window_size_per_stage: tuple[int, int, int, int]


# (width of the patch embedding, blocks per stage) -> the size
SIZES = {
    (96, (1, 2, 7, 2)): Sam2Size("tiny", 1, (5, 7, 9), (8, 4, 14, 7)),
    (96, (1, 2, 11, 2)): Sam2Size("small", 1, (7, 10, 13), (8, 4, 14, 7)),
    (112, (2, 3, 16, 3)): Sam2Size("base-plus", 2, (12, 16, 20), (8, 4, 14, 7)),
    (144, (2, 6, 36, 4)): Sam2Size("large", 2, (23, 33, 43), (8, 4, 16, 8)),
}


class SizeError(ValueError):
    """The tensors are not one of the published SAM 2 sizes (or not a SAM 2 at all)."""


def read_size(state: dict[str, torch.Tensor]) -> tuple[Sam2Size, dict]:
    """Official tensors -> (the published size they are, Sam2Config keyword arguments of that size). The width,
    stages (a block with a `proj` opens a stage), the window of the first stage and the background of the
    position embedding come from the tensors; heads, global-attention blocks and later windows from SIZES."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise SizeError(f"it has no {key!r}")
        return tuple(state[key].shape)

    width = shape("image_encoder.trunk.patch_embed.proj.weight")[0]
    blocks = sorted({int(m[1]) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise SizeError("its Hiera blocks are missing or not numbered 0..N-1")
    starts = [0] + [b for b in blocks if f"image_encoder.trunk.blocks.{b}.proj.weight" in state]
    stages = tuple(b - a for a, b in zip(starts, [*starts[1:], len(blocks)], strict=True))
    size = SIZES.get((width, stages))
    if size is None:
        known = ", ".join(f"{s.name} (width {w}, blocks {list(st)})" for (w, st), s in SIZES.items())
        raise SizeError(f"its image encoder (width {width}, blocks per stage {list(stages)}) is none of the published "
                        f"SAM 2 sizes: {known}")
    background = shape("image_encoder.trunk.pos_embed")[2:]
    window0 = shape("image_encoder.trunk.pos_embed_window")[2]
    dims = [width * 2 ** i for i in range(4)]
    backbone = dict(hidden_size=width, embed_dim_per_stage=dims, num_attention_heads_per_stage=[size.heads * 2 ** i
                                                                                                for i in range(4)],
                    blocks_per_stage=list(stages), global_attention_blocks=list(size.global_attention_blocks),
                    window_size_per_stage=[window0, *size.window_size_per_stage[1:]],
                    window_positional_embedding_background_size=list(background))
    vision = dict(backbone_config=backbone, backbone_channel_list=dims[::-1])
    return size, dict(vision_config=vision)
