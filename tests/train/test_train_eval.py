"""COCO mAP (gdino.train.evaluate): hand-worked values, pycocotools' edge cases, a random case against
pycocotools' own API, and the Detector runner on a tiny random model."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from gdino.train.evaluate import MapResult, Predictions, coco_map, detect_examples, evaluate_detector

R = 101  # pycocotools' recall thresholds 0, 0.01, ..., 1


@dataclass
class GT:
    width: int
    height: int
    boxes: np.ndarray
    class_ids: np.ndarray


def gt(boxes, classes, size=(100, 100)) -> GT:
    return GT(size[0], size[1], np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64))


def pred(boxes, scores, classes) -> Predictions:
    return Predictions(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64),
                       np.asarray(classes, np.int64))


A, B, C = [10, 10, 40, 40], [50, 50, 90, 80], [5, 60, 30, 95]


def test_perfect_predictions_give_one():
    truth = [gt([A, B], [0, 1]), gt([C], [0])]
    result = coco_map(truth, [pred([A, B], [0.9, 0.8], [0, 1]), pred([C], [0.7], [0])], ["cat", "dog"])
    assert result.map == pytest.approx(1.0) and result.map50 == pytest.approx(1.0)
    assert result.per_class == pytest.approx({"cat": 1.0, "dog": 1.0})
    assert (result.images, result.boxes, result.predictions) == (2, 3, 3)


def test_one_of_two_boxes_missed():
    # recall reaches 0.5 at precision 1: the recall thresholds 0.00 .. 0.50 (51 of 101) score 1, the rest 0
    result = coco_map([gt([A, B], [0, 0])], [pred([A], [0.9], [0])], ["cat"])
    assert result.map == pytest.approx(51 / R) and result.map50 == pytest.approx(51 / R)


def test_wrong_class_gives_zero_and_a_class_without_truth_is_not_averaged():
    result = coco_map([gt([A], [0])], [pred([A], [0.9], [1])], ["cat", "dog"])
    assert result.map == 0.0 and result.map50 == 0.0
    assert result.per_class == {"cat": 0.0}  # "dog" has no ground truth: no AP, not a 0 in the mean
    perfect_plus_stray = coco_map([gt([A], [0])], [pred([A, B], [0.9, 0.95], [0, 1])], ["cat", "dog"])
    assert perfect_plus_stray.map == pytest.approx(1.0)


def test_score_order_matters():
    truth = [gt([A, B], [0, 0])]
    fp = [60, 5, 95, 30]  # overlaps nothing
    # ranked FP, TP, TP: precision 1/2 at recall 1/2, 2/3 at recall 1; interpolated: 2/3 at every recall
    first = coco_map(truth, [pred([fp, A, B], [0.9, 0.8, 0.7], [0, 0, 0])], ["cat"])
    assert first.map == pytest.approx(2 / 3)
    last = coco_map(truth, [pred([fp, A, B], [0.1, 0.8, 0.7], [0, 0, 0])], ["cat"])
    assert last.map == pytest.approx(1.0)


def test_prediction_on_an_image_without_truth_is_a_false_positive():
    truth = [gt([A], [0]), gt([], [])]
    result = coco_map(truth, [pred([A], [0.5], [0]), pred([B], [0.9], [0])], ["cat"])
    assert result.map == pytest.approx(0.5)  # ranked FP, TP: precision 1/2 at recall 1


def test_iou_thresholds():
    # IoU 0.62 passes 0.50, 0.55 and 0.60 of the ten thresholds
    result = coco_map([gt([[0, 0, 100, 100]], [0])], [pred([[0, 0, 100, 62]], [0.9], [0])], ["cat"])
    assert result.map50 == pytest.approx(1.0) and result.map == pytest.approx(0.3)


def test_no_predictions_and_no_truth():
    none = coco_map([gt([A], [0]), gt([], [])], [Predictions.empty(), Predictions.empty()], ["cat"])
    assert none.map == 0.0 and none.map50 == 0.0 and none.per_class == {"cat": 0.0}
    empty = coco_map([gt([], [])], [pred([A], [0.9], [0])], ["cat"])
    assert empty.map is None and empty.map50 is None and empty.per_class == {}
    assert "n/a" in empty.summary()
    with pytest.raises(ValueError, match="predictions for 2"):
        coco_map([gt([A], [0])], [Predictions.empty(), Predictions.empty()], ["cat"])
    with pytest.raises(ValueError, match="class id 3"):
        coco_map([gt([A], [3])], [Predictions.empty()], ["cat"])


def test_random_case_matches_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    classes = ["cat", "dog", "bird", "car"]  # "car" gets predictions but no ground truth
    truth, preds = [], []
    for _ in range(8):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(5, 60, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 3, n)
        truth.append(gt(boxes, labels, (220, 210)))
        jitter = boxes + rng.normal(0, 4, boxes.shape)
        extra_xy = rng.uniform(0, 150, (3, 2))
        extra = np.concatenate([extra_xy, extra_xy + rng.uniform(5, 60, (3, 2))], 1)
        flipped = np.where(rng.random(n) < 0.2, (labels + 1) % 3, labels)
        preds.append(pred(np.concatenate([jitter, extra]), rng.random(n + 3),
                          np.concatenate([flipped, rng.integers(0, 4, 3)])))
    ours = coco_map(truth, preds, classes)

    # the same case through pycocotools' documented path (loadRes, summarize)
    images = [{"id": i + 1, "width": 220, "height": 210} for i in range(len(truth))]
    anns = [{"id": len(images) * 100 + j, "image_id": i + 1, "category_id": int(c) + 1, "iscrowd": 0,
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])}
            for i, g in enumerate(truth) for j, (b, c) in enumerate(zip(g.boxes.tolist(), g.class_ids, strict=True))]
    for k, a in enumerate(anns):
        a["id"] = k + 1
    results = [{"image_id": i + 1, "category_id": int(c) + 1, "score": float(s), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
               for i, p in enumerate(preds) for b, s, c in zip(p.boxes.tolist(), p.scores, p.class_ids, strict=True)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)]}
        coco.createIndex()
        detections = coco.loadRes(results)
        evaluator = COCOeval(coco, detections, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        per_class = {}
        for k, name in enumerate(classes[:3]):
            one = COCOeval(coco, detections, "bbox")
            one.params.catIds = [k + 1]
            one.evaluate()
            one.accumulate()
            one.summarize()
            per_class[name] = one.stats[0]
    assert 0.05 < ours.map < 0.95  # a case with something to get right and wrong
    assert ours.map == pytest.approx(evaluator.stats[0], abs=1e-12)
    assert ours.map50 == pytest.approx(evaluator.stats[1], abs=1e-12)
    assert ours.per_class == pytest.approx(per_class, abs=1e-12)
    assert set(ours.per_class) == {"cat", "dog", "bird"}


def test_detector_runner(tiny_ours, tmp_path):
    import gdino
    from gdino.train.data import Example

    rng = np.random.default_rng(0)
    examples = []
    for k in range(2):  # wide images: the model's input is 250 x 1333, cheap on a CPU
        path = tmp_path / f"im{k}.png"
        Image.fromarray(rng.integers(0, 255, (24, 128, 3), dtype=np.uint8)).save(path)
        examples.append(Example(k + 1, path.name, path, tmp_path, 128, 24, np.array([[4, 4, 30, 20]], np.float32),
                                np.array([k % 2], np.int64)))
    detector = gdino.Detector(tiny_ours)
    classes = ["cat", "dog"]
    preds = detect_examples(detector, examples, classes, max_detections=7)
    for p, e in zip(preds, examples, strict=True):
        assert 0 < len(p.scores) <= 7 and np.all(np.diff(p.scores) <= 0)
        assert p.boxes.shape == (len(p.scores), 4) and set(p.class_ids.tolist()) <= {0, 1}
        assert np.all(p.boxes[:, 2] <= e.width + 1e-3) and np.all(p.boxes[:, 3] <= e.height + 1e-3)
    direct = detector.detect(str(examples[0].path), classes=classes, box_threshold=0.01, nms_iou=None)
    top = np.argsort(-direct.confidence, kind="stable")[:7]
    assert np.allclose(direct.confidence[top], preds[0].scores) and np.allclose(direct.xyxy[top], preds[0].boxes)
    assert [classes.index(n) for n in direct.data["class_name"][top]] == preds[0].class_ids.tolist()
    result = evaluate_detector(detector, examples[:1], classes, max_detections=7)  # one image: each call takes seconds
    assert isinstance(result, MapResult) and 0.0 <= result.map <= 1.0 and result.per_class.keys() == {"cat"}
    assert result == coco_map(examples[:1], preds[:1], classes)
