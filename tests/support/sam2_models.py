"""Random SAM 2.1 and EdgeTAM models in the real layouts, every parameter and buffer perturbed (no path is
trivially zero), for the parity tests, the loading tests and the bench.

- `official_model(size, seed)`: the sam2 package's own model (its hydra config), as the sam2 repository builds it;
- `write_official_pt(size, path, seed)`: that model saved like `sam2.1_hiera_<size>.pt` ({"model": state});
- `hub_folder_from_pt(pt, out)`: the same weights in transformers' hub layout (config.json + model.safetensors),
  renamed by `convert_keys` below: transformers' converter rules (convert_sam2_to_hf.py: ordered substring
  replacements, then index fix-ups) re-expressed here, independent of gdino's key map, saved by save_pretrained;
- `random_edgetam_folder(out, seed, small)`: EdgeTamModel (timm repvit_m1 trunk) saved by save_pretrained;
- `small_sam2_folder(out, seed)`: a narrow, shallow Sam2Model at the real 1024 frame, for fast tests.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import torch

CONFIGS = {"tiny": "t", "small": "s", "base-plus": "b+", "large": "l"}  # configs/sam2.1/sam2.1_hiera_<x>.yaml


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Adds scale * N(0, 1) to every floating parameter and buffer (zero-initialized ones included). A transformers
    model's image-wide positional matrix is then set to its prompt encoder's, as in converted checkpoints (the
    sam2 package has one matrix for both)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.add_(scale * torch.randn(t.shape, generator=gen, dtype=t.dtype))
        if hasattr(module, "shared_image_embedding"):
            module.shared_image_embedding.positional_embedding.copy_(module.prompt_encoder.shared_embedding.positional_embedding)
    return module


def official_model(size: str, seed: int = 0, device: str = "cpu"):
    """The sam2 package's SAM2Base of a published size (tiny / small / base-plus / large), random and perturbed,
    built as sam2.build_sam.build_sam2 builds it (image-predictor post-processing on)."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(f"configs/sam2.1/sam2.1_hiera_{CONFIGS[size]}.yaml", ckpt_path=None, device="cpu")
    return perturb(model, seed).to(device).eval()


@contextmanager
def parameters_on_meta():
    """New parameters are put on the meta device (shapes only), while the rest of a constructor runs as usual (the
    sam2 package's Hiera calls .item() while building, which a plain torch.device("meta") refuses)."""
    original = torch.nn.Module.register_parameter

    def register(self, name, param):
        if param is not None:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def official_on_meta(size: str):
    """The sam2 package's model of a size with its parameters on the meta device (no memory): for size reading."""
    import sam2  # noqa: F401  (initializes hydra with the package's configs)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(config_name=f"configs/sam2.1/sam2.1_hiera_{CONFIGS[size]}.yaml")
    OmegaConf.resolve(cfg)
    with parameters_on_meta():
        return instantiate(cfg.model, _recursive_=True)


def write_official_pt(size: str, path: Path, seed: int = 0) -> Path:
    """A random official checkpoint: {"model": SAM2Base state dict}, video tensors included, as the real files."""
    torch.save({"model": official_model(size, seed).state_dict()}, path)
    return path


# ------------------------------------------------------------------- transformers' layout (independent)

# transformers' convert_sam2_to_hf.py: substring -> replacement, applied in this order to every key
_REPLACE = [
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"), ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"), ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("sam_prompt_encoder", "prompt_encoder"), ("sam_mask_decoder", "mask_decoder"),
    ("image_encoder.neck", "vision_encoder.neck"), ("image_encoder", "vision_encoder.backbone"),
    ("patch_embed.proj", "patch_embed.projection"), ("no_mem_embed", "no_memory_embedding"),
    (".norm", ".layer_norm"), ("trunk.", ""), ("out_proj", "o_proj"),
]
_VIDEO = ("memory_attention.", "memory_encoder.", "mask_downsample.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
          "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial")
_THREE = {"0": "proj_in", "1": "layers.0", "2": "proj_out"}


