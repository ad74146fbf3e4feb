"""`Sam3Detector`: SAM 3 behind the `Detector` API: images + class names -> `supervision.Detections` with masks.

    det = gdino.Detector.from_pretrained("facebook/sam3")      # gated: accept Meta's SAM License first
    dets = det.detect("photo.jpg", classes=["cat", "remote control"])   # boxes, scores, class names, masks
    similar = det.find_similar("photo.jpg", [[10, 20, 110, 140]], class_name="cat")  # exemplar prompt

How it maps the Grounding DINO contract:
- each class phrase (each synonym) is one SAM 3 text prompt; the image side (the ViT and its pyramid) runs
  once per image and every prompt reuses it (cached per image content, as `Detector` does);
- a query's score is sigmoid(class logit) x sigmoid(presence logit), SAM 3's own; a query is kept above
  box_threshold; its class is the class of the prompt that found it, so names are exact; duplicates are
  suppressed per class (nms_iou) and optionally across classes, as for Grounding DINO;
- boxes are xyxy pixels of the upright (EXIF-applied) original, clipped to it; masks (data "mask" of the
  Detections) are at that size, from SAM 3's own mask head;
- free text (`prompt=`) is one noun phrase: SAM 3 finds instances of it, and every detection's class is the
  phrase. text_threshold is Grounding DINO's and does not apply.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import unit_interval, whole_number
from ..postprocess import Labeled, kept_order
from ..processing import MAX_PIXELS, ImageLike, to_rgb
from ..prompts import PromptError, parse_classes
from . import BOX_THRESHOLD
from . import processing as P
from .forward import exemplar_tokens, ground

VISUAL_ONLY = "visual"  # the text the official processor pairs with exemplar boxes when no text is given


@dataclass
class _Image:
    key: str  # content hash of the model input
    pixels: torch.Tensor  # (1, 3, S, S)
    size: tuple[int, int]  # (h, w) of the upright original


@dataclass
class _Found:
    labeled: Labeled  # boxes in original pixels, scores, class ids
    mask_logits: torch.Tensor  # (K, h, w) low-resolution mask logits of the same detections


class Sam3Detector:
    family = "sam3"

    def __init__(self, model, tokenizer=None, *, cache_size: int = 2, max_pixels: int = MAX_PIXELS,
                 prompt_batch: int = 4):
        self.model = model.eval()
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("Sam3Detector needs SAM 3's CLIP tokenizer: load the model with gdino.Detector."
                             "from_pretrained, which attaches it")
        self.cache_size = whole_number("cache_size", cache_size, 0)
        self.max_pixels = whole_number("max_pixels", max_pixels, 1)
        self.prompt_batch = whole_number("prompt_batch", prompt_batch, 1)  # text prompts decoded together
        size = model.config.vision_config.image_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        self._cache: OrderedDict[str, object] = OrderedDict()

    @classmethod
    def from_pretrained(cls, source: str, *, tokenizer: str | None = None, device=None, dtype=None,
                        precision: str = "exact", **kwargs) -> Sam3Detector:
        """SAM 3 weights (see `gdino.sam3.loading.load_sam3`). SAM 3 runs in float32: it has no fast mode yet, so
        precision="fast" (the CLI's default on a CPU) runs it exact (`describe_precision` says so) and a dtype
        other than float32 is refused with a ValueError."""
        from .loading import load_sam3

        if precision not in ("exact", "fast"):
            raise ValueError(f"precision must be 'exact' or 'fast', got {precision!r}")
        unknown = sorted(set(kwargs) - {"cache_size", "max_pixels", "prompt_batch"})
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a setting of SAM 3's detector (it takes cache_size, max_pixels "
                             "and prompt_batch; SAM 3 reads every picture at its own 1008 x 1008)")
        if dtype not in (None, torch.float32):
            raise ValueError("SAM 3 runs in float32 only (no bfloat16 or float16 yet): leave out --dtype (dtype= in "
                             "Python)")
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(load_sam3(source, tokenizer=tokenizer, device=device), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ----------------------------------------------------------------------------------- public

    def detect(self, image: ImageLike, classes=None, *, prompt: str | None = None, box_threshold: float = BOX_THRESHOLD,
               text_threshold: float = 0.25, nms_iou: float | None = 0.5, agnostic_nms_iou: float | None = None):
        """One image -> `supervision.Detections` with masks. As `Detector.detect` (classes, synonyms, prompt,
        thresholds, NMS); box_threshold defaults to SAM 3's own 0.5."""
        return self.detect_batch([image], classes, prompt=prompt, box_threshold=box_threshold,
                                 text_threshold=text_threshold, nms_iou=nms_iou, agnostic_nms_iou=agnostic_nms_iou,
                                 batch_size=1)[0]

    def detect_batch(self, images: Sequence[ImageLike], classes=None, *, prompt: str | None = None,
                     batch_size: int = 4, box_threshold: float = BOX_THRESHOLD, text_threshold: float = 0.25,
                     nms_iou: float | None = 0.5, agnostic_nms_iou: float | None = None) -> list:
        """Several images, one prompt -> a list of `supervision.Detections` (each image on its own)."""
        box_threshold = unit_interval("box_threshold", box_threshold)
        unit_interval("text_threshold", text_threshold)
        nms_iou = unit_interval("nms_iou", nms_iou, optional=True)
        agnostic_nms_iou = unit_interval("agnostic_nms_iou", agnostic_nms_iou, optional=True)
        whole_number("batch_size", batch_size, 1)
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise ValueError("images must be a list of images (PIL images, arrays or paths)")
        names, phrases, phrase_label = self._query(classes, prompt)
        loaded = [self._read(image) for image in images]
        out = []
        with torch.inference_mode():
            for image in loaded:
                found = self._run_text(image, phrases, phrase_label, box_threshold)
                out.append(self._detections(found, image.size, names, nms_iou, agnostic_nms_iou,
                                            with_phrase=prompt is not None))
        return out

    def find_similar(self, image: ImageLike, boxes, labels: Sequence[bool] | None = None, *, class_name: str,
                     text: str | None = None, box_threshold: float = BOX_THRESHOLD, nms_iou: float | None = 0.5):
        """Every instance like the exemplars in one image -> `supervision.Detections` of class `class_name`.
        boxes: (N, 4) xyxy pixels of the upright image; labels: True marks a positive exemplar, False a negative
        (default all positive); text: an optional noun phrase to go with them (SAM 3 reads "visual" without).
        The exemplars themselves are usually among the results: callers drop what they already have."""
        box_threshold = unit_interval("box_threshold", box_threshold)
        nms_iou = unit_interval("nms_iou", nms_iou, optional=True)
        name = _class_name(class_name)
        loaded = self._read(image)
        with torch.inference_mode():
            tokens, mask, _ = self._exemplar_tokens(loaded, boxes, labels)
            return self._like(loaded, (tokens, mask), name, text, box_threshold, nms_iou)

    def exemplar_prompt(self, image: ImageLike, boxes, labels: Sequence[bool] | None = None) -> ExemplarPrompt:
        """The exemplars of one image as a prompt to carry to other images (`detect_like`): SAM 3's geometry
        encoder reads each box from this image (its pooled features, its place, positive or negative) and the
        tokens attend over this image. Boxes and labels as in `find_similar`."""
        loaded = self._read(image)
        with torch.inference_mode():
            tokens, mask, flags = self._exemplar_tokens(loaded, boxes, labels)
        return ExemplarPrompt(tokens.cpu(), mask.cpu(), sum(flags), len(flags) - sum(flags))

    def detect_like(self, image: ImageLike, prompt: ExemplarPrompt, *, class_name: str, text: str | None = None,
                    box_threshold: float = BOX_THRESHOLD, nms_iou: float | None = 0.5):
        """Instances like another image's exemplars (`exemplar_prompt`) in this image -> `supervision.Detections`
        of class `class_name`. On the image the prompt was made on, this is `find_similar`."""
        box_threshold = unit_interval("box_threshold", box_threshold)
        nms_iou = unit_interval("nms_iou", nms_iou, optional=True)
        name = _class_name(class_name)
        if not isinstance(prompt, ExemplarPrompt):
            raise PromptError("prompt must come from exemplar_prompt(image, boxes)")
        loaded = self._read(image)
        with torch.inference_mode():
            geometry = (prompt.tokens.to(self.device), prompt.mask.to(self.device))
            return self._like(loaded, geometry, name, text, box_threshold, nms_iou)

    def _exemplar_tokens(self, loaded: _Image, boxes, labels) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Exemplar boxes on this image -> SAM 3's geometry tokens (1, N + 1, C), their mask, the 1 / 0 labels."""
        xyxy, flags = _exemplars(boxes, labels, loaded.size)
        dev = self.device
        tokens, mask = exemplar_tokens(self.model, self._vision(loaded),
                                       P.exemplar_boxes(xyxy, loaded.size).unsqueeze(0).to(dev),
                                       torch.tensor([flags], dtype=torch.long, device=dev))
        return tokens, mask, flags

    def _like(self, loaded: _Image, geometry, name: str, text: str | None, box_threshold: float, nms_iou):
        """One grounding pass on this image with exemplar tokens (and "visual" or a phrase) -> Detections."""
        ids, mask = self._text(text)
        out = ground(self.model, self._vision(loaded), ids.to(self.device), mask.to(self.device), geometry=geometry)
        found = self._keep(out, 0, loaded.size, box_threshold, 0)
        return self._detections(found, loaded.size, [name], nms_iou, None)

    def _text(self, text: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The text that goes with exemplars: "visual" (the official processor's, for exemplars alone) or a phrase."""
        return P.text_batch(self.tokenizer, [VISUAL_ONLY if text is None else self._phrases([text])[0]])

    def check_prompt(self, classes=None, *, prompt: str | None = None) -> None:
        """Raise PromptError now for what `detect` would refuse (duplicates, empty names, too long)."""
        self._query(classes, prompt)

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------------------ the prompt

    def _phrases(self, phrases) -> list[str]:
        for phrase in phrases:
            n = len(P.token_ids(self.tokenizer, phrase)) - 2
            if n > P.TEXT_LENGTH - 2:
                raise PromptError(f"{phrase!r} is {n} tokens; SAM 3 reads at most {P.TEXT_LENGTH - 2} per class: "
                                  "shorten it (a noun phrase such as 'red car')")
        return list(phrases)

    def _query(self, classes, prompt) -> tuple[list[str], list[str], list[int]]:
        """-> (class names, text prompts, the class of each prompt)."""
        if (classes is None) == (prompt is None):
            raise PromptError("pass either classes=[...] or prompt='free text', not both or neither")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise PromptError(f"prompt must be a string, got {type(prompt).__name__}")
            if not any(ch.isalnum() for ch in prompt):
                raise PromptError("the prompt is empty or has no words; name what to find, e.g. 'red car'")
            text = " ".join(prompt.split())
            return [text], self._phrases([text]), [0]
        parsed = parse_classes(classes)
        return list(parsed.labels), self._phrases(parsed.phrases), list(parsed.phrase_label)

    # ------------------------------------------------------------------------------ the images

    def _read(self, image: ImageLike) -> _Image:
        rgb = to_rgb(image, self.max_pixels)
        pixels = P.pixels(rgb, self.image_size)
        digest = hashlib.sha1(pixels.numpy().tobytes()).hexdigest()
        return _Image(digest, pixels, (rgb.height, rgb.width))

    def _vision(self, image: _Image):
        """The image side (ViT + pyramid), from the cache or computed."""
        if image.key in self._cache:
            self._cache.move_to_end(image.key)
            return self._cache[image.key]
        vision = self.model.get_vision_features(pixel_values=image.pixels.to(self.device))
        if self.cache_size > 0:
            self._cache[image.key] = vision
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vision

    # ------------------------------------------------------------------------------ the model

    def _run_text(self, image: _Image, phrases, phrase_label, box_threshold) -> _Found:
        vision = self._vision(image)
        parts = []
        for start in range(0, len(phrases), self.prompt_batch):
            chunk = phrases[start:start + self.prompt_batch]
            ids, mask = P.text_batch(self.tokenizer, chunk)
            out = ground(self.model, _expand(vision, len(chunk)), ids.to(self.device), mask.to(self.device))
            parts += [self._keep(out, b, image.size, box_threshold, phrase_label[start + b]) for b in range(len(chunk))]
        return _Found(Labeled.cat([p.labeled for p in parts]),
                      torch.cat([p.mask_logits for p in parts]) if parts else torch.zeros(0, 1, 1))

    @staticmethod
    def _keep(out, b: int, size, box_threshold: float, label: int) -> _Found:
        """Prompt b's queries above the threshold: boxes in original pixels, scores, masks (logits)."""
        scores = (out.pred_logits[b].float().sigmoid() * out.presence_logits[b].float().sigmoid()).cpu()
        keep = scores > box_threshold
        boxes = P.boxes_to_pixels(out.pred_boxes[b].float().cpu()[keep], size)
        labels = torch.full((int(keep.sum()),), label, dtype=torch.int64)
        return _Found(Labeled(boxes, scores[keep], labels), out.pred_masks[b].float().cpu()[keep])

    @staticmethod
    def _detections(found: _Found, size, names: list[str], nms_iou, agnostic_nms_iou, with_phrase: bool = False):
        import supervision as sv

        order = kept_order(found.labeled, nms_iou, agnostic_nms_iou)
        kept = found.labeled.select(order)
        masks = P.masks_to_original(found.mask_logits[order], size) if len(order) else np.zeros((0, *size), bool)
        labels = np.array([names[i] for i in kept.class_ids.tolist()], dtype=object)
        data = {"class_name": labels}
        if with_phrase:
            data["phrase"] = labels.copy()
        return sv.Detections(xyxy=kept.boxes.numpy().astype(np.float32).reshape(-1, 4),
                             confidence=kept.scores.numpy().astype(np.float32),
                             class_id=kept.class_ids.numpy().astype(np.int64),
                             mask=np.asarray(masks, dtype=bool), data=data, metadata={"classes": names})


@dataclass
class ExemplarPrompt:
    """Exemplar boxes of one image as SAM 3 prompt tokens (`Sam3Detector.exemplar_prompt`), CPU tensors."""

    tokens: torch.Tensor  # (1, N + 1, C): one per box, then the geometry encoder's CLS token
    mask: torch.Tensor  # (1, N + 1) bool, all True
    positives: int
    negatives: int


def _class_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise PromptError("class_name must name the class the similar objects get")
    return name.strip()


def _exemplars(boxes, labels, size: tuple[int, int]) -> tuple[torch.Tensor, list[int]]:
    """Exemplar boxes (N, 4) xyxy pixels and their labels, checked -> (boxes clipped to the image, 1 / 0 flags)."""
    try:
        xyxy = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    except (TypeError, ValueError) as err:
        raise PromptError("exemplar boxes must be [x0, y0, x1, y1] in pixels of the image") from err
    if len(xyxy) == 0:
        raise PromptError("find similar needs at least one exemplar box")
    flags = [1] * len(xyxy) if labels is None else [int(bool(v)) for v in labels]
    if len(flags) != len(xyxy):
        raise PromptError(f"{len(flags)} labels for {len(xyxy)} exemplar boxes")
    if not any(flags):
        raise PromptError("find similar needs at least one positive exemplar (the others may be negative)")
    if not torch.isfinite(xyxy).all() or (xyxy[:, 2] <= xyxy[:, 0]).any() or (xyxy[:, 3] <= xyxy[:, 1]).any():
        raise PromptError("each exemplar box needs x1 > x0 and y1 > y0 (pixels of the image)")
    h, w = size
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
    return xyxy, flags


def _expand(vision, n: int):
    """The image side of one image as a batch of n (views, no copies): each prompt of a batch reads it."""
    if n == 1:
        return vision
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    return Sam3VisionEncoderOutput(
        fpn_hidden_states=tuple(t.expand(n, *t.shape[1:]) for t in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(t.expand(n, *t.shape[1:]) for t in vision.fpn_position_encoding))
