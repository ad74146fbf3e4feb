"""gdino.Detector on SAM 3 weights (a tiny random Sam3Model in the hub layout): the Grounding DINO contract
(exact names, long lists, synonyms, cache, batches, EXIF, bad input) and SAM 3's own (masks, exemplars)."""

import json

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from sam3_models import save_tiny_sam3

import gdino
from gdino import ImageError, PromptError
from gdino.sam3.detector import Sam3Detector
from gdino.sam3.loading import is_sam3, load_sam3
from gdino.weights.hub import WeightsError

CLASSES = ["cat", "remote control", "dog"]
MANY = ["cat", "dog", "car", "person", "remote", "control", "bus", "bird", "box", "tree", "white box", "red car",
        "green tree", "blue bus", "black dog"]  # 15 classes: four prompt batches of up to 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_sam3(tmp_path_factory.mktemp("sam3_tiny"))


@pytest.fixture(scope="module")
def det(model_dir):
    detector = gdino.Detector.from_pretrained(str(model_dir), device="cpu")
    assert isinstance(detector, Sam3Detector)
    return detector


def photo(h=300, w=400, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def assert_same(a: sv.Detections, b: sv.Detections, atol=1e-5):
    assert len(a) == len(b)
    assert np.allclose(a.xyxy, b.xyxy, atol=atol) and np.allclose(a.confidence, b.confidence, atol=atol)
    assert np.array_equal(a.class_id, b.class_id) and np.array_equal(a.mask, b.mask)
    assert list(a.data["class_name"]) == list(b.data["class_name"])


def test_every_detection_gets_one_class_of_the_list_with_a_mask(det):
    dets = det.detect(photo(), classes=CLASSES, box_threshold=0.1)
    assert isinstance(dets, sv.Detections) and len(dets) > 0
    assert [CLASSES[i] for i in dets.class_id] == list(dets.data["class_name"])
    assert dets.metadata["classes"] == CLASSES and (dets.confidence > 0.1).all()
    assert (np.diff(dets.confidence) <= 0).all()
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, [0, 2]] <= 400).all() and (dets.xyxy[:, [1, 3]] <= 300).all()
    assert dets.mask.shape == (len(dets), 300, 400) and dets.mask.dtype == bool


def test_long_class_list_equals_each_class_alone(det):
    image = photo(seed=1)
    together = det.detect(image, classes=MANY, box_threshold=0.05, nms_iou=None)
    alone = []
    for i, name in enumerate(MANY):
        d = det.detect(image, classes=[name], box_threshold=0.05, nms_iou=None)
        alone += [(float(s), i, tuple(np.round(b, 3))) for s, b in zip(d.confidence, d.xyxy, strict=True)]
    mine = [(float(s), int(c), tuple(np.round(b, 3))) for s, c, b in
            zip(together.confidence, together.class_id, together.xyxy, strict=True)]
    assert len(mine) == len(alone) > 0
    for (s1, c1, b1), (s2, c2, b2) in zip(sorted(mine, key=lambda t: (t[1], -t[0])),
                                          sorted(alone, key=lambda t: (t[1], -t[0])), strict=True):
        assert c1 == c2 and abs(s1 - s2) < 1e-5 and np.allclose(b1, b2, atol=2e-3)
    assert set(together.data["class_name"]) <= set(MANY)


def test_synonyms_count_as_their_class(det):
    dets = det.detect(photo(), classes={"pet": ["cat", "dog"], "vehicle": "car"}, box_threshold=0.05)
    assert set(dets.data["class_name"]) <= {"pet", "vehicle"} and len(dets) > 0
    assert dets.metadata["classes"] == ["pet", "vehicle"]


def test_cache_on_equals_cache_off_and_runs_the_image_side_once(model_dir):
    model = load_sam3(model_dir, device="cpu")
    cached, uncached = Sam3Detector(model, cache_size=2), Sam3Detector(model, cache_size=0)
    calls = []
    hook = model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    image = photo(seed=2)
    for prompt in (CLASSES, ["person", "car"], CLASSES):
        assert_same(cached.detect(image, classes=prompt, box_threshold=0.05),
                    uncached.detect(image, classes=prompt, box_threshold=0.05), atol=0)
    hook.remove()
    assert len(calls) == 1 + 3


