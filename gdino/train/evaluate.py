"""COCO box mAP (pycocotools) of predictions against ground truth, and of a `Detector` on examples.

Boxes on both sides are xyxy in pixels of the upright image; class ids index one class list. The
numbers are pycocotools' own (101-point interpolated precision, IoU 0.50:0.05:0.95, all areas, at most
100 detections per image and class), read from its precision table rather than printed:
- a class without ground-truth boxes has no AP (pycocotools' -1): it is left out of every mean, and its
  predictions count for nothing;
- an image without ground truth still counts: a prediction on it is a false positive for its class;
- no prediction at all gives AP 0 for every class with ground truth;
- no ground-truth box at all leaves mAP undefined: None.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .data import Example, load_image


class GroundTruth(Protocol):
    """One image's true boxes (`data.Example` is one)."""

    width: int  # upright
    height: int
    boxes: np.ndarray  # (N, 4) xyxy pixels
    class_ids: np.ndarray  # (N,) int indices into the classes


@dataclass(frozen=True, eq=False)
class Predictions:
    """One image's detections."""

    boxes: np.ndarray  # (M, 4) float xyxy pixels of the upright image
    scores: np.ndarray  # (M,) float
    class_ids: np.ndarray  # (M,) int indices into the classes

    @classmethod
    def empty(cls) -> Predictions:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True)
class MapResult:
    map: float | None  # AP@[.50:.95] averaged over the classes with ground truth; None without any box
    map50: float | None  # AP@.50, the same way
    per_class: dict[str, float]  # AP@[.50:.95] of each class with ground truth (the others are absent)
    per_class50: dict[str, float]  # AP@.50 of each class with ground truth
    images: int
    boxes: int  # ground-truth boxes
    predictions: int

    def summary(self) -> str:
        def show(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"
        return (f"mAP@[.5:.95] {show(self.map)}, mAP@.5 {show(self.map50)} ({self.images} images, {self.boxes} boxes, "
                f"{self.predictions} predictions)")


def coco_map(ground_truth: Sequence[GroundTruth], predictions: Sequence[Predictions], classes: Sequence[str]) -> MapResult:
    """COCO box mAP; predictions[i] are for ground_truth[i]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(ground_truth) != len(predictions):
        raise ValueError(f"got {len(ground_truth)} images of ground truth but predictions for {len(predictions)}")
    images = [{"id": i + 1, "width": int(g.width), "height": int(g.height)} for i, g in enumerate(ground_truth)]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    gt_anns, dt_anns = [], []
    for i, (g, p) in enumerate(zip(ground_truth, predictions, strict=True)):
        for box, c in zip(np.asarray(g.boxes, np.float64).reshape(-1, 4), np.asarray(g.class_ids).reshape(-1), strict=True):
            gt_anns.append(_annotation(len(gt_anns) + 1, i + 1, box, int(c), len(classes)))
        for box, s, c in zip(np.asarray(p.boxes, np.float64).reshape(-1, 4), np.asarray(p.scores).reshape(-1),
                             np.asarray(p.class_ids).reshape(-1), strict=True):
            dt_anns.append({**_annotation(len(dt_anns) + 1, i + 1, box, int(c), len(classes)), "score": float(s)})
    result = dict(images=len(images), boxes=len(gt_anns), predictions=len(dt_anns))
    if not gt_anns or not images:
        return MapResult(None, None, {}, {}, **result)
    # the detections' COCO is built directly: loadRes fails on an empty list and would renumber nothing we need
    gt, dt = _coco(COCO, images, categories, gt_anns), _coco(COCO, images, categories, dt_anns)
    evaluator = COCOeval(gt, dt, iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        evaluator.evaluate()
        evaluator.accumulate()
    # precision: (iou thresholds, recall thresholds, classes, area ranges, max dets); area "all" = 0, 100 dets = last
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    ap = [_mean(precision[:, :, k]) for k in range(len(classes))]
    ap50 = [_mean(precision[0, :, k]) for k in range(len(classes))]
    per_class = {name: v for name, v in zip(classes, ap, strict=True) if v is not None}
    per_class50 = {name: v for name, v in zip(classes, ap50, strict=True) if v is not None}
    return MapResult(_mean(precision), _mean(precision[0]), per_class, per_class50, **result)


def _annotation(ann_id: int, image_id: int, box: np.ndarray, class_id: int, num_classes: int) -> dict:
    if not 0 <= class_id < num_classes:
        raise ValueError(f"class id {class_id} is not an index into the {num_classes} classes")
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
    return {"id": ann_id, "image_id": image_id, "category_id": class_id + 1, "bbox": [x0, y0, w, h], "area": w * h,
            "iscrowd": 0}


def _coco(coco_class, images: list[dict], categories: list[dict], annotations: list[dict]):
    coco = coco_class()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _mean(values: np.ndarray) -> float | None:
    """The mean of the entries that are not pycocotools' -1 (no ground truth), or None if none are."""
    kept = values[values > -1]
    return float(kept.mean()) if kept.size else None


# -- a detector over examples ------------------------------------------------------------------------


def detect_examples(detector, examples: Sequence[Example], classes: Sequence[str], *, box_threshold: float = 0.01,
                    max_detections: int = 100, nms_iou: float | None = None,
                    progress: Callable[[int, int], None] | None = None) -> list[Predictions]:
    """`detector` (a gdino.Detector) on each example's pixels with the classes as its prompt: at most
    max_detections per image, highest scores first. The threshold is low and nms off by default, as
    COCO evaluation wants: mAP rewards ranking, and a high threshold cuts recall."""
    names = list(classes)
    index = {name.casefold(): k for k, name in enumerate(names)}
    out = []
    for n, example in enumerate(examples, start=1):
        found = detector.detect(load_image(example), classes=names, box_threshold=box_threshold, nms_iou=nms_iou)
        order = np.argsort(-np.asarray(found.confidence), kind="stable")[:max_detections]
        class_ids = np.array([index[str(c).casefold()] for c in found.data["class_name"]], dtype=np.int64)
        out.append(Predictions(np.asarray(found.xyxy, np.float32).reshape(-1, 4)[order],
                               np.asarray(found.confidence, np.float32)[order], class_ids[order]))
        if progress is not None:
            progress(n, len(examples))
    return out


def evaluate_detector(detector, examples: Sequence[Example], classes: Sequence[str], **options) -> MapResult:
    """COCO mAP of `detector` on `examples` (the validation split); options as `detect_examples`."""
    return coco_map(examples, detect_examples(detector, examples, classes, **options), classes)
