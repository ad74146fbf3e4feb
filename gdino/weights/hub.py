"""Load published Grounding DINO weights: `load_model(source)`.

Sources, in the order they are recognised:
- a local directory in the transformers layout: config.json + model.safetensors (or pytorch_model.bin)
  + tokenizer files;
- a local original checkpoint file (`groundingdino_swint_ogc.pth`, ...): state dict under "model";
- a local mmdetection checkpoint of MM-Grounding-DINO or LLMDet (`grounding_dino_swin-t_pretrain_obj365_goldg_v3det_
  20231218_095741-e316e297.pth`, LLMDet's `tiny.pth`, ...): state dict under "state_dict", told apart by its keys;
- "owner/repo/path/file.pth": an original checkpoint file inside a hub repo;
- "owner/repo": a hub repo in the transformers layout (IDEA-Research/grounding-dino-tiny, -base, and the
  MM-Grounding-DINO / LLMDet repos saved by MMGroundingDinoForObjectDetection).
Downloads go through huggingface_hub's cache. Loading is strict: every tensor of the model is filled,
and any key we do not recognise, or any shape that does not fit, is an error naming it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ..memory import keep_freed_memory
from ..modeling.config import GroundingDINOConfig, TextConfig
from ..modeling.model import GroundingDINO
from ..modeling.precision import check_precision, make_fast_on_cpu
from .keymap import (
    KeyMapError,
    check_per_layer_heads,
    checkpoint_layout,
    config_from_hub,
    config_from_original,
    convert_state_dict,
    mmdet_family,
)

DEFAULT_TEXT_ENCODER = "bert-base-uncased"
_HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]


class WeightsError(ValueError):
    """A checkpoint could not be found, downloaded, read, or does not fit the model."""


# ------------------------------------------------------------------------------------- downloads

def _download(repo_id: str, filenames: list[str] | None = None, single: str | None = None) -> Path:
    """Fetch files of a hub repo into huggingface_hub's cache; one clear error when that fails."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if single is not None:
            return Path(hf_hub_download(repo_id, single))
        return Path(snapshot_download(repo_id, allow_patterns=filenames))
    except Exception as err:  # offline, unknown repo, gated, HTTP errors: all end the same way for a user
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        what = f"'{single}' from '{repo_id}'" if single else f"'{repo_id}'"
        raise WeightsError(
            f"could not get {what} from the Hugging Face Hub ({reason}). If this machine is offline or the "
            f"repo is private, download it elsewhere (e.g. `hf download {repo_id}`) and pass the "
            "local directory or file instead, e.g. gdino.load_model('/path/to/grounding-dino-tiny') or "
            "gdino.load_model('/path/to/groundingdino_swint_ogc.pth', text_encoder='/path/to/bert-base-uncased')."
        ) from err


def _resolve_dir(source: str, files: list[str]) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise WeightsError(f"{source} is a file, but not a checkpoint gdino knows (.pth, .pt, .safetensors "
                           "in a transformers directory)")
    if not _REPO_ID.fullmatch(source):
        raise WeightsError(f"{source!r} is neither a local directory or file nor a hub repo id ('owner/name')")
    return _download(source, files)


# ------------------------------------------------------------------------------------ file reading

def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors / .bin / .pth file, memory-mapped where the format allows."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # old non-zip pickles cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"could not read the checkpoint {path} ({type(err).__name__}: {err}); the file is "
                           "corrupt or truncated: download it again") from err
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors (nor one under 'model' or 'state_dict')")
    return obj


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"could not read {path}: {err}") from err


def _text_config_from(text_encoder: str) -> tuple[TextConfig, Path]:
    directory = _resolve_dir(text_encoder, ["config.json", *_TOKENIZER_FILES])
    if not (directory / "config.json").is_file():
        raise WeightsError(f"the text encoder {text_encoder!r} has no config.json (a BERT directory needs its "
                           "config.json and tokenizer files)")
    cfg = _read_json(directory / "config.json")
    defaults = TextConfig()
    fields = {f: cfg.get(f, getattr(defaults, f)) for f in defaults.__dataclass_fields__}
    return TextConfig(**fields), directory


