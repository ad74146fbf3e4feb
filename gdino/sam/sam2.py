"""SAM 2.1 and EdgeTAM through transformers' `Sam2Model` / `EdgeTamModel`: hub repos and folders in that layout,
the sam2 repository's .pt files by our key map (gdino.sam.sam2_keymap), and the backend the Segmenter drives.

Frame: the image stretched to 1024 x 1024 (no padding, aspect not kept), as the sam2 package's image predictor
does; the (256, 256) low-res logits cover the whole frame, hence the whole image. The decoder sees prompts as
that predictor builds them: box corners first (labels 2, 3), then the clicks, then one padding point
(label -1); one mask asked for -> mask token 0, or the best of the three when token 0 is unstable
(the models' dynamic_multimask_via_stability).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .backend import Embedding, weights_digest
from .prompts import SegmenterError
from .sam2_keymap import SizeError, official_to_transformers, read_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = "e1"  # the layout of embed()'s tensors (as SAM 1's identity says it): bump it when they change
FAMILIES = ("sam2", "edgetam")  # config.json model_type -> the family (and the first word of `identity`)
_WEIGHT_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class Sam2Backend:
    """A transformers Sam2Model / EdgeTamModel behind the Backend protocol (gdino.sam.backend).

    Features of an image: {"s0": (1, C/8, 256, 256), "s1": (1, C/4, 128, 128), "image": (1, C, 64, 64)}
    (C = 256 for the published models), as `get_image_embeddings` returns them: the decoder's conv_s0 / conv_s1
    already applied, the no-memory embedding already added."""

    mask_threshold = 0.0
    family: str | None = None  # the first word of `identity`; None: from the model's config (sam2 / edgetam)

    def __init__(self, model: torch.nn.Module, name: str):
        self.model = model.eval()
        self.name = name
        family = self.family or ("edgetam" if model.config.model_type == "edgetam" else "sam2")
        self.identity = f"{family}:{LAYOUT}:{weights_digest(model)}"
        self.frame_side = int(model.prompt_encoder.input_image_size)  # 1024
        self.low_res_side = int(model.prompt_encoder.mask_input_size[0])  # 256: the Segmenter reads it
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pixel_values(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, S, S) float32 on the device: to [0, 1] first, then resized (bilinear,
        antialiased, stretched), then ImageNet-normalized, in the sam2 package's order (transformers' processor
        resizes the uint8 image first, a slightly different input). One channel at a time: a 50 MP photo
        costs 200 MB of float, not 600."""
        image = torch.as_tensor(np.require(rgb, np.uint8, ["C", "W"]), device=self.device).permute(2, 0, 1)
        side = self.frame_side
        channels = [F.interpolate(image[c][None, None].float().div(255), size=(side, side), mode="bilinear",
                                  align_corners=False, antialias=True) for c in range(3)]
        x = torch.cat(channels, 1)
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def embed(self, rgb: np.ndarray) -> Embedding:
        with torch.inference_mode():
            s0, s1, image = self.model.get_image_embeddings(self.pixel_values(rgb))
        side = self.frame_side
        return Embedding({"s0": s0, "s1": s1, "image": image}, (side, side), (rgb.shape[0], rgb.shape[1]))

    def to_frame(self, xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        h, w = original_size
        return np.asarray(xy, dtype=np.float64) * np.array([self.frame_side / w, self.frame_side / h])

    def decode(self, emb, *, points, labels, boxes, masks, multimask):
        """See Backend.decode. Mask inputs are clamped to [-32, 32], as the sam2 predictor clamps the logits it
        hands back for the next click. Several prompts with mask inputs are decoded one by one (the model
        broadcasts a mask batch against the prompt batch)."""
        count = len(boxes) if boxes is not None else len(points) if points is not None else 1
        if masks is not None and count > 1:
            parts = [self.decode(emb, points=None if points is None else points[i:i + 1],
                                 labels=None if labels is None else labels[i:i + 1],
                                 boxes=None if boxes is None else boxes[i:i + 1], masks=masks[i:i + 1],
                                 multimask=multimask) for i in range(count)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        xy, lab = [], []
        if boxes is not None:
            xy.append(boxes.reshape(-1, 2, 2).float())
            lab.append(torch.tensor([[2, 3]], device=boxes.device).expand(len(boxes), 2))
        if points is not None:
            xy.append(points.float())
            lab.append(labels.long())
        f = emb.features
        out = self.model(
            image_embeddings=[f["s0"], f["s1"], f["image"]],
            input_points=torch.cat(xy, 1)[None] if xy else None,  # (1, B, P, 2): one image, B prompts
            input_labels=torch.cat(lab, 1)[None].int() if lab else None,
            input_masks=None if masks is None else masks.float().clamp(-32.0, 32.0),
            multimask_output=multimask,
        )
        return out.pred_masks[0], out.iou_scores[0]

    def upscale(self, low_res: torch.Tensor, emb: Embedding) -> torch.Tensor:
        return F.interpolate(low_res.float(), size=emb.original_size, mode="bilinear", align_corners=False)

    def mask_prompt(self, mask: torch.Tensor, emb: Embedding) -> torch.Tensor:
        side = self.low_res_side
        m = F.interpolate(mask.float()[None, None], size=(side, side), mode="bilinear", align_corners=False,
                          antialias=True)
        return (m > 0.5).float() * 40.0 - 20.0


# ------------------------------------------------------------------------------------------ loading

def _model_class(model_type: str):
    from transformers import EdgeTamConfig, EdgeTamModel, Sam2Config, Sam2Model

    return {"sam2": (Sam2Config, Sam2Model), "edgetam": (EdgeTamConfig, EdgeTamModel)}[model_type]


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, unknown: list[str] = ()) -> None:
    """Fill every tensor of `model` from `state` (transformers' names), or a SegmenterError naming the missing,
    unexpected (and `unknown`: official keys no rule maps) keys and the shapes that differ."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected)) + list(unknown)
    wrong = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        lines = ([f"missing: {k}" for k in missing[:10]] + [f"unexpected: {k}" for k in unexpected[:10]]
                 + [f"wrong shape: {k}" for k in wrong[:10]])
        raise SegmenterError(f"{what} does not fit the model ({len(missing)} missing, {len(unexpected)} unexpected, "
                             f"{len(wrong)} of another shape):\n  " + "\n  ".join(lines))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)


def _download(repo: str) -> Path:
    """A hub repo's config and safetensors into huggingface_hub's cache (progress bar), or a SegmenterError
    that names the repo and says how to pass a local folder instead."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=_WEIGHT_FILES))
    except Exception as err:  # offline, unknown repo, gated, HTTP errors: one message for a user
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise SegmenterError(
            f"could not get the SAM model '{repo}' from the Hugging Face Hub ({reason}). If this machine is offline, "
            f"download it elsewhere (`hf download {repo}`) and pass its folder with `--sam FOLDER` "
            f"(a folder holding config.json and model.safetensors)") from err


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else [p.name for p in sorted(folder.glob("*.safetensors"))]
    if not files:
        raise SegmenterError(f"the SAM model folder {folder} has no weights (model.safetensors); pass a folder in the "
                             "Hugging Face layout (config.json + model.safetensors) with `--sam FOLDER`")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            state.update(load_file(str(folder / name)))
        except Exception as err:
            raise SegmenterError(f"could not read {folder / name} ({type(err).__name__}: {err}); the file is corrupt "
                                 "or truncated: download it again") from err
    return state


def load_hub(repo_or_folder: str, *, device, name: str) -> Sam2Backend:
    """A hub repo id ("facebook/sam2.1-hiera-tiny") or a local folder in its layout (config.json with
    model_type sam2 or edgetam, + safetensors) -> its backend on `device`, loaded strictly."""
    path = Path(repo_or_folder).expanduser()
    if path.is_dir():
        folder = path
    elif _REPO_ID.fullmatch(repo_or_folder):
        folder = _download(repo_or_folder)
    else:
        raise SegmenterError(f"SAM model not found: {repo_or_folder} (pass a folder that exists with `--sam FOLDER`)")
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SegmenterError(f"the SAM model folder {folder} has no readable config.json ({err}); pass a folder in the "
                             "Hugging Face layout (config.json + model.safetensors) with `--sam FOLDER`") from err
    family = raw.get("model_type")
    if family not in FAMILIES:
        raise SegmenterError(f"{folder} holds a {family!r} model, not SAM 2 / EdgeTAM (config.json model_type "
                             f"{' or '.join(FAMILIES)}); `--sam` takes vit_b, sam2.1-tiny, edgetam, ... or such a folder")
    config_cls, model_cls = _model_class(family)
    config = config_cls.from_pretrained(str(folder))
    with torch.device("meta"):
        model = model_cls(config)
    state = _read_tensors(folder)
    copy = "shared_image_embedding.positional_embedding"  # the same matrix as the prompt encoder's
    if copy not in state and "prompt_encoder.shared_embedding.positional_embedding" in state:
        state[copy] = state["prompt_encoder.shared_embedding.positional_embedding"]
    load_strict(model, state, f"the SAM model in {folder}")
    model.requires_grad_(False)
    return Sam2Backend(model.to(device), name)


def from_official_state(state: dict[str, torch.Tensor], *, device, name: str) -> Sam2Backend:
    """The sam2 repository's tensors (`torch.load(file)["model"]`) -> a Sam2Model of the size they are, loaded
    strictly through our key map; video-only tensors are dropped."""
    if any(k.startswith("image_encoder.trunk.body.") for k in state):
        raise SegmenterError(f"{name} is EdgeTAM's own checkpoint; gdino loads EdgeTAM in the Hugging Face layout: "
                             "use `--sam edgetam`, or a folder holding its config.json and model.safetensors")
    try:
        _, sizes = read_size(state)
    except SizeError as err:
        raise SegmenterError(f"{name} is not a SAM 2 / 2.1 checkpoint gdino can read: {err}") from err
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    vision = dict(sizes["vision_config"])
    vision["backbone_config"] = Sam2HieraDetConfig(**vision["backbone_config"])
    config = Sam2Config(vision_config=Sam2VisionConfig(**vision))
    mapped, unknown = official_to_transformers(state)
    with torch.device("meta"):
        model = _model_class("sam2")[1](config)
    load_strict(model, mapped, f"the SAM 2 checkpoint {name}", unknown)
    model.requires_grad_(False)
    return Sam2Backend(model.to(device), name)
