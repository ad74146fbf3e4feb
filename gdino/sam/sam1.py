"""SAM 1 (Meta's segment-anything): the official checkpoints, their download, sizes read from the tensors, and
the backend the Segmenter drives.

Frame: the long side resized to the encoder's size (1024), the rest padded; the low-res logits cover the
padded frame, as in segment-anything's predictor.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .backend import Embedding, weights_digest
from .prompts import SegmenterError


@dataclass(frozen=True)
class SamCheckpoint:
    filename: str
    size: int  # bytes
    sha256: str

    @property
    def url(self) -> str:
        return f"https://dl.fbaipublicfiles.com/segment_anything/{self.filename}"


# The official files (sizes and SHA-256 as published alongside them).
SAM_CHECKPOINTS = {
    "vit_b": SamCheckpoint("sam_vit_b_01ec64.pth", 375042383,
                           "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": SamCheckpoint("sam_vit_l_0b3195.pth", 1249524607,
                           "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_h": SamCheckpoint("sam_vit_h_4b8939.pth", 2564550879,
                           "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
}


def default_cache_dir() -> Path:
    """Where downloaded SAM 1 checkpoints are kept: $GDINO_CACHE/sam (default ~/.cache/gdino/sam)."""
    return Path(os.environ.get("GDINO_CACHE", Path.home() / ".cache" / "gdino")) / "sam"


# ------------------------------------------------------------------------------------ checkpoints

def resolve_checkpoint(name_or_path: str | os.PathLike, cache_dir: Path | None = None) -> Path:
    """'vit_b' / 'vit_l' / 'vit_h' -> the official file in the cache (downloaded once, with a progress
    bar, verified by size and SHA-256), or a local path."""
    text = str(name_or_path)
    if text in SAM_CHECKPOINTS:
        ckpt = SAM_CHECKPOINTS[text]
        path = (cache_dir or default_cache_dir()) / ckpt.filename
        if path.is_file() and path.stat().st_size == ckpt.size:
            return path
        return _download(ckpt, path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if re.fullmatch(r"vit_\w+|sam\w*", text):
        raise SegmenterError(f"unknown SAM model {text!r}: use one of {sorted(SAM_CHECKPOINTS)} or a checkpoint path")
    raise SegmenterError(f"SAM checkpoint not found: {text} (use one of {sorted(SAM_CHECKPOINTS)} or a path to a .pth file)")


def _download(ckpt: SamCheckpoint, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    try:
        torch.hub.download_url_to_file(ckpt.url, str(partial), progress=True)
    except Exception as err:
        partial.unlink(missing_ok=True)
        raise SegmenterError(
            f"could not download the SAM checkpoint {ckpt.filename} from {ckpt.url} ({type(err).__name__}: {err}). "
            f"Download it elsewhere and pass its path, e.g. Segmenter.from_pretrained('/path/to/{ckpt.filename}') "
            f"(or put it in {path.parent})") from err
    digest = hashlib.sha256()
    with open(partial, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    if partial.stat().st_size != ckpt.size or digest.hexdigest() != ckpt.sha256:
        partial.unlink(missing_ok=True)
        raise SegmenterError(f"the downloaded {ckpt.filename} is damaged (size or SHA-256 differ); try again")
    partial.rename(path)
    return path


@dataclass(frozen=True)
class SamShape:
    """The sizes of a SAM, as its checkpoint's tensor shapes tell them."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    global_attn_indexes: tuple[int, ...]
    window_size: int
    prompt_dim: int
    mask_in_chans: int
    num_multimask_outputs: int
    decoder_depth: int
    decoder_mlp_dim: int
    iou_head_depth: int
    iou_head_hidden_dim: int


