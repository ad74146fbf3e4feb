"""SAM 3 weights -> transformers' `Sam3Model` (the image detector), strictly, with its CLIP tokenizer.

Sources, as for Grounding DINO (`gdino/weights/hub.py`):
- a hub repo id (`facebook/sam3`, gated: accept Meta's SAM License on its page and log in) or a local copy of
  one: config.json (model_type "sam3", or "sam3_video" whose detector is the image model), model*.safetensors,
  the CLIP tokenizer files (vocab.json + merges.txt, or tokenizer.json);
- the official checkpoint `sam3.pt` (the `sam3` package's names, mapped by `keymap.py`), with the tokenizer
  files beside it or in `tokenizer=`; sizes then come from transformers' default SAM 3 config, checked against
  every tensor.
Every tensor of the model is set from the file, none left over (the video tracker's are skipped).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..weights.hub import _REPO_ID, WeightsError, _download, _read_json, _read_tensors, load_state_strict

SAM3_TYPES = ("sam3", "sam3_video")
GATED_IDS = ("facebook/sam3",)  # SAM 3's published repo (gated): always loaded as SAM 3
_TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
_HUB_FILES = ["config.json", "model*.safetensors", "model.safetensors.index.json", *_TOKENIZER_FILES]
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
# the detector's names inside a sam3_video checkpoint, and the tracker's, which the image model does not use
_DETECTOR_PREFIX = "detector_model."
_TRACKER_PREFIXES = ("tracker_model.", "tracker_neck.")


def config_type(directory: Path) -> str | None:
    """The model_type a folder's config.json names (None: no readable config.json). Also gdino.sam.catalog's test
    for a SAM 3 folder given to --sam."""
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):  # AttributeError: a config.json that is not an object
        return None


def _official_file(path: Path) -> bool:
    """A local file whose tensors carry the official SAM 3 names (read lazily: memory-mapped or header only)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                names = list(f.keys())
        except Exception:
            return False
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return False
        names = list((obj.get("model", obj) if isinstance(obj, dict) else {}).keys())
    return any(str(n).startswith(("detector.backbone.vision_backbone", "backbone.vision_backbone")) for n in names)


def is_sam3(source: str | os.PathLike) -> bool:
    """Whether `source` names SAM 3 weights (a folder or hub repo whose config says so, or an official checkpoint
    file). A hub id costs one small download (config.json); offline, it answers False and the Grounding DINO
    loader then says what could not be downloaded."""
    source = str(source)
    path = Path(source).expanduser()
    if path.is_dir():
        return config_type(path) in SAM3_TYPES
    if path.is_file():
        return path.suffix in _CHECKPOINT_SUFFIXES and _official_file(path)
    if source in GATED_IDS:  # known SAM 3 repos: their loader says what a gated download needs
        return True
    if _REPO_ID.fullmatch(source) and source.count("/") == 1:
        try:
            config = _download(source, single="config.json")
        except WeightsError:
            return False
        return config_type(config.parent) in SAM3_TYPES
    return False


def _load_tokenizer(directory: Path):
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    if not (directory / "tokenizer.json").is_file() and not all((directory / f).is_file()
                                                                for f in ("vocab.json", "merges.txt")):
        raise WeightsError(f"SAM 3's tokenizer is not in {directory}: it needs CLIP's vocab.json and merges.txt (or "
                           "tokenizer.json), as facebook/sam3 has them; download the whole repo")
    try:
        if (directory / "tokenizer.json").is_file():
            return CLIPTokenizerFast.from_pretrained(str(directory))
        return CLIPTokenizer.from_pretrained(str(directory))
    except Exception as err:
        raise WeightsError(f"could not load SAM 3's tokenizer from {directory} ({type(err).__name__}: {err}); it "
                           "needs CLIP's vocab.json and merges.txt (or tokenizer.json), as facebook/sam3 has them") from err


def folder_tensors(directory: Path, keep) -> dict[str, torch.Tensor]:
    """The tensors of a SAM 3 folder's model*.safetensors whose name `keep(name)` accepts, read one by one (the
    others stay on disk: the detector and the mask stage each use part of facebook/sam3's file)."""
    from safetensors import safe_open

    files = sorted(directory.glob("model*.safetensors"))
    if not files:
        raise WeightsError(f"{directory} has no model.safetensors (a SAM 3 folder needs config.json, "
                           "model.safetensors and the tokenizer files)")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), "pt") as f:
                for key in f.keys():  # noqa: SIM118 (a safetensors file, not a dict)
                    if keep(key):
                        state[key] = f.get_tensor(key)
        except Exception as err:
            raise WeightsError(f"could not read the checkpoint {file} ({type(err).__name__}: {err}); the file is "
                               "corrupt or truncated: download it again") from err
    return state


def _hub_tensors(directory: Path) -> dict[str, torch.Tensor]:
    state = folder_tensors(directory, lambda name: not name.startswith(_TRACKER_PREFIXES))
    return {k.removeprefix(_DETECTOR_PREFIX): v for k, v in state.items()}


