"""Random SAM 3 models for the parity and loading tests: the official `sam3` package's image model as the oracle,
and a tiny transformers `Sam3Model` in the hub layout. No real weights, no network.

- `write_bpe_files(folder)`: a small CLIP BPE vocabulary, written both as the official gzip'd merges file and as
  transformers' CLIPTokenizer files, giving the same ids for plain lowercase words;
- `CpuOnly`: lets the official code (which places two caches on CUDA) build and run on a CPU-only machine;
- `build_official(bpe_path, seed)` / `save_official_checkpoint(model, path)`: the full-size official model, every
  parameter perturbed, and its checkpoint in the layout `sam3.model_builder._load_checkpoint` reads;
- `official_outputs(model, image, text, boxes, labels)`: the oracle's raw query outputs and Sam3Processor's results;
- `tiny_sam3_config()` / `save_tiny_sam3(folder, seed)`: a small random Sam3Model saved by save_pretrained.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

# Words the small vocabulary assembles letter by letter ("visual" is the official text for box-only prompts).
WORDS = ("cat", "dog", "car", "person", "remote", "control", "red", "visual", "the", "of", "bus", "bird", "box",
         "object", "people", "tree", "white", "black", "green", "blue")
CONTEXT_LENGTH = 32  # the official text encoder's and transformers' Sam3 text length
BOS, EOS = "<|startoftext|>", "<|endoftext|>"  # transformers' names; the official file calls them <start_of_text> ...


def _byte_alphabet() -> list[str]:
    """The 256 characters standing for the bytes 0..255 in byte-level BPE, ordered like CLIP's vocabulary: the
    printable Latin-1 bytes keep their own character (listed first), the others get 256, 257, ... in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(kept)]
    return [chr(b) for b in kept] + [chr(256 + i) for i in range(len(others))]


def _merges(words=WORDS) -> list[tuple[str, str]]:
    """Merges building each word from its left end: (c, a), (ca, t</w>), ... shared prefixes listed once."""
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left += right
    return merges


def vocabulary() -> dict[str, int]:
    """Token -> id as both tokenizers number them: bytes, bytes + "</w>", merge results, then the two specials."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in _merges()] + [BOS, EOS]
    assert len(set(tokens)) == len(tokens)
    return {t: i for i, t in enumerate(tokens)}


def write_bpe_files(folder: Path) -> Path:
    """Writes `bpe_simple_vocab_16e6.txt.gz` (a header line, then one "left right" merge a line, no trailing newline:
    the official reader would take an empty last line for a merge) and transformers' CLIP files vocab.json,
    merges.txt, tokenizer_config.json, special_tokens_map.json. Returns the .gz path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{a} {b}" for a, b in _merges()]
    gz = folder / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("\n".join(["#version: 0.2", *lines]))
    (folder / "vocab.json").write_text(json.dumps(vocabulary(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *lines]) + "\n", encoding="utf-8")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": CONTEXT_LENGTH, "do_lower_case": True,
              "errors": "replace", "clean_up_tokenization_spaces": False, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return gz