def sam_shape_from_state(state: dict[str, torch.Tensor]) -> SamShape:
    """Read a SAM's sizes from its tensors (official vit_b / vit_l / vit_h, or smaller variants)."""
    def shape(key):
        if key not in state:
            raise SegmenterError(f"not a SAM checkpoint: it has no {key!r}")
        return tuple(state[key].shape)

    def count(prefix):
        found = {int(m[1]) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
        return max(found) + 1 if found else 0

    embed_dim, _, patch, _ = shape("image_encoder.patch_embed.proj.weight")
    grid = shape("image_encoder.pos_embed")[1]
    depth = count("image_encoder.blocks.")
    rel = [shape(f"image_encoder.blocks.{i}.attn.rel_pos_h")[0] for i in range(depth)]
    windows = {(r + 1) // 2 for r in rel if r != 2 * grid - 1}
    return SamShape(
        img_size=grid * patch, patch_size=patch, embed_dim=embed_dim, depth=depth,
        num_heads=embed_dim // shape("image_encoder.blocks.0.attn.rel_pos_h")[1],
        mlp_ratio=shape("image_encoder.blocks.0.mlp.lin1.weight")[0] / embed_dim,
        global_attn_indexes=tuple(i for i, r in enumerate(rel) if r == 2 * grid - 1),
        window_size=windows.pop() if windows else 0, prompt_dim=shape("image_encoder.neck.0.weight")[0],
        mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
        num_multimask_outputs=shape("mask_decoder.mask_tokens.weight")[0] - 1,
        decoder_depth=count("mask_decoder.transformer.layers."),
        decoder_mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        iou_head_depth=count("mask_decoder.iou_prediction_head.layers."),
        iou_head_hidden_dim=shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
    )


def build_sam_from_state(state: dict[str, torch.Tensor]):
    """A segment-anything `Sam` of the checkpoint's sizes, loaded strictly. The decoder's 8 attention
    heads are the only size the shapes cannot tell."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    s = sam_shape_from_state(state)
    grid = s.img_size // s.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=s.img_size, patch_size=s.patch_size, embed_dim=s.embed_dim, depth=s.depth, num_heads=s.num_heads,
            mlp_ratio=s.mlp_ratio, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=s.global_attn_indexes, window_size=s.window_size, out_chans=s.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(embed_dim=s.prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(s.img_size, s.img_size), mask_in_chans=s.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=s.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=s.decoder_depth, embedding_dim=s.prompt_dim, mlp_dim=s.decoder_mlp_dim,
                                          num_heads=8),
            transformer_dim=s.prompt_dim, iou_head_depth=s.iou_head_depth, iou_head_hidden_dim=s.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise SegmenterError(f"the SAM checkpoint does not fit the model: {str(err)[:500]}") from err
    return sam.eval()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A SAM checkpoint file (a state dict, or one under "model" as the SAM 2 files hold it) -> its tensors."""
    try:
        try:  # memory-mapped: a tensor is read when used (SAM 3's sam3.pt is 3.4 GB, its mask stage uses half)
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a file in torch's old (not zip) format cannot be mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SegmenterError(f"could not read the SAM checkpoint {path} ({type(err).__name__}: {err}); the file is "
                             "corrupt or truncated: download it again") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise SegmenterError(f"{path} does not hold a SAM state dict")
    return state


def load_sam(name_or_path: str | os.PathLike = "vit_b", *, device=None, cache_dir: Path | None = None):
    """'vit_b' / 'vit_l' / 'vit_h' or a SAM 1 checkpoint file -> segment-anything's `Sam`, loaded strictly."""
    sam = build_sam_from_state(read_checkpoint(resolve_checkpoint(name_or_path, cache_dir)))
    sam.requires_grad_(False)
    return sam.to(device) if device is not None else sam


# ----------------------------------------------------------------------------------------- backend

class Sam1Backend:
    """A segment-anything `Sam` behind the Backend protocol."""

    mask_threshold = 0.0

    def __init__(self, sam, name: str = "sam"):
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam.eval()
        self.name = name
        self.identity = f"sam1:e1:{weights_digest(sam)}"  # e1: the layout of embed()'s tensors; bump it when they change
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def low_res_side(self) -> int:
        """g: the side of the decoder's low-res logits, 4 x the embedding's grid (256 for the official models)."""
        return 4 * self.sam.prompt_encoder.image_embedding_size[0]

    def embed(self, rgb: np.ndarray) -> Embedding:
        resized = self.transform.apply_image(rgb)
        with torch.inference_mode():
            t = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
            features = self.sam.image_encoder(self.sam.preprocess(t))
        return Embedding({"image": features}, tuple(t.shape[-2:]), (rgb.shape[0], rgb.shape[1]))

    def to_frame(self, xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        return self.transform.apply_coords(np.asarray(xy, dtype=np.float64), original_size)

    def decode(self, emb, *, points, labels, boxes, masks, multimask):
        prompt = self.sam.prompt_encoder
        sparse, dense = prompt(points=None if points is None else (points, labels), boxes=boxes, masks=masks)
        return self.sam.mask_decoder(image_embeddings=emb.features["image"], image_pe=prompt.get_dense_pe(),
                                     sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                     multimask_output=multimask)

    def upscale(self, low_res: torch.Tensor, emb: Embedding) -> torch.Tensor:
        return self.sam.postprocess_masks(low_res, emb.input_size, emb.original_size)

    def mask_prompt(self, mask: torch.Tensor, emb: Embedding) -> torch.Tensor:
        import torch.nn.functional as F

        grid = 4 * emb.features["image"].shape[-1]
        size = self.sam.image_encoder.img_size
        m = F.interpolate(mask[None, None], size=emb.input_size, mode="bilinear", align_corners=False)
        m = F.pad(m, (0, size - emb.input_size[1], 0, size - emb.input_size[0]))
        m = F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)
        return (m > 0.5).float() * 40.0 - 20.0


def load_sam1(name_or_path: str | os.PathLike, *, device=None, cache_dir: Path | None = None) -> Sam1Backend:
    sam = load_sam(name_or_path, device=device, cache_dir=cache_dir)
    text = str(name_or_path)
    return Sam1Backend(sam, text if text in SAM_CHECKPOINTS else Path(text).name)