def test_batch_equals_one_at_a_time(det):
    images = [photo(300, 400, 0), photo(240, 320, 1), photo(500, 200, 3)]
    det.clear_cache()
    batched = det.detect_batch(images, classes=CLASSES, batch_size=2, box_threshold=0.05)
    for image, b in zip(images, batched, strict=True):
        assert_same(det.detect(image, classes=CLASSES, box_threshold=0.05), b)


def test_free_text_is_one_phrase(det):
    dets = det.detect(photo(), prompt="  a red   car ", box_threshold=0.05)
    assert len(dets) > 0 and set(dets.data["class_name"]) == {"a red car"} == set(dets.data["phrase"])


def test_exif_rotated_input_gives_boxes_and_masks_in_the_upright_frame(det, tmp_path):
    stored = Image.fromarray(photo(200, 320, 5))
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    with Image.open(path) as f:
        upright = Image.fromarray(np.asarray(f.transpose(Image.Transpose.ROTATE_90).convert("RGB")))
    from_file = det.detect(path, classes=CLASSES, box_threshold=0.05)
    assert_same(from_file, det.detect(upright, classes=CLASSES, box_threshold=0.05))
    assert from_file.mask.shape[1:] == (320, 200)


def test_find_similar_gives_the_class_and_masks(det):
    image = photo(seed=4)
    found = det.find_similar(image, [[20, 30, 120, 150], [200, 100, 300, 250]], [True, False], class_name="cup",
                             box_threshold=0.0)
    assert len(found) > 0 and set(found.data["class_name"]) == {"cup"} and found.mask.shape[1:] == (300, 400)
    again = det.find_similar(image, np.array([[20, 30, 120, 150], [200, 100, 300, 250]]), [1, 0], class_name="cup",
                             box_threshold=0.0)
    assert_same(found, again)


@pytest.mark.parametrize("boxes, labels, message", [
    ([], None, "at least one exemplar"),
    ([[10, 10, 5, 50]], None, "x1 > x0"),
    ([[10, 10, 50, float("nan")]], None, "x1 > x0"),
    ([[10, 10, 50, 50]], [False], "at least one positive"),
    ([[10, 10, 50, 50]], [True, False], "2 labels for 1"),
])
def test_find_similar_bad_exemplars(det, boxes, labels, message):
    with pytest.raises(PromptError, match=message):
        det.find_similar(photo(), boxes, labels, class_name="cup")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(prompt=""), PromptError, "empty or has no words"),
    (dict(prompt=42), PromptError, "must be a string"),
    (dict(classes=[]), PromptError, "class list is empty"),
    (dict(classes=["cat", ""]), PromptError, "is empty"),
    (dict(classes=["cat", "cat"]), PromptError, "duplicate class name"),
    (dict(classes=["cat", 7]), PromptError, "must be a string"),
    (dict(), PromptError, "either classes"),
    (dict(classes=["cat"], prompt="a cat"), PromptError, "either classes"),
    (dict(classes=["cat"], box_threshold=1.5), ValueError, "box_threshold must be a number between 0 and 1"),
    (dict(classes=["cat"], nms_iou=1.2), ValueError, "nms_iou"),
    (dict(classes=[" ".join(["cat"] * 31)]), PromptError, "at most 30 per class"),
])
def test_bad_prompts_and_thresholds(det, kwargs, error, message):
    with pytest.raises(error, match=message):
        det.detect(photo(), **kwargs)
    if "classes" in kwargs and error is PromptError and "prompt" not in kwargs:
        with pytest.raises(error, match=message):
            det.check_prompt(kwargs["classes"])


