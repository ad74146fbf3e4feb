"""Fast mode against exact (float32) on the same weights: a trained shapes model, its held-out set, and the
per-image agreement of the kept detections (issue 28). Shared by bench/bench_fast_quality.py and
tests/train/test_fast_mode_quality.py.

Fast mode on a CPU is one of two kinds (gdino/modeling/precision.py): bfloat16 products where the CPU has
bfloat16 units (AMX / AVX512-BF16), else int8 dynamic quantization. `fast_models` gives the one
`load_model(precision="fast")` picks here and each kind forced, so both are measured on any CPU.

Box agreement is greedy one-to-one matching within a class: the reference's boxes in descending score order
each take the unmatched box of the other side with the highest IoU, if that IoU reaches the threshold (0.9).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tiny_models import make_hf_model, make_tokenizer, save_hf
from train_shapes import CLASSES, draw, shapes_project

from gdino.store import ObjectState, Project

BOX_THRESHOLD = 0.35  # the Detector's defaults: what a user keeps
NMS_IOU = 0.5
MATCH_IOU = 0.9


def held_out_project(directory: Path, n: int, seed: int = 12345) -> Project:
    """n reviewed shape pictures from another seed than the training set's (bench_train.py's held-out set)."""
    held = Project.create(directory, CLASSES)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, objects = draw(rng)
        image_id = held.add_image(image, name=f"held{i}.png").id
        held.edit_objects(image_id, new=[ObjectState(o["class_name"], o["box"], o.get("score"), mask=o.get("mask"))
                                         for o in objects])
        held.set_status(image_id, "reviewed")
    return held


def fast_kinds() -> tuple[str, ...]:
    """The fast kinds make_fast_on_cpu can be asked for (("int8",) if it takes no kind: int8 only)."""
    from gdino.modeling import precision

    if "kind" not in inspect.signature(precision.make_fast_on_cpu).parameters:
        return ("int8",)
    return tuple(getattr(precision, "FAST_KINDS", ("int8",)))


def fast_model(directory, kind: str | None = None):
    """The model at `directory` in fast mode: as `gdino.load_model(precision="fast")` gives it on this CPU (kind
    None), or of the given kind (loaded exact, then made fast in place by make_fast_on_cpu)."""
    import gdino
    from gdino.modeling.precision import make_fast_on_cpu

    if kind is None:
        return gdino.load_model(directory, precision="fast")
    if kind not in fast_kinds():
        raise ValueError(f"fast kind {kind!r}: this gdino makes {', '.join(fast_kinds())}")
    model = gdino.load_model(directory)
    if "kind" in inspect.signature(make_fast_on_cpu).parameters:
        return make_fast_on_cpu(model, kind=kind)
    return make_fast_on_cpu(model)


def kind_of(model) -> str:
    """"int8" or "bfloat16": the kind of a fast model (int8 where the model does not say)."""
    return getattr(model, "fast_kind", "int8")


def train_shapes_model(directory: Path, *, n_train: int, epochs: int, image_size: int, seed: int = 0):
    """A tiny random Grounding DINO (seed 0) fine-tuned on n_train shape pictures with bench_train.py's recipe
    (all of it trained, lr 5e-4, batch 2, no augmentation, lr drop at 80%). Returns (base dir, TrainResult,
    training Project)."""
    from gdino.train import TrainConfig, train

    torch.manual_seed(seed)
    base = save_hf(make_hf_model("tiny", seed=0), make_tokenizer(), directory / "base")
    project = shapes_project(directory / "train", n=n_train, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=2, lr=5e-4, lr_backbone=5e-4, freeze_backbone=False,
                         freeze_text=False, augment=False, image_size=image_size, val_fraction=0.0, lr_drop=0.8)
    result = train(project, str(base), directory / "tuned", config)
    return base, result, project


@dataclass
class Kept:
    """One image's kept detections (numpy)."""

    boxes: np.ndarray  # (K, 4) xyxy px
    scores: np.ndarray  # (K,)
    class_ids: np.ndarray  # (K,)

    @classmethod
    def of(cls, detections) -> Kept:
        return cls(np.asarray(detections.xyxy, np.float64).reshape(-1, 4), np.asarray(detections.confidence, np.float64),
                   np.asarray(detections.class_id, np.int64))

    def above(self, threshold: float) -> Kept:
        keep = self.scores > threshold
        return Kept(self.boxes[keep], self.scores[keep], self.class_ids[keep])

    def top(self, k: int) -> Kept:
        order = np.argsort(-self.scores, kind="stable")[:k]
        return Kept(self.boxes[order], self.scores[order], self.class_ids[order])

    def __len__(self) -> int:
        return len(self.scores)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def greedy_match(ref: Kept, other: Kept, iou: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """(ref index, other index, IoU) of the pairs: ref's boxes by descending score each take the free box of
    `other` of the same class with the highest IoU, if it is >= iou (greedy, one to one)."""
    ious = iou_matrix(ref.boxes, other.boxes)
    same = ref.class_ids[:, None] == other.class_ids[None, :]
    ious = np.where(same, ious, -1.0)
    taken = np.zeros(len(other), bool)
    pairs = []
    for i in np.argsort(-ref.scores, kind="stable"):
        if len(other) == 0:
            break
        row = np.where(taken, -1.0, ious[i])
        j = int(row.argmax())
        if row[j] >= iou:
            taken[j] = True
            pairs.append((int(i), j, float(row[j])))
    return pairs


@dataclass
class Agreement:
    """How one image's kept detections of two models agree."""

    exact: int  # detections the exact model keeps
    fast: int
    exact_matched: int  # exact ones with a fast box of the same class at IoU >= 0.9 (greedy one to one)
    fast_matched: int  # and the other way round
    min_iou: float  # the lowest IoU among the exact -> fast pairs (1.0 without pairs)
    max_score_diff: float  # the largest |score difference| among the exact -> fast pairs (0.0 without pairs)

    @property
    def all_matched(self) -> bool:
        return self.exact_matched == self.exact and self.fast_matched == self.fast


def agreement(exact: Kept, fast: Kept, iou: float = MATCH_IOU) -> Agreement:
    forward = greedy_match(exact, fast, iou)
    backward = greedy_match(fast, exact, iou)
    return Agreement(len(exact), len(fast), len(forward), len(backward),
                     min((p[2] for p in forward), default=1.0),
                     max((abs(exact.scores[i] - fast.scores[j]) for i, j, _ in forward), default=0.0))


def kept_per_image(detector, images, classes=CLASSES, *, box_threshold: float = BOX_THRESHOLD,
                   nms_iou: float | None = NMS_IOU) -> list[Kept]:
    """Each image's detections as the Detector keeps them (its default threshold and NMS)."""
    return [Kept.of(detector.detect(image, classes=list(classes), box_threshold=box_threshold, nms_iou=nms_iou))
            for image in images]
