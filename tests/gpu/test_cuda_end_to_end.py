"""Detector and Segmenter on a GPU, end to end: the same detections and masks as on the CPU in float32,
and bfloat16 / float16 runs that stay close. Skipped without a GPU (CI has none); run on a lent one."""

import numpy as np
import pytest
import torch
from tiny_sam import save_tiny_sam

import gdino
from gdino.sam.segmenter import Segmenter

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CLASSES = ["cat", "remote control", "dog"]


def photo(h=300, w=400, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _true_float32(monkeypatch):
    # cuDNN convolutions default to TF32 (10-bit mantissa): compare in true float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture(scope="module")
def cpu_dets(tiny_hf):
    det = gdino.Detector(gdino.load_model(tiny_hf[1], device="cpu"))
    return [det.detect(photo(seed=s), classes=CLASSES, box_threshold=0.2) for s in range(3)]


def test_float32_detections_match_the_cpu(tiny_hf, cpu_dets):
    det = gdino.Detector.from_pretrained(str(tiny_hf[1]), device="cuda")
    assert next(det.model.parameters()).is_cuda
    found = det.detect_batch([photo(seed=s) for s in range(3)], classes=CLASSES, box_threshold=0.2, batch_size=2)
    for a, b in zip(cpu_dets, found, strict=True):
        assert len(a) == len(b) > 0
        assert np.allclose(a.xyxy, b.xyxy, atol=1e-2), np.abs(a.xyxy - b.xyxy).max()
        assert np.allclose(a.confidence, b.confidence, atol=1e-4)
        assert list(a.data["class_name"]) == list(b.data["class_name"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_stay_close_to_float32(tiny_hf, cpu_dets, dtype):
    det = gdino.Detector.from_pretrained(str(tiny_hf[1]), device="cuda", dtype=dtype)
    found = det.detect(photo(seed=0), classes=CLASSES, box_threshold=0.2)
    ref = cpu_dets[0]
    assert len(found) > 0 and np.isfinite(found.xyxy).all() and set(found.data["class_name"]) <= set(CLASSES)
    assert abs(float(found.confidence.max()) - float(ref.confidence.max())) < 0.05


def test_segmenter_masks_match_the_cpu(tmp_path):
    path = save_tiny_sam(tmp_path / "tiny_sam.pth")
    image = photo()
    boxes = [[10, 10, 100, 120], [50, 60, 300, 290], [200, 20, 390, 100]]
    on_cpu = Segmenter.from_pretrained(path, device="cpu").segment(image, boxes)
    gpu = Segmenter.from_pretrained(path, device="cuda")
    assert gpu.device.type == "cuda"
    on_gpu = gpu.segment(image, boxes)
    assert on_gpu.masks.shape == on_cpu.masks.shape == (3, 300, 400)
    for i in range(3):
        assert (on_gpu.masks[i] == on_cpu.masks[i]).mean() > 0.999
    assert np.allclose(on_gpu.scores, on_cpu.scores, atol=1e-3)
    refined = gpu.refine(image, [[60, 70]], [1])
    assert refined.mask.shape == (300, 400) and refined.mask.dtype == bool