def _detector_config(cfg: dict):
    from transformers import Sam3Config

    if cfg.get("model_type") == "sam3_video":
        cfg = cfg.get("detector_config") or {}
    fields = {k: v for k, v in cfg.items() if k not in ("model_type", "transformers_version", "architectures")}
    return Sam3Config(**fields)


OFFICIAL_VIT_EPS = 1e-5  # the official ViT's LayerNorm eps (sam3/model/vitdet.py); transformers' default is 1e-6


def empty_model(config, model_class=None):
    """`model_class(config)` (Sam3Model by default; the mask stage's Sam3TrackerModel, gdino.sam.sam3) on the meta
    device (no memory, no random initialization): its names and shapes, to fill."""
    if model_class is None:
        from transformers import Sam3Model

        model_class = Sam3Model

    # The official ViT normalizes with eps 1e-5; transformers' SAM 3 config defaults to 1e-6, which moved the
    # image features by 3.5e-4 (relative, float64, random full-size weights). Our outputs follow the official model.
    config.vision_config.backbone_config.layer_norm_eps = OFFICIAL_VIT_EPS
    with torch.device("meta"):
        return model_class(config)


def computed_buffers_filled(model):
    """A model whose every file tensor was just loaded (strictly): its computed buffers built, none left empty."""
    _fill_computed_buffers(model)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"internal error: SAM 3 tensors left unset after loading: {left[:5]}")
    return model


def _filled(model, state: dict[str, torch.Tensor]):
    """The empty model with every tensor set from `state` (strict) and its computed buffers built."""
    load_state_strict(model, state)
    return computed_buffers_filled(model)


def _fill_computed_buffers(model) -> None:
    """The buffers computed from sizes (the ViT's rotary frequencies and grid positions, CLIP's position ids):
    no checkpoint holds them, and building on the meta device left them empty."""
    from transformers.models.sam3.modeling_sam3 import Sam3ViTLayer, Sam3ViTRotaryEmbedding

    for module in model.modules():
        if isinstance(module, Sam3ViTRotaryEmbedding):
            inv_freq, _ = module.compute_axial_rope_parameters(module.config)
            module.register_buffer("inv_freq", inv_freq, persistent=False)
            module.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)
        elif isinstance(module, Sam3ViTLayer):
            positions = module.precompute_positions(module.config, module.window_size)
            module.register_buffer("position_ids", positions, persistent=False)
        elif hasattr(module, "position_embedding") and hasattr(module, "token_embedding"):  # CLIP's embeddings
            n = module.position_embedding.num_embeddings
            module.register_buffer("position_ids", torch.arange(n).expand((1, -1)), persistent=False)


def load_sam3(source: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None, device=None):
    """SAM 3's image detector in eval mode, gradients off, with `model.tokenizer` (CLIP, 32 tokens) attached.
    Raises WeightsError (a ValueError) saying what is missing and how to get it."""
    from transformers import Sam3Config

    source = str(source)
    path = Path(source).expanduser()
    if path.is_file():
        from .keymap import convert, detector_tensors

        tok_dir = Path(tokenizer).expanduser() if tokenizer is not None else path.parent
        if not any((tok_dir / f).is_file() for f in ("vocab.json", "tokenizer.json")):
            raise WeightsError(f"SAM 3's tokenizer is not beside {path.name}: put CLIP's vocab.json and merges.txt "
                               "(from facebook/sam3) in the same folder, name their folder with --text-encoder "
                               "(tokenizer= in Python), or load the facebook/sam3 folder itself")
        model = empty_model(Sam3Config())
        expected = {k: v.shape for k, v in model.state_dict().items()}
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True) if path.suffix != ".safetensors" \
            else _read_tensors(path)
        try:
            state = convert(detector_tensors(raw), expected)
        except ValueError as err:
            raise WeightsError(f"{path}: {err}") from err
    else:
        if path.exists() and not path.is_dir():
            raise WeightsError(f"{source} is not a SAM 3 folder or checkpoint file")
        directory = path if path.is_dir() else None
        if directory is None:
            if not _REPO_ID.fullmatch(source):
                raise WeightsError(f"{source!r} is neither a local folder or file nor a hub repo id ('owner/name')")
            try:
                directory = _download(source, _HUB_FILES)
            except WeightsError as err:
                cause = err.__cause__ or err
                raise WeightsError(
                    f"could not get the SAM 3 model '{source}' from the Hugging Face Hub ({type(cause).__name__}). "
                    f"SAM 3 is gated: accept Meta's SAM License on https://huggingface.co/{source} and log in "
                    f"(`hf auth login`); offline, download it on a machine that is online (`hf download {source}`) "
                    "and pass that folder instead") from err
        if config_type(directory) not in SAM3_TYPES:
            raise WeightsError(f"{directory} does not hold a SAM 3 model (its config.json's model_type is "
                               f"{config_type(directory)!r})")
        model = empty_model(_detector_config(_read_json(directory / "config.json")))
        state = _hub_tensors(directory)
        tok_dir = Path(tokenizer).expanduser() if tokenizer is not None else directory
    model = _filled(model, state)
    model.tokenizer = _load_tokenizer(tok_dir)
    model.precision = "exact"
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model
