"""Detector: images + class names (or free text) -> `supervision.Detections` in original pixels.

    det = gdino.Detector.from_pretrained("IDEA-Research/grounding-dino-tiny")
    dets = det.detect("photo.jpg", classes=["cat", "remote control"])
    dets = det.detect("photo.jpg", prompt="a cat sitting on a red couch")

What it guarantees:
- every detection carries exactly one class of the list (the class whose tokens score highest),
  never a word fragment, never two classes merged, never an empty label;
- class lists of any length: split into prompts of at most 256 tokens at class boundaries, the image
  side computed once, the results merged;
- the image side (backbone + neck, before any text) is cached per image content, so a new prompt on the
  same image skips the backbone; results are the same with and without the cache;
- batching never changes results: images are batched only with images of the same input size (padding
  a smaller image changes what the backbone sees, as it does in transformers), so `detect_batch` equals
  calling `detect` on each image.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .checks import unit_interval, whole_number
from .modeling.config import DEFAULT_MODEL
from .modeling.model import GroundingDINO, ImageFeatures
from .postprocess import Labeled, class_scores, phrase_for_query, suppress_duplicates
from .processing import MAX_PIXELS, ImageLike, batch_from_uint8, boxes_to_pixels, resize_to_uint8, to_rgb
from .prompts import ClassPrompt, PromptChunk, PromptError, build_chunks, parse_classes
from .weights.hub import load_model

Classes = Sequence[str] | Mapping[str, str | Sequence[str]]


@dataclass
class _Image:
    key: str  # content hash of the resized input
    resized: torch.Tensor  # (3, h, w) uint8 model input
    size: tuple[int, int]  # (h, w) of the upright original


@dataclass
class _TextQuery:
    input_ids: torch.Tensor  # (1, T)
    word_ids: list[int | None]
    offsets: list[tuple[int, int]]
    is_delimiter: list[bool]
    text: str


class Detector:
    def __init__(self, model: GroundingDINO, tokenizer=None, *, cache_size: int = 4, max_pixels: int = MAX_PIXELS,
                 image_size: int = 800):
        self.model = model.eval()
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("the Detector needs the model's tokenizer: pass tokenizer=, or load the model with "
                             "gdino.load_model, which attaches it")
        dot = self.tokenizer.convert_tokens_to_ids(".")
        if dot not in model.config.special_token_ids or self.tokenizer.cls_token_id not in model.config.special_token_ids:
            raise ValueError("this tokenizer's '.' / [CLS] ids are not the model's phrase delimiters "
                             f"{model.config.special_token_ids}: the tokenizer does not belong to these weights")
        self.cache_size = whole_number("cache_size", cache_size, 0)
        self.max_pixels = whole_number("max_pixels", max_pixels, 1)
        # the model's input: shorter side image_size, longer at most 1333/800 of it (800 is what the models were
        # trained at; smaller is faster and misses small objects)
        self.image_size = whole_number("image_size", image_size, 64)
        self._cache: OrderedDict[str, ImageFeatures] = OrderedDict()

    @classmethod
    def from_pretrained(cls, source: str = DEFAULT_MODEL, *, text_encoder: str | None = None, device=None,
                        dtype: torch.dtype | None = None, precision: str = "exact", **kwargs) -> Detector:
        """Load weights (see `gdino.load_model`). device: default CUDA when available, else CPU.
        dtype: float32 (default, exact); bfloat16 (about half the memory, scores differ from float32 by ~1e-2;
        faster on CUDA and on CPUs with bfloat16 units, several times slower on the others); float16 (CUDA only).
        precision: "exact" or "fast" (on a CPU the heavy linear layers in bfloat16 where it has bfloat16 units,
        else int8; on CUDA bfloat16; gdino/modeling/precision.py); "fast" chooses the dtype itself.
        SAM 3 weights (facebook/sam3, a local copy, or the official sam3.pt) give a `gdino.sam3.Sam3Detector`, the
        same API with masks; text_encoder then names the folder of its CLIP tokenizer, if not beside the file.
        Telling the families apart costs a folder's config.json read, a checkpoint file's lazy (memory-mapped)
        open, or for a hub id the download of its config.json (kept in huggingface_hub's cache)."""
        from .sam3.loading import is_sam3

        if is_sam3(source):  # SAM 3 weights: the second family, same API (gdino/sam3/detector.py)
            from .sam3.detector import Sam3Detector

            return Sam3Detector.from_pretrained(source, tokenizer=text_encoder, device=device, dtype=dtype,
                                                precision=precision, **kwargs)
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
        if dtype == torch.float16 and device.type != "cuda":
            raise ValueError("float16 is for CUDA only (CPUs lack fast float16 kernels); use precision='fast' on a CPU")
        return cls(load_model(source, text_encoder=text_encoder, device=device, dtype=dtype, precision=precision),
                   **kwargs)

    # ----------------------------------------------------------------------------------- public

    def detect(self, image: ImageLike, classes: Classes | None = None, *, prompt: str | None = None,
               box_threshold: float = 0.35, text_threshold: float = 0.25, nms_iou: float | None = 0.5,
               agnostic_nms_iou: float | None = None):
        """One image -> `supervision.Detections`.

        classes: ["cat", "remote control"], or {"car": ["car", "automobile"], ...} for synonyms.
            class_id indexes the class names; data["class_name"] holds them.
        prompt: free text instead of classes ("a cat sitting on a red couch"); data["phrase"] holds the
            words each box points at, and class_id indexes metadata["classes"], the distinct phrases.
        box_threshold: keep a box whose best class (or word) scores above this.
        text_threshold: free text only: words scoring above this join the phrase.
        nms_iou: IoU for duplicate suppression within a class (None: off).
        agnostic_nms_iou: IoU for a second pass across classes, for near classes such as car / truck.
        Thresholds and IoUs are numbers in [0, 1]: Python or numpy scalars (np.float32, 0-d arrays); NaN and
        bool are refused with a ValueError naming the argument.
        xyxy is in pixels of the upright (EXIF-applied) image, clipped to it.
        """
        return self.detect_batch([image], classes, prompt=prompt, box_threshold=box_threshold,
                                 text_threshold=text_threshold, nms_iou=nms_iou, agnostic_nms_iou=agnostic_nms_iou,
                                 batch_size=1)[0]

    def detect_batch(self, images: Sequence[ImageLike], classes: Classes | None = None, *, prompt: str | None = None,
                     batch_size: int = 4, box_threshold: float = 0.35, text_threshold: float = 0.25,
                     nms_iou: float | None = 0.5, agnostic_nms_iou: float | None = None) -> list:
        """Several images, one prompt -> a list of `supervision.Detections` (same as `detect` on each)."""
        box_threshold = unit_interval("box_threshold", box_threshold)
        text_threshold = unit_interval("text_threshold", text_threshold)
        nms_iou = unit_interval("nms_iou", nms_iou, optional=True)
        agnostic_nms_iou = unit_interval("agnostic_nms_iou", agnostic_nms_iou, optional=True)
        batch_size = whole_number("batch_size", batch_size, 1)
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise ValueError("images must be a list of images (PIL images, arrays or paths)")
        if (classes is None) == (prompt is None):
            raise PromptError("pass either classes=[...] or prompt='free text', not both or neither")
        query = self._class_query(classes) if classes is not None else self._text_query(prompt)
        loaded = [self._read(image) for image in images]
        with torch.inference_mode():
            features = self._features(loaded, batch_size)
            found: list[Labeled | None] = [None] * len(loaded)
            texts: dict = {}
            for group in self._groups(loaded, batch_size):
                batch = ImageFeatures.cat([features[i] for i in group])
                sizes = [loaded[i].size for i in group]
                if isinstance(query, _TextQuery):
                    results = self._run_text(batch, query, sizes, box_threshold, text_threshold, texts)
                else:
                    results = self._run_classes(batch, query, sizes, box_threshold, texts)
                for i, labeled in zip(group, results, strict=True):
                    found[i] = labeled
        if isinstance(query, _TextQuery):
            return [self._text_detections(f, nms_iou, agnostic_nms_iou) for f in found]
        names = list(query[0].labels)
        return [_detections(suppress_duplicates(f, nms_iou, agnostic_nms_iou), names) for f in found]

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------------------ the prompt

    def check_prompt(self, classes: Classes | None = None, *, prompt: str | None = None) -> None:
        """Raise PromptError now for what `detect` would refuse about these classes or this prompt (duplicates,
        words this model's tokenizer does not know, too long), without an image: callers check before
        they copy files or start a batch."""
        if (classes is None) == (prompt is None):
            raise PromptError("give either classes or a prompt")
        if prompt is not None:
            self._text_query(prompt)
        else:
            self._class_query(classes)

    def _class_query(self, classes: Classes) -> tuple[ClassPrompt, list[PromptChunk]]:
        parsed = parse_classes(classes)
        return parsed, build_chunks(parsed, self.tokenizer, self.model.config.max_text_len)

    def _text_query(self, prompt) -> _TextQuery:
        if not isinstance(prompt, str):
            raise PromptError(f"prompt must be a string, got {type(prompt).__name__}")
        if not any(ch.isalnum() for ch in prompt):
            raise PromptError("the prompt is empty or has no words; describe what to find, e.g. 'a cat on a couch'")
        enc = self.tokenizer(prompt, return_offsets_mapping=True)
        ids = enc["input_ids"]
        limit = self.model.config.max_text_len
        if len(ids) > limit:
            raise PromptError(f"the prompt is {len(ids)} tokens; the model reads at most {limit}. Shorten it, or pass "
                              "the things to find as classes=[...], which are split into several prompts as needed")
        unk = self.tokenizer.unk_token_id
        special = set(self.model.config.special_token_ids)
        if all(t == unk or t in special for t in ids):
            raise PromptError(f"the text encoder knows none of the words in {prompt!r}; it reads English words")
        return _TextQuery(torch.tensor([ids]), enc.word_ids(), [tuple(o) for o in enc["offset_mapping"]],
                          [t in special for t in ids], prompt)

    # ------------------------------------------------------------------------------ the images

    def _read(self, image: ImageLike) -> _Image:
        rgb = to_rgb(image, self.max_pixels)
        resized = resize_to_uint8(rgb, self.image_size, self.image_size * 1333 // 800)
        digest = hashlib.sha1(resized.numpy().tobytes())
        digest.update(str(tuple(resized.shape)).encode())
        return _Image(digest.hexdigest(), resized, (rgb.height, rgb.width))

    @staticmethod
    def _groups(loaded: list[_Image], batch_size: int) -> list[list[int]]:
        """Indices of images with the same input size, in batches of at most batch_size."""
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(loaded):
            by_size.setdefault(tuple(image.resized.shape), []).append(i)
        return [idx[k:k + batch_size] for idx in by_size.values() for k in range(0, len(idx), batch_size)]

    def _features(self, loaded: list[_Image], batch_size: int) -> list[ImageFeatures]:
        """Image-side features per image (batch of 1 each), from the cache or computed in batches."""
        out: dict[int, ImageFeatures] = {}
        missing = []
        for i, image in enumerate(loaded):
            if image.key in self._cache:
                self._cache.move_to_end(image.key)
                out[i] = self._cache[image.key]
            else:
                missing.append(i)
        first_of_key: dict[str, int] = {}
        todo = [i for i in missing if first_of_key.setdefault(loaded[i].key, i) == i]
        for group in self._groups([loaded[i] for i in todo], batch_size):
            idx = [todo[g] for g in group]
            batch = batch_from_uint8([loaded[i].resized for i in idx], [loaded[i].size for i in idx])
            feats = self.model.encode_image(batch.pixel_values.to(self.model.device), batch.pixel_mask.to(self.model.device))
            for i, f in zip(idx, feats.split(), strict=True):
                out[i] = f
                self._remember(loaded[i].key, f)
        for i in missing:
            out.setdefault(i, out[first_of_key[loaded[i].key]])
        return [out[i] for i in range(len(loaded))]

    def _remember(self, key: str, features: ImageFeatures) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = features
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------------------ the model

    def _decode(self, batch: ImageFeatures, input_ids: torch.Tensor, texts: dict):
        """texts: the prompts' text features encoded so far in this call (one BERT pass per prompt, not
        one per prompt and size group)."""
        key = tuple(input_ids[0].tolist())
        if key not in texts:
            texts[key] = self.model.encode_text(input_ids.to(self.model.device))
        text = texts[key]
        out = self.model.decode(batch, text.expand(batch.tokens.shape[0]))
        n = input_ids.shape[1]
        return out.logits[..., :n].float().sigmoid().cpu(), out.pred_boxes.float().cpu()

    def _run_classes(self, batch, query, sizes, box_threshold, texts) -> list[Labeled]:
        parsed, chunks = query
        per_image: list[list[Labeled]] = [[] for _ in sizes]
        for chunk in chunks:
            probs, boxes = self._decode(batch, torch.tensor([chunk.input_ids]), texts)
            for b, size in enumerate(sizes):
                scores, labels = class_scores(probs[b], chunk, parsed.phrase_label, len(parsed.labels)).max(-1)
                keep = scores > box_threshold
                per_image[b].append(Labeled(boxes_to_pixels(boxes[b][keep], size), scores[keep], labels[keep]))
        return [Labeled.cat(parts) for parts in per_image]

    def _run_text(self, batch, query: _TextQuery, sizes, box_threshold, text_threshold, texts) -> list[_TextFound]:
        probs, boxes = self._decode(batch, query.input_ids, texts)
        results = []
        for b, size in enumerate(sizes):
            found = _TextFound([], [], [], boxes_to_pixels(boxes[b], size))
            for q in range(probs.shape[1]):
                score, phrase, start = phrase_for_query(probs[b, q], query.word_ids, query.offsets,
                                                        query.is_delimiter, query.text, text_threshold)
                if score > box_threshold:
                    found.queries.append(q)
                    found.scores.append(score)
                    found.phrases.append((start, phrase))
            results.append(found)
        return results

    @staticmethod
    def _text_detections(found: _TextFound, nms_iou, agnostic_nms_iou):
        # class ids index the distinct phrases, in the order they appear in the prompt
        names = [p for _, p in sorted(set(found.phrases))]
        index = {p: i for i, p in enumerate(names)}
        labeled = Labeled(found.boxes[found.queries].reshape(-1, 4), torch.tensor(found.scores, dtype=torch.float32),
                          torch.tensor([index[p] for _, p in found.phrases], dtype=torch.int64))
        labeled = suppress_duplicates(labeled, nms_iou, agnostic_nms_iou)
        return _detections(labeled, names, with_phrase=True)


@dataclass
class _TextFound:
    queries: list[int]
    scores: list[float]
    phrases: list[tuple[int, str]]  # (start in the prompt, phrase)
    boxes: torch.Tensor  # (Q, 4) xyxy pixels of every query


def _detections(found: Labeled, names: list[str], with_phrase: bool = False):
    """Labeled -> supervision.Detections; metadata["classes"] lists the names class_id indexes."""
    import supervision as sv

    labels = np.array([names[i] for i in found.class_ids.tolist()], dtype=object)
    data = {"class_name": labels}
    if with_phrase:
        data["phrase"] = labels.copy()
    return sv.Detections(xyxy=found.boxes.numpy().astype(np.float32).reshape(-1, 4),
                         confidence=found.scores.numpy().astype(np.float32),
                         class_id=found.class_ids.numpy().astype(np.int64), data=data, metadata={"classes": names})


__all__ = ["DEFAULT_MODEL", "Detector"]