def load_tokenizer(directory: str | os.PathLike):
    """The tokenizer saved with the weights (or with the text encoder, for original checkpoints)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:
        raise WeightsError(f"could not load a tokenizer from {directory} ({type(err).__name__}: {err}); it "
                           "needs tokenizer.json or vocab.txt (bert-base-uncased's)") from err


# ---------------------------------------------------------------------------------- strict loading

def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Fill every parameter and persistent buffer of `model` from `state` (our key names), or raise
    naming every missing key, unexpected key and shape mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        lines = ([f"missing: {k}" for k in missing[:15]] + [f"unexpected: {k}" for k in unexpected[:15]]
                 + [f"shape: {m}" for m in mismatched[:15]])
        counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} wrong shape"
        raise WeightsError(f"the checkpoint does not fit the model ({counts}):\n  " + "\n  ".join(lines))
    model.load_state_dict(state, strict=True, assign=True)


def _finish(model: GroundingDINO, device, dtype) -> GroundingDINO:
    model.precision = "exact"
    model.eval()
    model.requires_grad_(False)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    if next(model.parameters()).device.type == "cpu":
        keep_freed_memory()  # a quarter of a CPU forward was page faults; see gdino/memory.py
    return model


# ------------------------------------------------------------------------------------- entry point

def _is_checkpoint_file(source: str) -> bool:
    return source.endswith((".pth", ".pt", ".ckpt"))


def load_model(
    source: str | os.PathLike,
    *,
    text_encoder: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    precision: str = "exact",
) -> GroundingDINO:
    """
    Build a GroundingDINO from published weights, in eval mode, gradients off.

    source: a transformers-layout directory or hub id (IDEA-Research/grounding-dino-tiny, or an
        MM-Grounding-DINO one: its config.json's model_type picks the family), or a checkpoint file, local
        or as "owner/repo/file.pth": IDEA's original (groundingdino_swint_ogc.pth) or mmdetection's of
        MM-Grounding-DINO / LLMDet (family and sizes read from its tensors).
    text_encoder: for checkpoint files, the BERT whose config and tokenizer go with them (a local
        directory or a hub id; default bert-base-uncased). Ignored for the transformers layout, which
        carries its own.
    precision: "exact" (as `dtype` says; float32 gives transformers' outputs) or "fast": on a CPU the heavy
        linear layers in bfloat16 where it has bfloat16 units, else int8 (the box-placing ones stay float32); on
        CUDA bfloat16; see gdino/modeling/precision.py. `model.precision` says which.
    The tokenizer is attached as `model.tokenizer` (forward never uses it).
    """
    check_precision(precision)
    if precision == "fast":
        return _fast(source, text_encoder, device, dtype)
    source = str(source)
    if _is_checkpoint_file(source):
        local = Path(source).expanduser()
        if local.is_file():
            path = local
        elif not local.exists() and source.count("/") >= 2 and not source.startswith((".", "/", "~")):
            owner, name, filename = source.split("/", 2)
            path = _download(f"{owner}/{name}", single=filename)
        else:
            raise WeightsError(f"checkpoint file not found: {source}")
        return _load_original(path, str(text_encoder or DEFAULT_TEXT_ENCODER), device, dtype)
    directory = _resolve_dir(source, ["config.json", *_HUB_WEIGHTS, *_TOKENIZER_FILES])
    return _load_hub_dir(directory, device, dtype)


def _fast(source, text_encoder, device, dtype) -> GroundingDINO:
    on_cuda = torch.device(device if device is not None else "cpu").type == "cuda"
    wanted = torch.bfloat16 if on_cuda else torch.float32
    if dtype not in (None, wanted):
        raise ValueError(f"precision='fast' chooses the dtype itself ({wanted} on this device); leave dtype unset")
    model = load_model(source, text_encoder=text_encoder, device=device, dtype=wanted)
    if on_cuda:
        model.precision = "fast"
        return model
    return make_fast_on_cpu(model)


def _load_hub_dir(directory: Path, device, dtype) -> GroundingDINO:
    if not (directory / "config.json").is_file():
        raise WeightsError(f"{directory} has no config.json: not a transformers-layout model directory")
    weights = next((directory / f for f in _HUB_WEIGHTS if (directory / f).is_file()), None)
    if weights is None:
        raise WeightsError(f"{directory} has no {' or '.join(_HUB_WEIGHTS)}")
    cfg = _read_json(directory / "config.json")
    if cfg.get("model_type") not in (None, "grounding-dino", "mm-grounding-dino"):
        raise WeightsError(f"{directory} holds a {cfg.get('model_type')!r} model, not grounding-dino "
                           "(nor mm-grounding-dino)")
    try:
        config = config_from_hub(cfg)
        state = convert_state_dict(_read_tensors(weights), "hub", config.family)
        if config.family == "mm_gdino":
            check_per_layer_heads(state, config.decoder_layers)
    except (KeyMapError, ValueError) as err:
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(f"{weights}: {err}") from err
    model = _build(config, state)
    model.tokenizer = load_tokenizer(directory)
    return _finish(model, device, dtype)


def _load_original(path: Path, text_encoder: str, device, dtype) -> GroundingDINO:
    tensors = _read_tensors(path)  # a broken file is reported before anything is downloaded
    text_config, text_dir = _text_config_from(text_encoder)
    try:
        layout = checkpoint_layout(tensors)
        family = mmdet_family(tensors) if layout == "mmdet" else "gdino"  # read from the tensors: there is no config
        state = convert_state_dict(tensors, layout, family)
        config = config_from_original(state, text_config, family)
        if family == "mm_gdino":
            check_per_layer_heads(state, config.decoder_layers)
    except KeyMapError as err:
        raise WeightsError(f"{path}: {err}") from err
    model = _build(config, state)
    model.tokenizer = load_tokenizer(text_dir)
    return _finish(model, device, dtype)


def _build(config: GroundingDINOConfig, state: dict[str, torch.Tensor]) -> GroundingDINO:
    # Built on the meta device: random initialisation of ~170M parameters costs more than reading
    # them, and every one of them is replaced by the checkpoint's tensor anyway.
    with torch.device("meta"):
        model = GroundingDINO(config)
    load_state_strict(model, state)
    _materialize_derived_buffers(model)
    return model


def _materialize_derived_buffers(model: torch.nn.Module) -> None:
    """Fill the non-persistent buffers (not in any checkpoint) that meta construction left empty."""
    from timm.models.swin_transformer import WindowAttention

    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.relative_position_index = torch.empty(module.window_area, module.window_area, dtype=torch.long)
            module.init_non_persistent_buffers()
        elif hasattr(module, "position_ids") and hasattr(module, "word_embeddings"):  # BertEmbeddings
            n = module.position_embeddings.num_embeddings
            module.register_buffer("position_ids", torch.arange(n).expand((1, -1)), persistent=False)
            module.register_buffer("token_type_ids", torch.zeros(1, n, dtype=torch.long), persistent=False)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"internal error: tensors left unmaterialized after loading: {left[:5]}")
