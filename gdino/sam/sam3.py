"""SAM 3's interactive head (its "SAM 1 task": boxes and clicks -> masks) as a mask stage, `--sam sam3`:
transformers' `Sam3TrackerModel` (SAM 3's ViT, the tracker's own feature pyramid, a SAM 2 prompt encoder and
mask decoder) behind the Backend protocol, loaded strictly from SAM 3's published weights.

Sources (the weights are gated: Meta's SAM License):
- `sam3` = the hub repo facebook/sam3, or a local folder in its layout: config.json of model_type "sam3_video",
  safetensors holding `detector_model.vision_encoder.backbone.*` (the ViT, shared with the detector),
  `tracker_neck.*` (the tracker's pyramid) and `tracker_model.*` (prompt encoder, mask decoder);
- the official `sam3.pt`: `detector.backbone.vision_backbone.trunk.*` (the ViT; gdino.sam3.keymap's names),
  `detector.backbone.vision_backbone.sam2_convs.*` (the tracker's pyramid), `tracker.sam_prompt_encoder.*`,
  `tracker.sam_mask_decoder.*`, `tracker.no_mem_embed` (the sam2 repository's names, gdino.sam.sam2_keymap).
The video tracker's memory (memory attention and encoder, object pointers) is dropped: one image needs none.

As the official `SAM3InteractiveImagePredictor` serves one image: the picture as SAM 3's processor makes it
(stretched to 1008 x 1008, uint8 antialiased resize, (x - 0.5) / 0.5), prompts in that frame, (288, 288) low-res
logits; before upsampling, background holes of at most MAX_HOLE_AREA low-res pixels (8-connected, logits <= 0)
are filled, as its post-processing does (the official CPU path needs scikit-image for it and skips it without).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .backend import Embedding
from .prompts import SegmenterError
from .sam2 import Sam2Backend, load_strict

HUB_ID = "facebook/sam3"
MAX_HOLE_AREA = 256  # the official predictor's max_hole_area, in low-res pixels
# the video tracker's own tensors (official names under "tracker."; transformers' under "tracker_model.")
_OFFICIAL_VIDEO = re.compile(r"(maskmem_backbone|transformer|obj_ptr_proj|obj_ptr_tpos_proj|mask_downsample)\..*"
                             r"|maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial")
_HUB_VIDEO = re.compile(r"(memory_attention|memory_encoder|mask_downsample|object_pointer_proj"
                        r"|temporal_positional_encoding_projection_layer)\..*|memory_temporal_positional_encoding"
                        r"|no_memory_positional_encoding|no_object_pointer|occlusion_spatial_embedding_parameter")
_FILES = ["config.json", "model*.safetensors", "model.safetensors.index.json"]


class Sam3TrackerBackend(Sam2Backend):
    """Sam3TrackerModel behind the Backend protocol. Features of an image: {"s0": (1, 32, 288, 288),
    "s1": (1, 64, 144, 144), "image": (1, 256, 72, 72)} (conv_s0 / conv_s1 applied, the no-memory embedding added),
    as `get_image_embeddings` returns them; prompts and decoding as SAM 2's (gdino.sam.sam2)."""

    family = "sam3"

    def embed(self, rgb: np.ndarray) -> Embedding:
        """The image's three maps, as the official predictor takes them. Not `get_image_embeddings`: transformers'
        Sam3TrackerModel adds the no-memory embedding to the last map of its neck, the fourth (the detector's 0.5x
        level), and then drops that map, so the 72 x 72 map never gets it (0.09 off on random weights); the official
        predictor and transformers' own video model add it to the 72 x 72 map."""
        model = self.model
        with torch.inference_mode():
            maps = list(model.get_image_features(self.pixel_values(rgb)).fpn_hidden_states[:3])  # (h*w, 1, C) each
            maps[2] = maps[2] + model.no_memory_embedding
            s0, s1, image = [m.permute(1, 2, 0).reshape(1, -1, *size) for m, size in
                             zip(maps, model.backbone_feature_sizes, strict=True)]
        side = self.frame_side
        return Embedding({"s0": s0, "s1": s1, "image": image}, (side, side), (rgb.shape[0], rgb.shape[1]))

    def pixel_values(self, rgb: np.ndarray) -> torch.Tensor:
        from PIL import Image

        from ..sam3.processing import pixels

        return pixels(Image.fromarray(np.require(rgb, np.uint8, ["C"])), self.frame_side).to(self.device)

    def upscale(self, low_res: torch.Tensor, emb: Embedding) -> torch.Tensor:
        """(B, 1, g, g) logits -> (B, 1, H, W): small background holes filled (logit 10), then bilinear."""
        return F.interpolate(fill_holes(low_res.float(), MAX_HOLE_AREA), size=emb.original_size, mode="bilinear",
                             align_corners=False)