class CpuOnly(TorchFunctionMode):
    """Runs the official sam3 code on a machine without CUDA. Two constructors put a precomputed cache on
    device="cuda" (the sine position encoding's table, position_encoding.py, and the decoder's box-RPB coordinates,
    decoder.py), and the geometry encoder pins a 4-number scale tensor before copying it (geometry_encoders.py).
    Inside this mode a `device=` argument naming CUDA becomes "cpu" and `Tensor.pin_memory` returns its tensor:
    the math is unchanged, only where those caches live. Use it around both building and inference."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.pin_memory:
            return args[0]
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def perturb_parameters(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Adds std * N(0, 1) to every parameter, std = max(scale, the parameter's own std), so that no parameter keeps
    its initialization (ones, zeros and constant biases included). Buffers are left alone: in both SAM 3 models they
    are computed tables (RoPE frequencies / positions, the causal text mask), not weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            own = p.float().std().item() if p.numel() > 1 else 0.0
            p.add_(max(scale, own) * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def build_official(bpe_path: Path, seed: int = 0, interactive: bool = False):
    """The official full-size SAM 3 image model (840.5 M parameters), as `sam3.model_builder.build_sam3_image_model`
    builds it, on CPU in eval mode, every parameter perturbed. interactive: with its SAM 1 task head too
    (`enable_inst_interactivity`: the tracker's feature pyramid `sam2_convs` and the tracker as
    `inst_interactive_predictor.model`, 11.7 M more), as the released sam3.pt holds them.
    Left as built (computed, not learned): the 32 ViT blocks' RoPE tables `attn.freqs_cis` (complex64, persistent
    buffers), the text encoder's causal `attn_mask` (non-persistent buffer), and the plain-attribute caches
    (`position_encoding.cache`, the decoder's `compilable_cord_cache`)."""
    from sam3.model_builder import build_sam3_image_model

    torch.manual_seed(seed)
    with CpuOnly():
        model = build_sam3_image_model(bpe_path=str(bpe_path), device="cpu", eval_mode=True, load_from_HF=False,
                                       enable_inst_interactivity=interactive)
    # The builder creates the text encoder's positional_embedding and text_projection with torch.empty and never
    # initializes them (the released weights set them; sam3/model/text_encoder_ve.py, the only two): whatever memory
    # held, up to 1e34 seen. Filled as CLIP initializes them. text_projection is unused by the image detector.
    with torch.no_grad():
        text = model.backbone.language_backbone.encoder
        text.positional_embedding.normal_(0, 0.01)
        text.text_projection.normal_(0, text.text_projection.shape[0] ** -0.5)
        wild = [n for n, p in model.named_parameters() if not torch.isfinite(p).all() or p.abs().max() > 100]
    assert not wild, f"parameters the official builder left uninitialized: {wild}"
    return perturb_parameters(model, seed).eval()


INTERACTIVE = "inst_interactive_predictor.model."  # the tracker inside the image model; "tracker." in sam3.pt


def save_official_checkpoint(model, path: Path) -> Path:
    """Saves {"model": {"detector." + key: tensor, "tracker." + key: tensor}} like the released sam3.pt, which
    `_load_checkpoint` reads back: it keeps the keys that contain "detector" and strips "detector.", and with the
    interactive head, maps "tracker." to "inst_interactive_predictor.model." (strict=False; it prints what is
    missing). The tracker's keys are written only for a model built with `interactive=True`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {("tracker." + k[len(INTERACTIVE):] if k.startswith(INTERACTIVE) else "detector." + k): v.detach().clone()
             for k, v in model.state_dict().items()}
    torch.save({"model": state}, path)
    return path


def official_image(model, image):
    """The official processor with the image set (its image side computed once), for several `official_outputs`."""
    from sam3.model.sam3_image_processor import Sam3Processor

    with CpuOnly(), torch.inference_mode():
        processor = Sam3Processor(model, device="cpu", confidence_threshold=0.0)
        return processor, processor.set_image(image)


def official_outputs(model, image, text: str | None, boxes_cxcywh: list[list[float]] | None = None,
                     box_labels: list[bool] | None = None, prepared=None) -> dict[str, torch.Tensor]:
    """The oracle, run through the official `Sam3Processor` (set_image, set_text_prompt, then add_geometric_prompt
    once per box, each normalized cxcywh with its label; text "visual" when only boxes are given, as the processor
    does). The raw outputs are those of the last `model.forward_grounding` call, recorded on the way; batch dropped:
    pred_boxes (Q, 4) normalized cxcywh, pred_logits (Q,), presence_logit (), pred_masks (Q, h, w) low-res logits.
    The processor's own results at confidence_threshold 0.0: scores (K,), boxes (K, 4) xyxy in original pixels,
    masks (K, H, W) bool at the original size, masks_logits (K, H, W) (sigmoid probabilities, its naming).
    prepared: `official_image(model, image)`'s result, reused (the processor's reset_all_prompts first)."""

    if text is None and not boxes_cxcywh:
        raise ValueError("give a text, boxes, or both")
    boxes_cxcywh = boxes_cxcywh or []
    box_labels = [True] * len(boxes_cxcywh) if box_labels is None else box_labels
    recorded = {}
    forward_grounding = model.forward_grounding

    def recording(*args, **kwargs):
        recorded["out"] = forward_grounding(*args, **kwargs)
        return recorded["out"]

    model.forward_grounding = recording  # instance attribute, removed below: the class method is untouched
    try:
        processor, state = prepared if prepared is not None else official_image(model, image)
        with CpuOnly(), torch.inference_mode():
            processor.reset_all_prompts(state)
            if text is not None:
                state = processor.set_text_prompt(text, state)
            for box, label in zip(boxes_cxcywh, box_labels, strict=True):
                state = processor.add_geometric_prompt([float(v) for v in box], bool(label), state)
    finally:
        del model.forward_grounding
    out = recorded["out"]
    return {
        "pred_boxes": out["pred_boxes"][0].clone(),
        "pred_logits": out["pred_logits"][0, :, 0].clone(),
        "presence_logit": out["presence_logit_dec"].reshape(()).clone(),
        "pred_masks": out["pred_masks"][0].clone(),
        "scores": state["scores"].clone(),
        "boxes": state["boxes"].clone(),
        "masks": state["masks"][:, 0].clone(),
        "masks_logits": state["masks_logits"][:, 0].clone(),
    }


def tiny_sam3_config(image_size: int = 224):
    """A small transformers Sam3Config: ViT 32 wide, 2 layers (layer 0 windowed 8x8 over the 16x16 token grid of a
    224 image, layer 1 global), pretrain grid 8x8 (tiled twice like the real 24 -> 72); CLIP text 32 wide, 2 layers,
    ids from `vocabulary()`; DETR encoder 1 layer, decoder 2 layers, 20 queries; everything else 32 wide."""
    from transformers import CLIPTextConfig, Sam3Config

    vocab = vocabulary()
    d = 32
    grid = image_size // 14
    vit = {"hidden_size": d, "intermediate_size": 2 * d, "num_hidden_layers": 2, "num_attention_heads": 2,
           "image_size": image_size, "patch_size": 14, "window_size": grid // 2, "global_attn_indexes": [1],
           "pretrain_image_size": image_size // 2}
    vision = {"backbone_config": {"model_type": "sam3_vit_model", **vit}, "fpn_hidden_size": d,
              "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]}
    text = CLIPTextConfig(vocab_size=len(vocab), hidden_size=d, intermediate_size=2 * d, projection_dim=d,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=CONTEXT_LENGTH,
                          hidden_act="gelu", bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    small = {"hidden_size": d, "num_attention_heads": 2, "intermediate_size": 2 * d}
    return Sam3Config(
        vision_config=vision, text_config=text.to_dict(),
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 2, "num_queries": 20},
        mask_decoder_config={"hidden_size": d, "num_attention_heads": 2},
    )


def tiny_sam3_model(seed: int = 0):
    """Sam3Model(tiny_sam3_config()) seeded, every parameter perturbed, in eval mode."""
    from transformers import Sam3Model

    torch.manual_seed(seed)
    return perturb_parameters(Sam3Model(tiny_sam3_config()), seed).eval()


def save_tiny_sam3(folder: Path, seed: int = 0, confident: bool = False) -> Path:
    """The tiny model saved by save_pretrained (config.json + model.safetensors) with the tokenizer files of
    `write_bpe_files` beside it. Returns folder. confident: the scoring's projections scaled up 4x and the
    presence logit raised by 6, so that some queries score above SAM 3's 0.5 and others below (random weights
    otherwise score every query near 0.25): for the app and CLI tests that run at SAM 3's own threshold."""
    folder = Path(folder)
    model = tiny_sam3_model(seed)
    if confident:
        with torch.no_grad():
            model.dot_product_scoring.query_proj.weight.mul_(4)
            model.dot_product_scoring.text_proj.weight.mul_(4)
            model.detr_decoder.presence_head.layer3.bias.add_(6)
    model.save_pretrained(folder)
    write_bpe_files(folder)
    return folder


