"""SAM stage: boxes -> masks in one decoder call, click refinement, with Meta's segment-anything.

    seg = gdino.Segmenter.from_pretrained("vit_b")
    result = seg.segment(image, boxes_xyxy)          # masks (N, H, W) bool, scores (N,)
    refined = seg.refine(image, points=[(x, y)], labels=[1], box=box)
    dets = seg.add_masks(image, detections)          # supervision.Detections with .mask

Images are read upright (EXIF applied), the frame the detector's boxes are in. The image embedding
(the expensive part) is cached per image content, so refinement clicks only run the small decoder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checks import whole_number
from .processing import MAX_PIXELS, ImageLike, to_rgb


class SegmenterError(ValueError):
    """A SAM checkpoint or a prompt could not be used."""


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


@dataclass
class Masks:
    masks: np.ndarray  # (N, H, W) bool, in the upright image's pixels
    scores: np.ndarray  # (N,) float32, SAM's predicted IoU of each mask (0 for empty boxes)


@dataclass
class Refined:
    mask: np.ndarray  # (H, W) bool
    score: float  # SAM's predicted IoU
    logits: np.ndarray  # (1, 4g, 4g) low-resolution logits; pass back as `mask=` for the next click


@dataclass
class _Embedding:
    features: torch.Tensor  # (1, C, g, g)
    input_size: tuple[int, int]  # (h, w) after resizing the long side to the encoder's size
    original_size: tuple[int, int]  # (h, w) of the upright image


def default_cache_dir() -> Path:
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


def load_sam(name_or_path: str | os.PathLike = "vit_b", *, device=None, cache_dir: Path | None = None):
    path = resolve_checkpoint(name_or_path, cache_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SegmenterError(f"could not read the SAM checkpoint {path} ({type(err).__name__}: {err}); the file is "
                             "corrupt or truncated: download it again") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise SegmenterError(f"{path} does not hold a SAM state dict")
    sam = build_sam_from_state(state)
    sam.requires_grad_(False)
    return sam.to(device) if device is not None else sam


# ------------------------------------------------------------------------------------- Segmenter

class Segmenter:
    def __init__(self, sam, *, cache_size: int = 4, max_pixels: int = MAX_PIXELS):
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam.eval()
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.cache_size = whole_number("cache_size", cache_size, 0)
        self.max_pixels = whole_number("max_pixels", max_pixels, 1)
        self._cache: OrderedDict[str, _Embedding] = OrderedDict()
        self.encoder_calls = 0  # how many image embeddings were computed (the cache's effect, observable)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *, device=None,
                        cache_dir: Path | None = None, **kwargs) -> Segmenter:
        """name_or_path: 'vit_b', 'vit_l', 'vit_h' or a checkpoint path; default vit_b on CPU and vit_l on
        CUDA (vit_h needs more memory than 8 GB cards have). device: default CUDA when available."""
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if name_or_path is None:
            name_or_path = "vit_l" if device.type == "cuda" else "vit_b"
        return cls(load_sam(name_or_path, device=device, cache_dir=cache_dir), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------------------------- boxes

    def segment(self, image: ImageLike, boxes_xyxy) -> Masks:
        """boxes_xyxy: (N, 4) in pixels of the upright image -> one mask per box, all boxes in one decoder
        call. Boxes are clipped to the image; a box with no area left gives an empty mask, score 0.
        None, another shape (one box is [[x0, y0, x1, y1]]) and NaN / infinite coordinates are refused with a
        SegmenterError (a ValueError); [] gives no masks."""
        boxes = _rows(boxes_xyxy, 4, "boxes", "[x0, y0, x1, y1]")
        rgb = to_rgb(image, self.max_pixels)
        h, w = rgb.height, rgb.width
        boxes = np.stack([boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h), boxes[:, 2].clip(0, w),
                          boxes[:, 3].clip(0, h)], 1)
        masks = np.zeros((len(boxes), h, w), dtype=bool)
        scores = np.zeros(len(boxes), dtype=np.float32)
        usable = np.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
        if len(usable) == 0:
            return Masks(masks, scores)  # no model call at all
        emb = self._embed(rgb)
        with torch.inference_mode():
            box_t = torch.as_tensor(self.transform.apply_boxes(boxes[usable], emb.original_size),
                                    dtype=torch.float32, device=self.device)
            sparse, dense = self.sam.prompt_encoder(points=None, boxes=box_t, masks=None)
            low_res, iou = self.sam.mask_decoder(
                image_embeddings=emb.features, image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            # upsample in groups: N full-size float masks at once could take GBs on large photos
            for start in range(0, len(usable), 16):
                part = self.sam.postprocess_masks(low_res[start:start + 16], emb.input_size, emb.original_size)
                masks[usable[start:start + 16]] = (part[:, 0] > self.sam.mask_threshold).cpu().numpy()
            scores[usable] = iou[:, 0].float().cpu().numpy()
        return Masks(masks, scores)

    def add_masks(self, image: ImageLike, detections):
        """supervision.Detections (xyxy in the upright image) -> a copy with .mask (N, H, W) filled and
        data["mask_score"] holding SAM's predicted IoU."""
        import copy

        import supervision as sv

        if not isinstance(detections, sv.Detections):
            raise SegmenterError(f"add_masks takes the supervision.Detections of the image (e.g. from Detector), got "
                                 f"{type(detections).__name__}; for plain boxes use segment(image, boxes_xyxy)")
        result = self.segment(image, detections.xyxy)
        out = copy.deepcopy(detections)
        out.mask = result.masks
        out.data["mask_score"] = result.scores
        return out

    # ------------------------------------------------------------------------------------ clicks

    def refine(self, image: ImageLike, points, labels, box=None, mask=None) -> Refined:
        """Positive (label 1) and negative (label 0) clicks, in pixels of the upright image, optionally
        with the object's box and its previous mask: a (H, W) bool mask or the `logits` of the last
        `Refined`. With one click and nothing else SAM's three candidate masks are compared and the one
        with the best predicted quality is returned; with more context SAM gives one mask.

        points: (N, 2) (x, y), [] for none (one point is [(x, y)]); labels: (N,) of 1 / 0 (or True / False);
        box: [x0, y0, x1, y1]. Anything else (None, other shapes, NaN, other labels) is a SegmenterError."""
        pts = _rows(points, 2, "points", "(x, y)")
        lab = _labels(labels, len(pts))
        if box is not None:
            box = _rows(box, 4, "box", "[x0, y0, x1, y1]", one=True)
        rgb = to_rgb(image, self.max_pixels)
        h, w = rgb.height, rgb.width
        outside = [(float(x), float(y)) for x, y in pts if not (0 <= x <= w and 0 <= y <= h)]
        if outside:
            raise SegmenterError(f"points outside the {w}x{h} image: {outside[:3]}")
        if len(pts) == 0 and box is None:
            raise SegmenterError("refine needs at least one point or a box")
        emb = self._embed(rgb)
        grid = 4 * emb.features.shape[-1]
        with torch.inference_mode():
            point_prompt = None
            if len(pts):
                coords = torch.as_tensor(self.transform.apply_coords(pts, emb.original_size), dtype=torch.float32,
                                         device=self.device)[None]
                point_prompt = (coords, torch.as_tensor(lab, dtype=torch.int64, device=self.device)[None])
            box_t = None
            if box is not None:
                box_t = torch.as_tensor(self.transform.apply_boxes(box, emb.original_size), dtype=torch.float32,
                                        device=self.device)
            mask_t = None
            if mask is not None:
                mask_t = self._mask_prompt(np.asarray(mask), emb, grid)
            multimask = len(pts) == 1 and box_t is None and mask_t is None
            sparse, dense = self.sam.prompt_encoder(points=point_prompt, boxes=box_t, masks=mask_t)
            low_res, iou = self.sam.mask_decoder(
                image_embeddings=emb.features, image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)
            best = int(iou[0].argmax())
            full = self.sam.postprocess_masks(low_res[:, best:best + 1], emb.input_size, emb.original_size)
            return Refined(mask=(full[0, 0] > self.sam.mask_threshold).cpu().numpy(), score=float(iou[0, best]),
                           logits=low_res[0, best:best + 1].float().cpu().numpy())

    def _mask_prompt(self, mask: np.ndarray, emb: _Embedding, grid: int) -> torch.Tensor:
        """A previous mask -> SAM's (1, 1, 4g, 4g) mask input: low-res logits as they are, or a full-size
        bool mask resized into the padded input frame, as strong logits (+-20)."""
        import torch.nn.functional as F

        if mask.shape[-2:] == (grid, grid) and mask.dtype != bool:
            return torch.as_tensor(mask, dtype=torch.float32, device=self.device).reshape(1, 1, grid, grid)
        if mask.shape != emb.original_size:
            raise SegmenterError(f"the previous mask is {mask.shape}, the image is {emb.original_size}: pass a mask of "
                                 "the image's size or the logits of the last refine")
        m = torch.as_tensor(mask.astype(np.float32), device=self.device)[None, None]
        m = F.interpolate(m, size=emb.input_size, mode="bilinear", align_corners=False)
        size = self.sam.image_encoder.img_size
        m = F.pad(m, (0, size - emb.input_size[1], 0, size - emb.input_size[0]))
        m = F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)
        return (m > 0.5).float() * 40.0 - 20.0

    # ----------------------------------------------------------------------------------- embedding

    def _embed(self, rgb) -> _Embedding:
        arr = np.asarray(rgb, dtype=np.uint8)
        resized = self.transform.apply_image(arr)
        key = hashlib.sha1(resized.tobytes() + str(resized.shape).encode()).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.inference_mode():
            t = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
            features = self.sam.image_encoder(self.sam.preprocess(t))
        self.encoder_calls += 1
        emb = _Embedding(features, tuple(t.shape[-2:]), (arr.shape[0], arr.shape[1]))
        if self.cache_size > 0:
            self._cache[key] = emb
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return emb


