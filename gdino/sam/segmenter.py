"""Segmenter: boxes -> masks in one decoder call, click refinement, for every SAM backend (gdino.sam.catalog).

    seg = gdino.Segmenter.from_pretrained("sam2.1-tiny")   # or "vit_b", "edgetam", a file, a folder
    result = seg.segment(image, boxes_xyxy)          # masks (N, H, W) bool, scores (N,)
    refined = seg.refine(image, points=[(x, y)], labels=[1], box=box)
    dets = seg.add_masks(image, detections)          # supervision.Detections with .mask

Images are read upright (EXIF applied), the frame the detector's boxes are in; masks come back in its pixels.
The image embedding (the expensive part) is kept per image content: in memory (the last `cache_size`), and,
where a `store` is given (`using(store)`: a project's cache folder), on disk in float16, so that a click
on an image embedded before, in this process or another, runs only the prompt decoder. One image is
embedded once even when two threads ask for it at the same time (a prefetch and a click).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checks import whole_number
from ..processing import MAX_PIXELS, ImageLike, to_rgb
from .backend import Backend, Embedding
from .prompts import SegmenterError, point_labels, rows

GROUP = 16  # masks upsampled at once: N full-size float masks could take GBs on large photos


@dataclass
class Masks:
    masks: np.ndarray  # (N, H, W) bool, in the upright image's pixels
    scores: np.ndarray  # (N,) float32, SAM's predicted IoU of each mask (0 for empty boxes)


@dataclass
class Refined:
    mask: np.ndarray  # (H, W) bool
    score: float  # SAM's predicted IoU
    logits: np.ndarray  # (1, g, g) low-resolution logits; pass back as `mask=` for the next click


def _interactive(method):
    """Runs the method in one `Segmenter.interactive` section: background embeddings pause meanwhile."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.interactive():
            return method(self, *args, **kwargs)
    return wrapper


class _Shared:
    """What every view of one Segmenter shares (`using` makes views): the memory cache, the lock, the counts."""

    def __init__(self, cache_size: int):
        self.cache_size = cache_size
        self.memory: OrderedDict[str, Embedding] = OrderedDict()
        self.lock = threading.Lock()
        self.inflight: dict[str, threading.Event] = {}
        self.decoding = 0  # interactive sections running now (a background embedding waits while there are any)
        self.idle = threading.Condition(self.lock)  # notified when `decoding` falls to 0
        self.depth = threading.local()  # .value: this thread's open interactive sections
        self.encoder_calls = 0  # image embeddings computed (the caches' effect, observable)
        self.store_hits = 0  # embeddings read back from a store