def fill_holes(logits: torch.Tensor, max_area: int, threshold: float = 0.0) -> torch.Tensor:
    """(B, 1, g, g) logits -> a copy where every 8-connected region of background (logits <= threshold) of at most
    `max_area` pixels is set to threshold + 10 (foreground), as the official predictor's post-processing does."""
    from scipy import ndimage

    out = logits.clone()
    eight = np.ones((3, 3), dtype=bool)
    for b in range(logits.shape[0]):
        background = (logits[b, 0] <= threshold).cpu().numpy()
        labels, count = ndimage.label(background, structure=eight)
        if count == 0:
            continue
        areas = np.bincount(labels.ravel())
        small = areas <= max_area
        small[0] = False  # label 0 is the foreground
        holes = small[labels]
        if holes.any():
            out[b, 0][torch.from_numpy(holes).to(out.device)] = threshold + 10.0
    return out


# ------------------------------------------------------------------------------------------ loading

def _empty(config):
    """Sam3TrackerModel(config) on the meta device, the ViT's eps as the detector's (gdino.sam3.loading)."""
    from transformers import Sam3TrackerModel

    from ..sam3.loading import empty_model

    return empty_model(config, Sam3TrackerModel)


def _finish(model, state: dict[str, torch.Tensor], what: str, unknown: list[str], device, name: str):
    from ..sam3.loading import computed_buffers_filled

    load_strict(model, state, what, unknown)
    computed_buffers_filled(model).eval().requires_grad_(False)
    return Sam3TrackerBackend(model.to(device), name)


def is_official_sam3(state: dict) -> bool:
    """Whether a checkpoint's tensors are the official SAM 3's (sam3.pt)."""
    return any(str(k).startswith("detector.backbone.vision_backbone.") for k in state)


def from_official_state(state: dict[str, torch.Tensor], *, device, name: str) -> Sam3TrackerBackend:
    """The official sam3.pt's tensors -> the interactive model, strictly: the ViT by gdino.sam3.keymap, the
    tracker's pyramid by the same rules as the detector's, prompt encoder and mask decoder by gdino.sam.sam2_keymap
    (the official decoder's MLP blocks name their layers lin1 / lin2 where the sam2 repository has layers.0 / 1)."""
    from transformers import Sam3TrackerConfig

    from ..sam3.keymap import convert
    from .sam2_keymap import official_to_transformers

    tracker = {k[len("tracker."):]: v for k, v in state.items() if k.startswith("tracker.")}
    if not tracker:
        raise SegmenterError(f"{name} holds SAM 3's image detector without its interactive (tracker) weights: "
                             "`--sam sam3` needs the whole sam3.pt (detector and tracker) or the facebook/sam3 folder")
    model = _empty(Sam3TrackerConfig())
    expected = {k: v.shape for k, v in model.state_dict().items()}
    vit = "detector.backbone.vision_backbone."
    vision = {}
    for k, v in state.items():
        if k.startswith(vit + "trunk."):
            vision[k[len("detector."):]] = v
        elif k.startswith(vit + "sam2_convs."):
            vision["backbone.vision_backbone.convs." + k[len(vit + "sam2_convs."):]] = v
    try:
        mapped = convert(vision, {k: s for k, s in expected.items() if k.startswith("vision_encoder.")})
    except ValueError as err:
        raise SegmenterError(f"{name}: {err}") from err
    decoder = {re.sub(r"(\.mlp)\.lin([12])\.", lambda m: f"{m[1]}.layers.{int(m[2]) - 1}.", k): v
               for k, v in tracker.items() if not _OFFICIAL_VIDEO.fullmatch(k)}
    rest, unknown = official_to_transformers(decoder)
    return _finish(model, {**mapped, **rest}, f"the SAM 3 checkpoint {name}", unknown, device, name)


