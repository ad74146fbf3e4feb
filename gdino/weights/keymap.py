"""Checkpoint key names -> ours, and checkpoint configs -> `GroundingDINOConfig`. Pure functions.

Our module names follow the original checkpoints (IDEA-Research/GroundingDINO `.pth` files), so those
map almost one to one. The transformers layout (hub repos `IDEA-Research/grounding-dino-*`) is renamed
here; transformers 5 also renames some Swin keys in memory (`swin.` prefix, `q_proj`, `mlp.fc1`, ...)
while files on the hub and files it saves use the older names, so both spellings are accepted.
Separate q/k/v projections are merged into the `qkv` / `in_proj_*` tensors the original code uses.
MM-Grounding-DINO (transformers' `MMGroundingDinoForObjectDetection`) adds per-layer heads; its files
name them `bbox_embed.N.*` / `class_embed.N.bias` or, for the decoder's copies, `model.decoder.*`.
mmdetection's `.pth` files of MM-Grounding-DINO and LLMDet are a third layout (`_MMDET_RULES`): its own module
names, per-layer heads in `bbox_head.{cls,reg}_branches.N` (N = the decoder's layer count: the encoder's head),
and the Swin patch-merging channels in another order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch

from ..modeling.config import GroundingDINOConfig, SwinConfig, TextConfig

IGNORE = "<ignored>"  # keys that hold nothing we need (derived buffers, the unused BERT pooler, ...)

_SWIN = r"model\.backbone\.conv_encoder\.model\.(?:swin\.)?"

# (pattern, replacement) applied with re.fullmatch; the first that matches wins. A replacement
# ending in "#q", "#k" or "#v" is one third of a merged projection.
_HUB_RULES: list[tuple[str, str]] = [
    # Swin backbone
    (_SWIN + r"embeddings\.patch_embeddings\.projection\.(.*)", r"backbone.patch_embed.proj.\1"),
    (_SWIN + r"embeddings\.norm\.(.*)", r"backbone.patch_embed.norm.\1"),
    (_SWIN + r"encoder\.layers\.(\d+)\.downsample\.(.*)", r"backbone.layers.\1.downsample.\2"),
    (_SWIN + r"hidden_states_norms\.stage(\d+)\.(.*)", lambda m: f"backbone.norm{int(m[1]) - 1}.{m[2]}"),
    (_SWIN + r"layernorm\.(.*)", IGNORE),
    (_SWIN + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)", lambda m: _swin_block(m[1], m[2], m[3])),
    # text
    (r"model\.text_backbone\.pooler\..*", IGNORE),
    (r"model\.text_backbone\.embeddings\.position_ids", IGNORE),
    (r"model\.text_backbone\.(.*)", r"bert.\1"),
    (r"model\.text_projection\.(.*)", r"feat_map.\1"),
    (r"model\.special_tokens", IGNORE),
    # neck and transformer embeddings
    (r"model\.input_proj_vision\.(.*)", r"input_proj.\1"),
    (r"model\.level_embed", r"transformer.level_embed"),
    (r"model\.query_position_embeddings\.(.*)", r"transformer.tgt_embed.\1"),
    (r"model\.enc_output\.(.*)", r"transformer.enc_output.\1"),
    (r"model\.enc_output_norm\.(.*)", r"transformer.enc_output_norm.\1"),
    (r"model\.encoder_output_bbox_embed\.(.*)", r"transformer.enc_out_bbox_embed.\1"),
    # encoder
    (r"model\.encoder\.layers\.(\d+)\.deformable_layer\.(.*)",
     lambda m: f"transformer.encoder.layers.{m[1]}." + _rename(m[2], _DEFORMABLE)),
    (r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.(.*)",
     lambda m: f"transformer.encoder.text_layers.{m[1]}." + _rename(m[2], _TEXT_ENHANCER)),
    (r"model\.encoder\.layers\.(\d+)\.fusion_layer\.(.*)",
     lambda m: f"transformer.encoder.fusion_layers.{m[1]}." + _rename(m[2], _FUSION)),
    # decoder
    (r"model\.decoder\.layers\.(\d+)\.(.*)",
     lambda m: f"transformer.decoder.layers.{m[1]}." + _rename(m[2], _DECODER)),
    (r"model\.decoder\.layer_norm\.(.*)", r"transformer.decoder.norm.\1"),
    (r"model\.decoder\.reference_points_head\.(.*)", r"transformer.decoder.ref_point_head.\1"),
    (r"(?:model\.decoder\.)?bbox_embed\.\d+\.(.*)", r"bbox_embed.\1"),
]

# MM-Grounding-DINO: per-layer heads (tried before _HUB_RULES, whose box rule folds every layer into one head)
_MM_HUB_RULES: list[tuple[str, str]] = [
    (r"(?:model\.decoder\.)?bbox_embed\.(\d+)\.(.*)", r"bbox_embed.\1.\2"),
    (r"(?:model\.decoder\.)?class_embed\.(\d+)\.bias", r"class_embed.\1.bias"),
    (r"model\.encoder_output_class_embed\.bias", r"transformer.enc_out_class_embed.bias"),
]

_ORIGINAL_RULES: list[tuple[str, str]] = [
    (r"backbone\.0\..*\.relative_position_index", IGNORE),
    (r"backbone\.0\.(.*)", r"backbone.\1"),
    (r"bert\.pooler\..*", IGNORE),
    (r"bert\.embeddings\.position_ids", IGNORE),
    (r"label_enc\.weight", IGNORE),  # denoising-training label embedding, unused at inference
    (r"(?:transformer\.decoder\.)?bbox_embed\.\d+\.(.*)", r"bbox_embed.\1"),
    (r"(.*)", r"\1"),
]

# mmdetection's layout (MM-Grounding-DINO and LLMDet `.pth` files, tensors under "state_dict"). The Swin
# patch-merging tensors are permuted (see _unfold_to_swin_order) and the heads sit in bbox_head.{cls,reg}_branches.N,
# where N = decoder_layers is the encoder's head: those are renamed in _mmdet_head, which needs the layer count.
_MMDET_RULES: list[tuple[str, str]] = [
    # Swin backbone
    (r"backbone\.patch_embed\.projection\.(.*)", r"backbone.patch_embed.proj.\1"),
    (r"backbone\.patch_embed\.norm\.(.*)", r"backbone.patch_embed.norm.\1"),
    (r"backbone\.stages\.\d+\.blocks\.\d+\.attn\.w_msa\.relative_position_index", IGNORE),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(.*)", r"backbone.layers.\1.blocks.\2.attn.\3"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.(norm[12])\.(.*)", r"backbone.layers.\1.blocks.\2.\3.\4"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.(.*)", r"backbone.layers.\1.blocks.\2.mlp.fc1.\3"),
    (r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.(.*)", r"backbone.layers.\1.blocks.\2.mlp.fc2.\3"),
    (r"backbone\.stages\.(\d+)\.downsample\.(reduction|norm)\.(.*)", r"backbone.layers.\1.downsample.\2.\3"),
    (r"backbone\.(norm\d+)\.(.*)", r"backbone.\1.\2"),
    # neck: extra_convs follow the 1x1 convs (their index is shifted in _mmdet_neck)
    (r"neck\.convs\.(\d+)\.conv\.(.*)", r"input_proj.\1.0.\2"),
    (r"neck\.convs\.(\d+)\.gn\.(.*)", r"input_proj.\1.1.\2"),
    # text
    (r"language_model\.language_backbone\.body\.model\.pooler\..*", IGNORE),
    (r"language_model\.language_backbone\.body\.model\.embeddings\.position_ids", IGNORE),
    (r"language_model\.language_backbone\.body\.model\.(.*)", r"bert.\1"),
    (r"text_feat_map\.(.*)", r"feat_map.\1"),
    # encoder
    (r"encoder\.layers\.(\d+)\.self_attn\.(.*)", r"transformer.encoder.layers.\1.self_attn.\2"),
    (r"encoder\.layers\.(\d+)\.norms\.([01])\.(.*)", lambda m: f"transformer.encoder.layers.{m[1]}.norm{int(m[2]) + 1}.{m[3]}"),
    (r"encoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.(.*)", r"transformer.encoder.layers.\1.linear1.\2"),
    (r"encoder\.layers\.(\d+)\.ffn\.layers\.1\.(.*)", r"transformer.encoder.layers.\1.linear2.\2"),
    (r"encoder\.text_layers\.(\d+)\.self_attn\.attn\.(.*)", r"transformer.encoder.text_layers.\1.self_attn.\2"),
    (r"encoder\.text_layers\.(\d+)\.norms\.([01])\.(.*)",
     lambda m: f"transformer.encoder.text_layers.{m[1]}.norm{int(m[2]) + 1}.{m[3]}"),
    (r"encoder\.text_layers\.(\d+)\.ffn\.layers\.0\.0\.(.*)", r"transformer.encoder.text_layers.\1.linear1.\2"),
    (r"encoder\.text_layers\.(\d+)\.ffn\.layers\.1\.(.*)", r"transformer.encoder.text_layers.\1.linear2.\2"),
    (r"encoder\.fusion_layers\.(\d+)\.(.*)", r"transformer.encoder.fusion_layers.\1.\2"),
    # decoder: norms.0 after self-attention, .1 after the text cross-attention, .2 after the image one, .3 after the FFN
    (r"decoder\.layers\.(\d+)\.self_attn\.attn\.(.*)", r"transformer.decoder.layers.\1.self_attn.\2"),
    (r"decoder\.layers\.(\d+)\.cross_attn_text\.attn\.(.*)", r"transformer.decoder.layers.\1.ca_text.\2"),
    (r"decoder\.layers\.(\d+)\.cross_attn\.(.*)", r"transformer.decoder.layers.\1.cross_attn.\2"),
    (r"decoder\.layers\.(\d+)\.norms\.([0-3])\.(.*)",
     lambda m: f"transformer.decoder.layers.{m[1]}.{('norm2', 'catext_norm', 'norm1', 'norm3')[int(m[2])]}.{m[3]}"),
    (r"decoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.(.*)", r"transformer.decoder.layers.\1.linear1.\2"),
    (r"decoder\.layers\.(\d+)\.ffn\.layers\.1\.(.*)", r"transformer.decoder.layers.\1.linear2.\2"),
    (r"decoder\.norm\.(.*)", r"transformer.decoder.norm.\1"),
    (r"decoder\.ref_point_head\.(.*)", r"transformer.decoder.ref_point_head.\1"),
    # embeddings and two-stage selection
    (r"level_embed", r"transformer.level_embed"),
    (r"query_embedding\.(.*)", r"transformer.tgt_embed.\1"),
    (r"memory_trans_fc\.(.*)", r"transformer.enc_output.\1"),
    (r"memory_trans_norm\.(.*)", r"transformer.enc_output_norm.\1"),
    # training only: the denoising label embedding; LLMDet's language-model branch (the conversion drops them too)
    (r"dn_query_generator\.label_embedding\.weight", IGNORE),
    (r"(?:lmm|connector|region_connector|ref_point_head).*|image_seperate\.weight", IGNORE),
]

# Within-layer renames, hub -> ours, as (prefix, replacement) pairs; first match wins.
_DEFORMABLE = [("self_attn_layer_norm.", "norm1."), ("final_layer_norm.", "norm2."), ("fc1.", "linear1."),
               ("fc2.", "linear2."), ("self_attn.", "self_attn.")]
_QKV = [("query.", "#q"), ("key.", "#k"), ("value.", "#v")]
_TEXT_ENHANCER = [(f"self_attn.{a}", f"self_attn.in_proj{b}") for a, b in _QKV] + [
    ("self_attn.out_proj.", "self_attn.out_proj."), ("layer_norm_before.", "norm1."),
    ("layer_norm_after.", "norm2."), ("fc1.", "linear1."), ("fc2.", "linear2.")]
_FUSION = [("layer_norm_vision.", "layer_norm_v."), ("layer_norm_text.", "layer_norm_l."),
           ("vision_param", "gamma_v"), ("text_param", "gamma_l"), ("attn.vision_proj.", "attn.v_proj."),
           ("attn.text_proj.", "attn.l_proj."), ("attn.values_vision_proj.", "attn.values_v_proj."),
           ("attn.values_text_proj.", "attn.values_l_proj."), ("attn.out_vision_proj.", "attn.out_v_proj."),
           ("attn.out_text_proj.", "attn.out_l_proj.")]
_DECODER = (
    [(f"self_attn.{a}", f"self_attn.in_proj{b}") for a, b in _QKV]
    + [(f"encoder_attn_text.{a}", f"ca_text.in_proj{b}") for a, b in _QKV]
    + [("self_attn.out_proj.", "self_attn.out_proj."), ("self_attn_layer_norm.", "norm2."),
       ("encoder_attn_text.out_proj.", "ca_text.out_proj."), ("encoder_attn_text_layer_norm.", "catext_norm."),
       ("encoder_attn_layer_norm.", "norm1."), ("encoder_attn.", "cross_attn."), ("fc1.", "linear1."),
       ("fc2.", "linear2."), ("final_layer_norm.", "norm3.")]
)
_SWIN_BLOCK = [
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
    ("attention.self.relative_position_index", IGNORE),
    ("attention.relative_position_bias.relative_position_index", IGNORE),
    ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.relative_position_bias.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.self.query.", "attn.qkv#q"), ("attention.self.key.", "attn.qkv#k"),
    ("attention.self.value.", "attn.qkv#v"), ("attention.q_proj.", "attn.qkv#q"),
    ("attention.k_proj.", "attn.qkv#k"), ("attention.v_proj.", "attn.qkv#v"),
    ("attention.output.dense.", "attn.proj."), ("attention.o_proj.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."), ("mlp.fc1.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
    ("mlp.fc2.", "mlp.fc2."),
]


def _rename(rest: str, table: list[tuple[str, str]]) -> str:
    for prefix, new in table:
        if rest.startswith(prefix):
            if new == IGNORE:
                return IGNORE
            suffix = rest[len(prefix):]
            if new.endswith(("#q", "#k", "#v")):  # "attn.qkv#q" + "weight" -> "attn.qkv.weight#q"
                base, slot = new.split("#")
                joiner = "_" if base.endswith("in_proj") else "."  # in_proj_weight, qkv.weight
                return f"{base}{joiner}{suffix}#{slot}"
            return new + suffix
    return f"<unknown>{rest}"


def _swin_block(stage: str, block: str, rest: str) -> str:
    new = _rename(rest, _SWIN_BLOCK)
    return new if new == IGNORE else f"backbone.layers.{stage}.blocks.{block}.{new}"


def _apply(rules: list[tuple[str, str | Callable]], key: str) -> str | None:
    for pattern, replacement in rules:
        m = re.fullmatch(pattern, key)
        if m:
            new = replacement(m) if callable(replacement) else m.expand(replacement)
            if IGNORE in new:
                return IGNORE
            return None if "<unknown>" in new else new
    return None


class KeyMapError(ValueError):
    pass


def convert_state_dict(state: Mapping[str, torch.Tensor], layout: str, family: str = "gdino") -> dict[str, torch.Tensor]:
    """Rename a checkpoint's tensors to ours. layout: "hub" (transformers), "original" (IDEA's .pth) or "mmdet"
    (mmdetection's .pth, MM-Grounding-DINO only); family: "gdino" or "mm_gdino" (hub and mmdet layouts).

    Raises KeyMapError listing keys no rule knows, incomplete q/k/v triples, and copies of one head
    (the shared box head, or a layer's head and the decoder's copy of it) that differ from each other.
    """
    if layout == "original" and family != "gdino":
        raise KeyMapError("IDEA's original layout holds Grounding DINO only; MM-Grounding-DINO comes in the "
                          "transformers or the mmdetection layout")
    if layout == "mmdet":
        if family != "mm_gdino":
            raise KeyMapError("gdino reads mmdetection's layout for MM-Grounding-DINO / LLMDet only")
        rules = _mmdet_rules(state)
    else:
        rules = _HUB_RULES if layout == "hub" else _ORIGINAL_RULES
        if family == "mm_gdino":
            rules = _MM_HUB_RULES + rules
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unknown, conflicts = [], []
    for key, tensor in state.items():
        if layout == "original" and key.startswith("module."):
            key = key[len("module."):]
        new = _apply(rules, key)
        if new is None:
            unknown.append(key)
        elif new == IGNORE:
            continue
        elif "#" in new:
            name, slot = new.split("#")
            parts.setdefault(name, {})[slot] = tensor
        elif new in out:  # a tied copy (the box head is stored once per decoder layer)
            if out[new].shape != tensor.shape or not torch.equal(out[new], tensor):
                conflicts.append(f"{key} (differs from another copy of {new})")
        else:
            out[new] = tensor
    for name, slots in parts.items():
        if set(slots) != {"q", "k", "v"}:
            unknown.append(f"{name} (only {sorted(slots)} of the q/k/v projections)")
        else:
            out[name] = torch.cat([slots["q"], slots["k"], slots["v"]], 0)
    problems = [f"unrecognised key: {k}" for k in unknown[:20]] + conflicts[:20]
    if len(unknown) > 20:
        problems.append(f"... and {len(unknown) - 20} more unrecognised keys")
    if problems:
        raise KeyMapError(f"this is not a Grounding DINO checkpoint in the {layout} layout:\n  " + "\n  ".join(problems))
    return _mmdet_tensors(out) if layout == "mmdet" else out


# ------------------------------------------------------------------------------ mmdetection's layout

def checkpoint_layout(state: Mapping[str, torch.Tensor]) -> str:
    """The layout of a .pth state dict: "mmdet" (mmdetection: backbone.stages.*, bbox_head.*, language_model.*)
    or "original" (IDEA's: backbone.0.*, bert.*, transformer.*)."""
    mmdet = ("backbone.stages.", "bbox_head.", "language_model.language_backbone.")
    return "mmdet" if any(k.startswith(mmdet) for k in state) else "original"


def mmdet_family(state: Mapping[str, torch.Tensor]) -> str:
    """The family of an mmdetection-layout state dict, from its tensors: a learned bias in the class branches
    (ContrastiveEmbed(bias=True)) is MM-Grounding-DINO's and LLMDet's head."""
    if "bbox_head.cls_branches.0.bias" in state:
        return "mm_gdino"
    raise KeyMapError("an mmdetection checkpoint without class-branch biases (bbox_head.cls_branches.N.bias): "
                      "gdino reads mmdetection's layout for MM-Grounding-DINO and LLMDet only; for IDEA's Grounding "
                      "DINO use its original .pth (groundingdino_swint_ogc.pth) or the transformers layout")


def _mmdet_rules(state: Mapping[str, torch.Tensor]) -> list:
    """_MMDET_RULES plus the renames that depend on counts: bbox_head branches 0..L-1 are the L decoder layers'
    heads and branch L the encoder's; neck.extra_convs.E follows the C 1x1 convs as input_proj.{C+E}."""
    layers = _count(state, r"decoder\.layers\.(\d+)\.")
    convs = _count(state, r"neck\.convs\.(\d+)\.")
    branches = {int(m[2]) for k in state if (m := re.match(r"bbox_head\.(cls|reg)_branches\.(\d+)\.", k))}
    if layers == 0 or branches != set(range(layers + 1)):
        raise KeyMapError(f"an mmdetection checkpoint with {layers} decoder layers has bbox_head branches "
                          f"{sorted(branches)}; it needs 0..{layers} (one per decoder layer, then the encoder's)")

    def branch(i: str, kind: str) -> str:  # kind: class_embed or bbox_embed
        return f"transformer.enc_out_{kind}" if int(i) == layers else f"{kind}.{i}"

    return [
        (r"bbox_head\.cls_branches\.(\d+)\.bias", lambda m: branch(m[1], "class_embed") + ".bias"),
        # nn.Sequential(Linear, ReLU, Linear, ReLU, Linear): the linears are 0, 2, 4
        (r"bbox_head\.reg_branches\.(\d+)\.([024])\.(.*)",
         lambda m: branch(m[1], "bbox_embed") + f".layers.{int(m[2]) // 2}.{m[3]}"),
        (r"neck\.extra_convs\.(\d+)\.(conv|gn)\.(.*)",
         lambda m: f"input_proj.{convs + int(m[1])}.{0 if m[2] == 'conv' else 1}.{m[3]}"),
        *_MMDET_RULES,
    ]


def _mmdet_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmdetection's tensors (renamed to ours) as our modules hold them: patch merging in Swin's channel order,
    the class biases 0-d (mmdetection's ContrastiveEmbed stores shape [1])."""
    out = {}
    for key, t in state.items():
        if re.fullmatch(r"backbone\.layers\.\d+\.downsample\.(reduction|norm)\.(weight|bias)", key):
            t = _unfold_to_swin_order(t)
        elif re.fullmatch(r"(class_embed\.\d+|transformer\.enc_out_class_embed)\.bias", key) and t.shape == (1,):
            t = t.reshape(())
        out[key] = t
    return out


def _unfold_to_swin_order(t: torch.Tensor) -> torch.Tensor:
    """mmdetection's PatchMerging gathers each 2x2 patch with nn.Unfold: input channel c*4 + k, where k walks the
    patch row by row ((0,0), (0,1), (1,0), (1,1)). Swin (timm, transformers, IDEA) concatenates the four
    positions column by column: k*C + c with k over (0,0), (1,0), (0,1), (1,1). Reorders the last dimension
    (4C) of the reduction weight or of the norm's weight and bias."""
    *lead, four_c = t.shape
    by_position = t.reshape(*lead, four_c // 4, 4).transpose(-1, -2)  # (..., 4 unfold positions, C)
    return by_position[..., [0, 2, 1, 3], :].reshape(*lead, four_c)


def check_per_layer_heads(state: Mapping[str, torch.Tensor], layers: int) -> None:
    """MM-Grounding-DINO: every decoder layer must have its own box head and class bias (our key names).

    transformers ties layers 1..N-1 to layer 0 when their keys are missing, and some conversions wrote
    one head for all: either way the model would run with layer 0's head everywhere. Refuse both.
    """
    problems = []
    for kind, prefix in (("box head", "bbox_embed"), ("class bias", "class_embed")):
        heads = [{k[len(f"{prefix}.{i}."):]: v for k, v in state.items() if k.startswith(f"{prefix}.{i}.")}
                 for i in range(layers)]
        missing = [i for i, h in enumerate(heads) if not h]
        if missing:
            problems.append(f"no {kind} for decoder layer(s) {missing} ({prefix}.N.* or model.decoder.{prefix}.N.*)")
            continue
        copies = [i for i in range(1, layers) if heads[i].keys() == heads[0].keys()
                  and all(heads[i][k].shape == v.shape and torch.equal(heads[i][k], v) for k, v in heads[0].items())]
        if copies:
            problems.append(f"the {kind} of decoder layer(s) {copies} is identical to layer 0's")
    if problems:
        raise KeyMapError("an MM-Grounding-DINO checkpoint has a separate head per decoder layer, this file does not "
                          "(a conversion that kept only layer 0's, or shared heads):\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------- configs

def hub_family(cfg: Mapping) -> str:
    """The family of a transformers config.json: "mm_gdino" where save_pretrained of an MM-Grounding-DINO wrote
    it (model_type "mm-grounding-dino", architectures ["MMGroundingDinoForObjectDetection"]), else "gdino"."""
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") == "mm-grounding-dino" or any(str(a).startswith("MMGroundingDino") for a in archs):
        return "mm_gdino"
    return "gdino"


def _field(d: Mapping, key: str, default):
    value = d.get(key, default)
    return default if value is None else value


def config_from_hub(cfg: Mapping) -> GroundingDINOConfig:
    """transformers' `config.json` of a GroundingDinoForObjectDetection or MMGroundingDinoForObjectDetection
    -> our config."""
    family = hub_family(cfg)
    unsupported = {
        "two_stage": (True, "two_stage"), "two_stage_bbox_embed_share": (False, "a separate encoder box head"),
        "embedding_init_target": (True, "learned content queries"), "query_dim": (4, "4-d reference boxes"),
        "position_embedding_type": ("sine", "sine position embeddings"), "activation_function": ("relu", "ReLU"),
    }
    # MM-Grounding-DINO's *_share flags are True in transformers' default config although the published heads
    # differ per layer: there the weights decide (check_per_layer_heads), not the flags
    if family == "gdino":
        unsupported["decoder_bbox_embed_share"] = (True, "a shared decoder box head")
    for key, (want, what) in unsupported.items():
        if key in cfg and cfg[key] != want:
            raise ValueError(f"unsupported Grounding DINO variant: config.json has {key}={cfg[key]!r}; "
                             f"gdino implements the published models ({what})")
    b = cfg.get("backbone_config") or {}
    if b.get("model_type", "swin") != "swin":
        raise ValueError(f"unsupported backbone {b.get('model_type')!r}: gdino implements the Swin models")
    if b.get("use_absolute_embeddings"):
        raise ValueError("unsupported backbone: Swin with absolute position embeddings")
    depths = tuple(_field(b, "depths", (2, 2, 6, 2)))
    if b.get("out_indices"):
        out_indices = tuple(i - 1 for i in b["out_indices"])
    elif b.get("out_features"):
        out_indices = tuple(int(s.removeprefix("stage")) - 1 for s in b["out_features"])
    else:
        out_indices = (1, 2, 3)
    swin = SwinConfig(
        embed_dim=_field(b, "embed_dim", 96), depths=depths, num_heads=tuple(_field(b, "num_heads", (3, 6, 12, 24))),
        window_size=_field(b, "window_size", 7), patch_size=_field(b, "patch_size", 4),
        mlp_ratio=_field(b, "mlp_ratio", 4.0), out_indices=out_indices,
        layer_norm_eps=_field(b, "layer_norm_eps", 1e-5),
    )
    t = cfg.get("text_config") or {}
    if t.get("model_type", "bert") != "bert":
        raise ValueError(f"unsupported text encoder {t.get('model_type')!r}: gdino implements BERT")
    defaults = TextConfig()
    text = TextConfig(**{f: _field(t, f, getattr(defaults, f)) for f in defaults.__dataclass_fields__})
    d = GroundingDINOConfig()
    return GroundingDINOConfig(
        family=family, swin=swin, text=text, d_model=_field(cfg, "d_model", d.d_model),
        num_queries=_field(cfg, "num_queries", d.num_queries),
        encoder_layers=_field(cfg, "encoder_layers", d.encoder_layers),
        decoder_layers=_field(cfg, "decoder_layers", d.decoder_layers),
        encoder_ffn_dim=_field(cfg, "encoder_ffn_dim", d.encoder_ffn_dim),
        decoder_ffn_dim=_field(cfg, "decoder_ffn_dim", d.decoder_ffn_dim),
        encoder_heads=_field(cfg, "encoder_attention_heads", d.encoder_heads),
        decoder_heads=_field(cfg, "decoder_attention_heads", d.decoder_heads),
        num_feature_levels=_field(cfg, "num_feature_levels", d.num_feature_levels),
        encoder_points=_field(cfg, "encoder_n_points", d.encoder_points),
        decoder_points=_field(cfg, "decoder_n_points", d.decoder_points),
        max_text_len=_field(cfg, "max_text_len", d.max_text_len),
        layer_norm_eps=_field(cfg, "layer_norm_eps", d.layer_norm_eps),
        position_temperature=float(_field(cfg, "positional_embedding_temperature", d.position_temperature)),
    )


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    found = {int(m[1]) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def config_from_original(state: Mapping[str, torch.Tensor], text: TextConfig, family: str = "gdino") -> GroundingDINOConfig:
    """Infer the architecture of an original (IDEA) or mmdetection checkpoint, already renamed to our keys, from
    its shapes; `family` comes from the keys (`mmdet_family`).

    Shapes give the Swin variant and every size; only attention head counts (8, 4 for the text side)
    come from the standard config. `text` is the BERT config named by `text_encoder`.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise KeyMapError(f"not a Grounding DINO checkpoint: it has no {key!r}")
        return tuple(state[key].shape)

    stages = _count(state, r"backbone\.layers\.(\d+)\.")
    depths = tuple(_count(state, rf"backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages))
    num_heads, window = [], 0
    for i in range(stages):
        entries, heads = shape(f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table")
        num_heads.append(heads)
        window = (math.isqrt(entries) + 1) // 2
    embed_dim, _, patch, _ = shape("backbone.patch_embed.proj.weight")
    mlp_hidden = shape("backbone.layers.0.blocks.0.mlp.fc1.weight")[0]
    out_indices = tuple(i for i in range(stages) if f"backbone.norm{i}.weight" in state)
    swin = SwinConfig(embed_dim=embed_dim, depths=depths, num_heads=tuple(num_heads), window_size=window,
                      patch_size=patch, mlp_ratio=mlp_hidden / embed_dim, out_indices=out_indices)
    d_model, text_hidden = shape("feat_map.weight")
    if text_hidden != text.hidden_size:
        raise KeyMapError(f"the checkpoint's text projection expects a {text_hidden}-d text encoder, "
                          f"but the text encoder config has hidden_size {text.hidden_size}")
    vocab = shape("bert.embeddings.word_embeddings.weight")[0]
    bert_layers = _count(state, r"bert\.encoder\.layer\.(\d+)\.")
    if vocab != text.vocab_size or bert_layers != text.num_hidden_layers:
        raise KeyMapError(f"the checkpoint's BERT has vocab {vocab} and {bert_layers} layers, the text encoder "
                          f"config says {text.vocab_size} and {text.num_hidden_layers}: pass the matching "
                          "text_encoder")
    levels = _count(state, r"input_proj\.(\d+)\.")
    standard = GroundingDINOConfig()
    heads = standard.encoder_heads
    enc_offsets = shape("transformer.encoder.layers.0.self_attn.sampling_offsets.weight")[0]
    dec_offsets = shape("transformer.decoder.layers.0.cross_attn.sampling_offsets.weight")[0]
    return GroundingDINOConfig(
        family=family, swin=swin, text=text, d_model=d_model, num_queries=shape("transformer.tgt_embed.weight")[0],
        encoder_layers=_count(state, r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=_count(state, r"transformer\.decoder\.layers\.(\d+)\."),
        encoder_ffn_dim=shape("transformer.encoder.layers.0.linear1.weight")[0],
        decoder_ffn_dim=shape("transformer.decoder.layers.0.linear1.weight")[0],
        encoder_heads=heads, decoder_heads=standard.decoder_heads, num_feature_levels=levels,
        encoder_points=enc_offsets // (heads * levels * 2),
        decoder_points=dec_offsets // (standard.decoder_heads * levels * 2),
    )
