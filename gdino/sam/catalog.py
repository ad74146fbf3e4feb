"""The one place a SAM is named and loaded: `--sam NAME|PATH|none` in the app and the CLI, and
`Segmenter.from_pretrained`.

    vit_b, vit_l, vit_h                       SAM 1 (segment-anything's official files)
    sam2.1-tiny, -small, -base-plus, -large   SAM 2.1 (hub repos facebook/sam2.1-hiera-*)
    edgetam                                   EdgeTAM (the hub repo transformers documents)
    sam3                                      SAM 3's interactive head (facebook/sam3, gated; gdino.sam.sam3)
    a file                                    SAM 1 .pth, SAM 2.1 .pt (the sam2 repository's) or SAM 3's sam3.pt, told
                                              apart by its keys
    a folder                                  a SAM 2.1 / EdgeTAM / SAM 3 model in the hub layout (config.json + weights)
"""

from __future__ import annotations

import os
from pathlib import Path

from .prompts import SegmenterError

SAM1_NAMES = ("vit_b", "vit_l", "vit_h")
HUB_REPOS = {  # name -> the hub repo in transformers' layout
    "sam2.1-tiny": "facebook/sam2.1-hiera-tiny",
    "sam2.1-small": "facebook/sam2.1-hiera-small",
    "sam2.1-base-plus": "facebook/sam2.1-hiera-base-plus",
    "sam2.1-large": "facebook/sam2.1-hiera-large",
    "edgetam": "yonigozlan/EdgeTAM-hf",
}
NAMES = (*SAM1_NAMES, *HUB_REPOS)
NONE = "none"  # --sam none: no masks
# SAM 3's interactive head (facebook/sam3, gated: Meta's SAM License): named on purpose, never a default or a menu entry
SAM3 = "sam3"
NAMED = (*NAMES, SAM3)  # every name --sam takes besides none / default (a spec that is not a file or a folder)
CUDA_DEFAULT = "sam2.1-large"
# On CPU: the fastest backend whose published quality is at least SAM 1 vit_b's. Published, SA-23 mIoU at 1 (5)
# clicks: vit_b 55.9 (80.9); SAM 2.1 base-plus 61.9 (83.5); large higher; EdgeTAM 55.5 (81.7), below at 1 click;
# tiny and small: none. Measured here: base-plus embeds in 0.45x vit_b's time. docs/segmentation.md has the sources.
CPU_DEFAULT = "sam2.1-base-plus"


def default_name(device_type: str) -> str:
    """The SAM used when none is named: CPU_DEFAULT on CPU, CUDA_DEFAULT on CUDA."""
    return CUDA_DEFAULT if device_type == "cuda" else CPU_DEFAULT


def describe(name: str) -> str:
    """A menu line for a name: which family and size it is."""
    if name in SAM1_NAMES:
        return f"SAM 1 {name}"
    if name.startswith("sam2.1-"):
        return f"SAM 2.1 {name.removeprefix('sam2.1-')}"
    if name == "edgetam":
        return "EdgeTAM"
    if name == SAM3:
        return "SAM 3 (gated)"
    return Path(name).name


def is_sam2_state(state: dict) -> bool:
    """Whether a checkpoint's tensors are a SAM 2 / 2.1 model of the sam2 repository (its Hiera trunk)."""
    return any(k.startswith("image_encoder.trunk.") for k in state)


def load_backend(name_or_path: str | os.PathLike, *, device, cache_dir: Path | None = None):
    """A name, file or folder -> its Backend on `device`. Raises SegmenterError (what is wrong, and the fix)."""
    text = str(name_or_path)
    if text in SAM1_NAMES:
        from .sam1 import load_sam1

        return load_sam1(text, device=device, cache_dir=cache_dir)
    if text == SAM3:
        from .sam3 import load_sam3_tracker

        return load_sam3_tracker(device=device)
    if text in HUB_REPOS:
        from .sam2 import load_hub

        return load_hub(HUB_REPOS[text], device=device, name=text)
    path = Path(text).expanduser()
    if path.is_dir():
        from ..sam3.loading import config_type

        if config_type(path) in ("sam3", "sam3_video", "sam3_tracker"):  # SAM 3 (refused there unless sam3_video)
            from .sam3 import load_folder

            return load_folder(path, device=device, name=path.name)
        from .sam2 import load_hub

        return load_hub(str(path), device=device, name=path.name)
    if path.is_file():
        from .sam1 import Sam1Backend, build_sam_from_state, read_checkpoint

        state = read_checkpoint(path)
        from .sam3 import is_official_sam3

        if is_official_sam3(state):
            from .sam3 import from_official_state as sam3_from_state

            return sam3_from_state(state, device=device, name=path.name)
        if is_sam2_state(state):
            from .sam2 import from_official_state

            return from_official_state(state, device=device, name=path.name)
        sam = build_sam_from_state(state)
        sam.requires_grad_(False)
        return Sam1Backend(sam.to(device), path.name)
    if "/" not in text and "\\" not in text and not text.endswith((".pt", ".pth")):
        raise SegmenterError(f"unknown SAM model {text!r}: use one of {', '.join(NAMED)}, a checkpoint file or a "
                             "model folder")
    raise SegmenterError(f"SAM checkpoint not found: {text} (use one of {', '.join(NAMED)}, or the path of a SAM file "
                         "or folder that exists)")