def convert_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official tensors -> transformers' names, by the converter's rules (video tensors left out)."""
    out = {}
    for key, value in state.items():
        if key.startswith(_VIDEO):
            continue
        for old, new in _REPLACE:
            key = key.replace(old, new)
        key = re.sub(r"^(vision_encoder\.backbone\.blocks\.\d+\.mlp)\.layers\.([01])",
                     lambda m: f"{m[1]}.{'proj_in' if m[2] == '0' else 'proj_out'}", key)
        key = re.sub(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp)\.layers\.([01])",
                     lambda m: f"{m[1]}.{'proj_in' if m[2] == '0' else 'proj_out'}", key)
        key = re.sub(r"(output_hypernetworks_mlps\.\d+|pred_obj_score_head)\.layers\.([012])\.",
                     lambda m: f"{m[1]}.{_THREE[m[2]]}.", key)
        key = re.sub(r"^(vision_encoder\.neck\.convs\.\d+)\.conv\.", r"\1.", key)
        out[key] = value
    out["shared_image_embedding.positional_embedding"] = out["prompt_encoder.shared_embedding.positional_embedding"]
    out["prompt_encoder.point_embed.weight"] = torch.cat([out.pop(f"prompt_encoder.point_embed.{i}.weight")
                                                          for i in range(4)])
    return out


def transformers_config(size: str):
    """Sam2Config of a published size, as transformers' converter writes it (its get_config)."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    backbone = {
        "tiny": {},
        "small": dict(blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13]),
        "base-plus": dict(hidden_size=112, embed_dim_per_stage=[112, 224, 448, 896],
                          num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 3, 16, 3],
                          global_attention_blocks=[12, 16, 20], window_positional_embedding_background_size=[14, 14]),
        "large": dict(hidden_size=144, embed_dim_per_stage=[144, 288, 576, 1152],
                      num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 6, 36, 4],
                      global_attention_blocks=[23, 33, 43], window_size_per_stage=[8, 4, 16, 8]),
    }[size]
    channels = {"base-plus": [896, 448, 224, 112], "large": [1152, 576, 288, 144]}.get(size, [768, 384, 192, 96])
    vision = Sam2VisionConfig(backbone_config=Sam2HieraDetConfig(**backbone), backbone_channel_list=channels)
    return Sam2Config(vision_config=vision)


def size_of_pt(state: dict[str, torch.Tensor]) -> str:
    """Which published size official tensors are, by their block count (12 / 16 / 24 / 48)."""
    blocks = {int(m[1]) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    return {12: "tiny", 16: "small", 24: "base-plus", 48: "large"}[len(blocks)]


def hub_folder_from_pt(pt: Path, out: Path) -> Path:
    """An official .pt -> the same weights as a transformers Sam2Model saved in the hub layout (strict: every
    tensor of the model filled, nothing left over)."""
    from transformers import Sam2Model

    state = torch.load(pt, map_location="cpu", weights_only=True)["model"]
    model = Sam2Model(transformers_config(size_of_pt(state)))
    model.load_state_dict(convert_keys(state), strict=True)
    model.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------- EdgeTAM, small

def edgetam_config(small: bool = False):
    """EdgeTamConfig with the timm repvit_m1 trunk named explicitly (transformers 5.25's default config misspells
    the architecture key and falls back to resnet50). small: a narrow, shallow repvit and a 64-wide decoder."""
    from transformers import EdgeTamConfig, EdgeTamVisionConfig, TimmWrapperConfig

    args = {"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]}
    dims = [48, 96, 192, 384]
    if small:
        dims = [8, 16, 32, 64]
        args.update(embed_dim=tuple(dims), depth=(1, 1, 1, 1))
    trunk = TimmWrapperConfig(architecture="repvit_m1", model_args=args)
    hidden = 64 if small else 256
    vision = EdgeTamVisionConfig(backbone_config=trunk, backbone_channel_list=dims[::-1], fpn_hidden_size=hidden)
    if not small:
        return EdgeTamConfig(vision_config=vision)
    return EdgeTamConfig(vision_config=vision, prompt_encoder_config=dict(hidden_size=hidden),
                         mask_decoder_config=dict(hidden_size=hidden, mlp_dim=128, iou_head_hidden_dim=hidden))


def random_edgetam_folder(out: Path, seed: int = 0, small: bool = False) -> Path:
    from transformers import EdgeTamModel

    torch.manual_seed(seed)
    perturb(EdgeTamModel(edgetam_config(small)), seed, 0.1 if small else 0.02).eval().save_pretrained(out)
    return out


def small_sam2_config():
    """A Sam2Config at the published frame (1024, features 256 / 128 / 64) but 16 wide, five blocks (one global),
    and a 64-wide prompt encoder and decoder: a few hundred ms per image on a CPU."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    dims = [16, 32, 64, 128]
    backbone = Sam2HieraDetConfig(hidden_size=16, embed_dim_per_stage=dims, num_attention_heads_per_stage=[1, 1, 2, 2],
                                  blocks_per_stage=[1, 1, 2, 1], global_attention_blocks=[3])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1], fpn_hidden_size=64)
    return Sam2Config(vision_config=vision, prompt_encoder_config=dict(hidden_size=64),
                      mask_decoder_config=dict(hidden_size=64, mlp_dim=128, iou_head_hidden_dim=64))


def small_sam2_folder(out: Path, seed: int = 0) -> Path:
    from transformers import Sam2Model

    torch.manual_seed(seed)
    perturb(Sam2Model(small_sam2_config()), seed, 0.1).eval().save_pretrained(out)  # logits of order 1
    return out