# ------------------------------------------------------------------------------------ prompt checks

def _rows(value, width: int, name: str, example: str, one: bool = False) -> np.ndarray:
    """A list or array of N rows of `width` finite numbers -> (N, width) float64 ((0, width) for []).
    one: exactly one row, given flat ([x0, y0, x1, y1]) or as (1, width). Anything else: a SegmenterError."""
    what = f"{name} must be {example} in pixels" if one else \
        f"{name} must be an (N, {width}) array or list of {example} in pixels ([] for none)"
    if value is None or isinstance(value, (str, bytes)):
        raise SegmenterError(f"{what}, got {value!r}")
    try:
        rows = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:  # ragged lists, words, objects
        raise SegmenterError(f"{what} ({err})") from err
    if one:
        if rows.shape not in ((width,), (1, width)):
            raise SegmenterError(f"{what}, got shape {rows.shape}")
        rows = rows.reshape(1, width)
    elif rows.size == 0:
        return np.zeros((0, width))
    elif rows.ndim != 2 or rows.shape[1] != width:
        hint = f"; a single one needs its own brackets: [{example}]" if rows.shape == (width,) else ""
        raise SegmenterError(f"{what}, got shape {rows.shape}{hint}")
    if not np.isfinite(rows).all():
        raise SegmenterError(f"{name} must be finite numbers {example} in pixels, got NaN or infinity")
    return rows


def _labels(labels, count: int) -> np.ndarray:
    """Point labels -> (count,) int64 of 0 / 1; None, other shapes and other values: a SegmenterError."""
    what = "labels must be a list of 1 (part of the object) or 0 (not part of it), one per point ([] for none)"
    if labels is None or isinstance(labels, (str, bytes)):
        raise SegmenterError(f"{what}, got {labels!r}")
    try:
        lab = np.asarray(labels)  # no dtype: "1" stays a word and is refused below
    except ValueError as err:
        raise SegmenterError(f"{what} ({err})") from err
    if lab.size == 0:
        lab = np.zeros(0, dtype=np.int64)
    elif lab.ndim != 1:
        raise SegmenterError(f"{what}, got shape {lab.shape}")
    if len(lab) != count:
        raise SegmenterError(f"{count} points but {len(lab)} labels: give one label (1 keep, 0 remove) per point")
    if lab.dtype.kind not in "biuf" or not np.isin(lab, (0, 1)).all():
        raise SegmenterError(f"point labels must be 1 (part of the object) or 0 (not part of it), got {lab.tolist()}")
    return lab.astype(np.int64)