def official_interactive(model, prepared, **prompts):
    """The official SAM 1 task head on the image `official_image` set: `model.predict_inst(state, **prompts)`
    (point_coords, point_labels, box, mask_input, multimask_output, in pixels of the image) -> (masks (B?, K, H, W)
    bool, scores (B?, K), low-res logits (B?, K, 288, 288) clamped to +-32), numpy, as SAM3InteractiveImagePredictor
    returns them."""
    _, state = prepared
    with CpuOnly(), torch.inference_mode():
        return model.predict_inst(state, **prompts)


def tiny_sam3_video_model(seed: int = 0):
    """A small transformers Sam3VideoModel (facebook/sam3's model_type "sam3_video"): the detector of
    `tiny_sam3_config()` and a tracker 32 wide over the same 224 frame, every parameter perturbed."""
    from transformers import Sam3VideoConfig, Sam3VideoModel

    detector = tiny_sam3_config()
    tracker = {"vision_config": detector.vision_config.to_dict(), "image_size": 224,
               "prompt_encoder_config": {"hidden_size": 32, "image_size": 224, "patch_size": 14},
               "mask_decoder_config": {"hidden_size": 32, "num_attention_heads": 2, "iou_head_hidden_dim": 32}}
    torch.manual_seed(seed)
    model = Sam3VideoModel(Sam3VideoConfig(detector_config=detector.to_dict(), tracker_config=tracker))
    return perturb_parameters(model, seed).eval()


def save_tiny_sam3_video(folder: Path, seed: int = 0, how: str = "hub") -> Path:
    """The tiny video model in a folder as facebook/sam3 holds it: config.json, model.safetensors and the tokenizer
    files. how="hub": the tensors under the published names (`detector_model.*`, `tracker_neck.*`,
    `tracker_model.prompt_encoder.*`, ...), written as they are in memory; how="save_pretrained": as transformers
    5.25's save_pretrained writes them (the tracker's prefix twice: `tracker_model.tracker_model.*`)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    model = tiny_sam3_video_model(seed)
    if how == "save_pretrained":
        model.save_pretrained(folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    write_bpe_files(folder)
    return folder