def test_bad_images(det, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for image, message in [(empty, "empty file"), (Image.new("RGB", (1, 1)), "only 1x1 pixels"),
                           (tmp_path / "missing.jpg", "could not read")]:
        with pytest.raises(ImageError, match=message):
            det.detect(image, classes=["cat"])


def test_precision_and_dtype(model_dir):
    fast = gdino.Detector.from_pretrained(str(model_dir), device="cpu", precision="fast")
    from gdino.modeling.precision import describe_precision

    assert describe_precision(fast.model) == "exact (float32)"  # SAM 3 has no fast mode: it says what it runs
    with pytest.raises(ValueError, match="float32 only"):
        gdino.Detector.from_pretrained(str(model_dir), device="cpu", dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------- loading

def test_loading_is_strict(model_dir, tmp_path):
    state = load_file(str(model_dir / "model.safetensors"))
    for name, change in [("missing", lambda s: s.pop("detr_decoder.query_embed.weight")),
                         ("extra", lambda s: s.__setitem__("detr_decoder.surplus", torch.zeros(2))),
                         ("shape", lambda s: s.__setitem__("detr_decoder.query_embed.weight", torch.zeros(3, 3)))]:
        broken = tmp_path / name
        broken.mkdir()
        for f in model_dir.iterdir():
            if f.name != "model.safetensors":
                (broken / f.name).write_bytes(f.read_bytes())
        s = dict(state)
        change(s)
        save_file(s, str(broken / "model.safetensors"))
        with pytest.raises(WeightsError, match="does not fit the model"):
            load_sam3(broken)


def test_a_sam3_video_folder_loads_its_detector(model_dir, tmp_path):
    """facebook/sam3's layout: model_type sam3_video, the detector's tensors under detector_model., the tracker's
    beside them."""
    video = tmp_path / "video"
    video.mkdir()
    for f in model_dir.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            (video / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((model_dir / "config.json").read_text())
    (video / "config.json").write_text(json.dumps({"model_type": "sam3_video", "detector_config": cfg}))
    state = {"detector_model." + k: v for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    state["tracker_model.some.weight"] = torch.zeros(2)
    save_file(state, str(video / "model.safetensors"))
    assert is_sam3(video)
    image = photo(seed=7)
    a = gdino.Detector.from_pretrained(str(video), device="cpu").detect(image, classes=CLASSES, box_threshold=0.05)
    b = gdino.Detector.from_pretrained(str(model_dir), device="cpu").detect(image, classes=CLASSES, box_threshold=0.05)
    assert_same(a, b, atol=0)


def test_grounding_dino_sources_are_not_taken_for_sam3(tiny_hf, tmp_path):
    assert not is_sam3(tiny_hf[1]) and not is_sam3(tmp_path / "nothing") and not is_sam3("not a repo id!")
    assert type(gdino.Detector.from_pretrained(str(tiny_hf[1]), device="cpu")).__name__ == "Detector"


def test_missing_tokenizer_and_offline_hub_say_what_to_do(model_dir, tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(WeightsError, match="vocab.json and merges.txt"):
        load_sam3(bare)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="hf download facebook/sam3"):
        load_sam3("facebook/sam3")
    assert is_sam3("facebook/sam3")  # known without a download: a gated or offline failure is said as SAM 3's
    with pytest.raises(WeightsError, match="SAM 3 is gated: accept Meta's SAM License") as err:
        gdino.Detector.from_pretrained("facebook/sam3", device="cpu")
    assert "gdino.load_model" not in str(err.value) and "grounding-dino" not in str(err.value)


def test_grounding_dino_settings_are_refused_by_name(model_dir):
    with pytest.raises(ValueError, match="image_size: not a setting of SAM 3's detector"):
        gdino.Detector.from_pretrained(str(model_dir), device="cpu", image_size=640)


# ------------------------------------------------------------------------------ exemplars carried over

def test_exemplars_carried_to_their_own_image_equal_find_similar(det):
    image = photo(seed=4)
    boxes, labels = [[20, 30, 120, 150], [200, 100, 300, 250]], [True, False]
    prompt = det.exemplar_prompt(image, boxes, labels)
    assert prompt.tokens.shape[:2] == (1, 3) and (prompt.positives, prompt.negatives) == (1, 1)
    here = det.find_similar(image, boxes, labels, class_name="cup", box_threshold=0.0)
    assert_same(det.detect_like(image, prompt, class_name="cup", box_threshold=0.0), here, atol=0)


def test_exemplars_carried_to_another_image(det):
    prompt = det.exemplar_prompt(photo(seed=4), [[20, 30, 120, 150]])
    other = photo(200, 260, seed=9)
    found = det.detect_like(other, prompt, class_name="cup", box_threshold=0.0)
    assert len(found) > 0 and set(found.data["class_name"]) == {"cup"} and found.mask.shape[1:] == (200, 260)
    # the carried tokens are what the other image is searched with: another exemplar gives other results
    prompt2 = det.exemplar_prompt(photo(seed=4), [[150, 40, 390, 290]])
    assert not np.allclose(det.detect_like(other, prompt2, class_name="cup", box_threshold=0.0, nms_iou=None).confidence,
                           det.detect_like(other, prompt, class_name="cup", box_threshold=0.0, nms_iou=None).confidence)
    with pytest.raises(PromptError, match="exemplar_prompt"):
        det.detect_like(other, "cup", class_name="cup")