def _tracker_config(raw: dict):
    """config.json of a sam3_video folder -> Sam3TrackerConfig: the tracker's prompt encoder and mask decoder, the
    vision encoder as the tracker sees it (its own config where it has one, else the detector's)."""
    from transformers import Sam3TrackerConfig

    tracker = raw.get("tracker_config") or {}
    vision = tracker.get("vision_config") or (raw.get("detector_config") or {}).get("vision_config")
    fields = {k: tracker[k] for k in ("prompt_encoder_config", "mask_decoder_config") if k in tracker}
    return Sam3TrackerConfig(vision_config=vision, **fields)


def _hub_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A sam3_video checkpoint's tensors -> the interactive model's names: the detector's ViT, the tracker's neck
    as the vision encoder's, the tracker without its prefix (written once or, as transformers' save_pretrained
    of Sam3VideoModel writes it, twice); the detector's other parts and the video memory are left out."""
    out = {}
    for k, v in tensors.items():
        if k.startswith("detector_model.vision_encoder.backbone."):
            out[k[len("detector_model."):]] = v
        elif k.startswith("tracker_neck."):
            out["vision_encoder.neck." + k[len("tracker_neck."):]] = v
        elif k.startswith("tracker_model."):
            inner = k[len("tracker_model."):]
            inner = inner[len("tracker_model."):] if inner.startswith("tracker_model.") else inner
            if not _HUB_VIDEO.fullmatch(inner):
                out[inner] = v
    return out


_KEPT = ("detector_model.vision_encoder.backbone.", "tracker_neck.", "tracker_model.")


def _read_kept(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors the mask stage uses from a sam3_video folder (the detector's text encoder, DETR and heads stay
    on disk)."""
    from ..sam3.loading import folder_tensors
    from ..weights.hub import WeightsError

    try:
        return folder_tensors(folder, lambda name: name.startswith(_KEPT))
    except WeightsError as err:
        raise SegmenterError(f"{err}; pass facebook/sam3's whole folder with `--sam FOLDER`") from err


def load_folder(folder: Path, *, device, name: str) -> Sam3TrackerBackend:
    """A local folder in facebook/sam3's layout -> the interactive model."""
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise SegmenterError(f"the SAM 3 folder {folder} has no readable config.json ({err})") from err
    if raw.get("model_type") == "sam3_tracker":
        raise SegmenterError(f"{folder} holds transformers' stand-alone SAM 3 tracker (model_type 'sam3_tracker'), whose "
                             f"saved names gdino does not read: pass the {HUB_ID} folder (model_type 'sam3_video') or "
                             "the official sam3.pt")
    if raw.get("model_type") == "sam3":
        raise SegmenterError(f"{folder} holds SAM 3's image detector only (model_type 'sam3'), without the tracker that "
                             f"makes masks from boxes and clicks: `--sam sam3` needs the {HUB_ID} folder "
                             "(model_type 'sam3_video') or the official sam3.pt")
    model = _empty(_tracker_config(raw))
    state = _hub_state(_read_kept(folder))
    if "shared_image_embedding.positional_embedding" not in state and \
            "prompt_encoder.shared_embedding.positional_embedding" in state:
        state["shared_image_embedding.positional_embedding"] = state["prompt_encoder.shared_embedding.positional_embedding"]
    return _finish(model, state, f"the SAM 3 model in {folder}", [], device, name)


def load_sam3_tracker(source: str = HUB_ID, *, device, name: str = "sam3") -> Sam3TrackerBackend:
    """`--sam sam3`: facebook/sam3 through huggingface_hub's cache (folders and sam3.pt files are told apart and
    loaded by gdino.sam.catalog: `load_folder`, `from_official_state`)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(str(source), allow_patterns=_FILES))
    except Exception as err:  # offline, gated, HTTP errors: one message for a person
        raise SegmenterError(
            f"could not get SAM 3 ('{source}') from the Hugging Face Hub ({type(err).__name__}). SAM 3 is gated: accept "
            f"Meta's SAM License on https://huggingface.co/{source} and log in (`hf auth login`); offline, download it "
            f"on a machine that is online (`hf download {source}`) and pass that folder with `--sam FOLDER`") from err
    return load_folder(folder, device=device, name=name)