class Segmenter:
    def __init__(self, model, *, cache_size: int = 4, max_pixels: int = MAX_PIXELS, store=None):
        """model: a Backend (gdino.sam.backend), or a segment-anything `Sam` module. store: where embeddings
        are kept on disk (a gdino.sam.store.EmbeddingStore), or None."""
        if not (hasattr(model, "embed") and hasattr(model, "decode")):
            from .sam1 import Sam1Backend

            model = Sam1Backend(model)
        self.backend: Backend = model
        self.max_pixels = whole_number("max_pixels", max_pixels, 1)
        self._shared = _Shared(whole_number("cache_size", cache_size, 0))
        self.store = store

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *, device=None,
                        cache_dir: Path | None = None, **kwargs) -> Segmenter:
        """name_or_path: a name of gdino.sam.catalog.NAMES ("vit_b", "sam2.1-tiny", "edgetam", ...), a
        checkpoint file or a model folder; None: the default for the device (catalog.default_name).
        device: default CUDA when available."""
        from .catalog import default_name, load_backend

        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if name_or_path is None:
            name_or_path = default_name(device.type)
        return cls(load_backend(name_or_path, device=device, cache_dir=cache_dir), **kwargs)

    def using(self, store) -> Segmenter:
        """The same segmenter (model, memory cache, counts) keeping embeddings in `store` too."""
        view = copy.copy(self)
        view.store = store
        return view

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def sam(self):
        """The segment-anything model of a SAM 1 backend (others: their own `model`)."""
        return getattr(self.backend, "sam", None) or getattr(self.backend, "model", None)

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def cache_size(self) -> int:
        return self._shared.cache_size

    @property
    def encoder_calls(self) -> int:
        return self._shared.encoder_calls

    @property
    def store_hits(self) -> int:
        return self._shared.store_hits

    def clear_cache(self) -> None:
        with self._shared.lock:
            self._shared.memory.clear()

    # ------------------------------------------------------------------------------------- boxes

    @_interactive
    def segment(self, image: ImageLike, boxes_xyxy) -> Masks:
        """boxes_xyxy: (N, 4) in pixels of the upright image -> one mask per box, all boxes in one decoder
        call. Boxes are clipped to the image; a box with no area left gives an empty mask, score 0.
        None, another shape (one box is [[x0, y0, x1, y1]]) and NaN / infinite coordinates are refused with a
        SegmenterError (a ValueError); [] gives no masks."""
        boxes = rows(boxes_xyxy, 4, "boxes", "[x0, y0, x1, y1]")
        rgb = to_rgb(image, self.max_pixels)
        h, w = rgb.height, rgb.width
        boxes = np.stack([boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h), boxes[:, 2].clip(0, w),
                          boxes[:, 3].clip(0, h)], 1)
        masks = np.zeros((len(boxes), h, w), dtype=bool)
        scores = np.zeros(len(boxes), dtype=np.float32)
        usable = np.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
        if len(usable) == 0:
            return Masks(masks, scores)  # no model call at all
        emb = self._embedding(np.asarray(rgb, dtype=np.uint8))
        b = self.backend
        with torch.inference_mode():
            corners = b.to_frame(boxes[usable].reshape(-1, 2), emb.original_size).reshape(-1, 4)
            box_t = torch.as_tensor(corners, dtype=torch.float32, device=self.device)
            low_res, iou = b.decode(emb, points=None, labels=None, boxes=box_t, masks=None, multimask=False)
            for start in range(0, len(usable), GROUP):
                part = b.upscale(low_res[start:start + GROUP, :1], emb)
                masks[usable[start:start + GROUP]] = (part[:, 0] > b.mask_threshold).cpu().numpy()
            scores[usable] = iou[:, 0].float().cpu().numpy()
        return Masks(masks, scores)

    def add_masks(self, image: ImageLike, detections):
        """supervision.Detections (xyxy in the upright image) -> a copy with .mask (N, H, W) filled and
        data["mask_score"] holding SAM's predicted IoU."""
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

    @_interactive
    def refine(self, image: ImageLike, points, labels, box=None, mask=None) -> Refined:
        """Positive (label 1) and negative (label 0) clicks, in pixels of the upright image, optionally
        with the object's box and its previous mask: a (H, W) bool mask or the `logits` of the last
        `Refined`. With one click and nothing else SAM's three candidate masks are compared and the one
        with the best predicted quality is returned; with more context SAM gives one mask.

        points: (N, 2) (x, y), [] for none (one point is [(x, y)]); labels: (N,) of 1 / 0 (or True / False);
        box: [x0, y0, x1, y1]. Anything else (None, other shapes, NaN, other labels) is a SegmenterError."""
        pts = rows(points, 2, "points", "(x, y)")
        lab = point_labels(labels, len(pts))
        if box is not None:
            box = rows(box, 4, "box", "[x0, y0, x1, y1]", one=True)
        rgb = to_rgb(image, self.max_pixels)
        h, w = rgb.height, rgb.width
        outside = [(float(x), float(y)) for x, y in pts if not (0 <= x <= w and 0 <= y <= h)]
        if outside:
            raise SegmenterError(f"points outside the {w}x{h} image: {outside[:3]}")
        if len(pts) == 0 and box is None:
            raise SegmenterError("refine needs at least one point or a box")
        emb = self._embedding(np.asarray(rgb, dtype=np.uint8))
        b = self.backend
        with torch.inference_mode():
            points_t = labels_t = box_t = mask_t = None
            if len(pts):
                points_t = torch.as_tensor(b.to_frame(pts, emb.original_size), dtype=torch.float32,
                                           device=self.device)[None]
                labels_t = torch.as_tensor(lab, dtype=torch.int64, device=self.device)[None]
            if box is not None:
                box_t = torch.as_tensor(b.to_frame(box.reshape(2, 2), emb.original_size).reshape(1, 4),
                                        dtype=torch.float32, device=self.device)
            if mask is not None:
                mask_t = self._mask_prompt(np.asarray(mask), emb)
            multimask = len(pts) == 1 and box_t is None and mask_t is None
            low_res, iou = b.decode(emb, points=points_t, labels=labels_t, boxes=box_t, masks=mask_t,
                                    multimask=multimask)
            best = int(iou[0].argmax())
            full = b.upscale(low_res[:, best:best + 1], emb)
            return Refined(mask=(full[0, 0] > b.mask_threshold).cpu().numpy(), score=float(iou[0, best]),
                           logits=low_res[0, best:best + 1].float().cpu().numpy())

    def _mask_prompt(self, mask: np.ndarray, emb: Embedding) -> torch.Tensor:
        """A previous mask -> the decoder's (1, 1, g, g) mask input: low-res logits as they are, or a
        full-size bool mask of the image (as strong logits, +-20)."""
        grid = self.backend.low_res_side
        if mask.shape[-2:] == (grid, grid) and mask.dtype != bool:
            return torch.as_tensor(mask, dtype=torch.float32, device=self.device).reshape(1, 1, grid, grid)
        if mask.shape != emb.original_size:
            raise SegmenterError(f"the previous mask is {mask.shape}, the image is {emb.original_size}: pass a mask of "
                                 "the image's size or the logits of the last refine")
        return self.backend.mask_prompt(torch.as_tensor(mask.astype(np.float32), device=self.device), emb)

    # ----------------------------------------------------------------------------------- embedding

    def embed(self, image: ImageLike, *, background: bool = False) -> None:
        """Compute and keep the image's embedding (in memory, and in the store where one is given), so that
        the next segment or click on it runs only the decoder. background: a prefetch, which gives way to the
        clicks: between two of its modules it waits while any `interactive` section of this Segmenter runs (a
        segment or a click in another thread), so that a click answers about as fast as on an idle machine. A
        click on the image being embedded waits for this embedding, its section let go meanwhile, so the two never
        wait on each other."""
        rgb = np.asarray(to_rgb(image, self.max_pixels), dtype=np.uint8)
        if not background:
            self._embedding(rgb)
            return
        shared, me = self._shared, threading.get_ident()

        def give_way(module, args) -> None:
            if threading.get_ident() == me and shared.decoding:
                with shared.lock:
                    shared.idle.wait_for(lambda: shared.decoding == 0)
        handle = torch.nn.modules.module.register_module_forward_pre_hook(give_way)
        try:
            self._embedding(rgb)
        finally:
            handle.remove()

    @contextlib.contextmanager
    def interactive(self):
        """A section someone waits for (a click, a segment): while any runs, in any thread, background embeddings
        of this Segmenter pause between two of their modules. segment and refine run in one; a caller may open
        it earlier (the app: when the click arrives, before reading the image), so that the background work has
        paused by the time the decoder starts. While this thread waits for another's embedding of its image, its
        section is let go (that embedding may be a background one)."""
        shared = self._shared
        with shared.lock:
            shared.decoding += 1
        shared.depth.value = getattr(shared.depth, "value", 0) + 1
        try:
            yield
        finally:
            shared.depth.value -= 1
            self._leave()

    def _leave(self) -> None:
        shared = self._shared
        with shared.lock:
            shared.decoding -= 1
            if shared.decoding == 0:
                shared.idle.notify_all()

    def _wait_for(self, event: threading.Event) -> None:
        """Wait for another thread's embedding, this thread's interactive sections let go meanwhile."""
        shared = self._shared
        held = getattr(shared.depth, "value", 0)
        for _ in range(held):
            self._leave()
        try:
            event.wait()
        finally:
            with shared.lock:
                shared.decoding += held

    def embedding_key(self, rgb: np.ndarray) -> str:
        """Names one image's embedding by this model: the weights' identity and the pixels' SHA-1."""
        digest = hashlib.sha1(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
        return f"{self.backend.identity.replace(':', '-')}-{digest}"

    def _embedding(self, rgb: np.ndarray) -> Embedding:
        key = self.embedding_key(rgb)
        shared = self._shared
        while True:
            with shared.lock:
                if key in shared.memory:
                    shared.memory.move_to_end(key)
                    return shared.memory[key]
                waiting = shared.inflight.get(key)
                if waiting is None:
                    done = shared.inflight[key] = threading.Event()
                    break
            self._wait_for(waiting)  # another thread embeds this image: its result (or try again if it failed)
        try:
            emb = self._load(key, rgb)
            with shared.lock:
                if shared.cache_size > 0:
                    shared.memory[key] = emb
                    while len(shared.memory) > shared.cache_size:
                        shared.memory.popitem(last=False)
            return emb
        finally:
            with shared.lock:
                del shared.inflight[key]
            done.set()

    def _load(self, key: str, rgb: np.ndarray) -> Embedding:
        size = (rgb.shape[0], rgb.shape[1])
        if self.store is not None:
            kept = self.store.get(key)
            if kept is not None and tuple(kept.original_size) == size:
                self._shared.store_hits += 1
                return Embedding({k: v.to(self.device, torch.float32) for k, v in kept.features.items()},
                                 tuple(kept.input_size), size)
        emb = self.backend.embed(rgb)
        self._shared.encoder_calls += 1
        if self.store is not None:
            self.store.put(key, emb)
        return emb
