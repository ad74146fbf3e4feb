"""gdino.Detector on a tiny random model of each family (the original Grounding DINO and MM-Grounding-DINO):
labels, long lists, synonyms, NMS, cache, batches, EXIF, and every bad input from the issue."""

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image
from test_prompts import lvis_sized_class_list
from tiny_models import make_mm_hf_model, save_hf
from torchvision.ops import box_iou

import gdino
from gdino import ImageError, PromptError
from gdino.postprocess import Labeled, suppress_duplicates
from gdino.prompts import build_chunks, parse_classes

CLASSES = ["cat", "remote control", "dog"]


@pytest.fixture(scope="module", params=["gdino", "mm_gdino"])
def model_dir(request, tiny_hf, tokenizer, tmp_path_factory):
    """A saved tiny model of each family: every test below runs on both."""
    if request.param == "gdino":
        return tiny_hf[1]
    mm = make_mm_hf_model("tiny", seed=0)
    with torch.no_grad():  # class biases near 0 instead of the initial -4.6, so the thresholds below find boxes
        for i, head in enumerate([*mm.class_embed, mm.model.encoder_output_class_embed]):
            head.bias.fill_(0.1 * i)
    return save_hf(mm, tokenizer, tmp_path_factory.mktemp("mm_tiny"))


@pytest.fixture(scope="module")
def det(model_dir):
    model = gdino.load_model(model_dir)
    assert model.config.family == ("mm_gdino" if "mm_tiny" in str(model_dir) else "gdino")
    return gdino.Detector(model)


def photo(h=300, w=400, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def assert_same(a: sv.Detections, b: sv.Detections, atol=1e-4):
    assert len(a) == len(b)
    assert np.allclose(a.xyxy, b.xyxy, atol=atol) and np.allclose(a.confidence, b.confidence, atol=atol)
    assert np.array_equal(a.class_id, b.class_id)
    assert list(a.data["class_name"]) == list(b.data["class_name"])


def test_every_detection_gets_one_class_of_the_list(det):
    dets = det.detect(photo(), classes=CLASSES, box_threshold=0.3)
    assert isinstance(dets, sv.Detections) and len(dets) > 0
    assert set(dets.data["class_name"]) <= set(CLASSES)
    assert [CLASSES[i] for i in dets.class_id] == list(dets.data["class_name"])
    assert dets.xyxy.dtype == np.float32 and (dets.confidence > 0.3).all()
    assert (dets.xyxy[:, [0, 2]] <= 400).all() and (dets.xyxy[:, [1, 3]] <= 300).all() and (dets.xyxy >= 0).all()
    assert dets.metadata["classes"] == CLASSES
    assert (np.diff(dets.confidence) <= 0).all()  # sorted by confidence


def test_threshold_filters(det):
    low = det.detect(photo(), classes=CLASSES, box_threshold=0.0, nms_iou=None)
    high = det.detect(photo(), classes=CLASSES, box_threshold=0.9, nms_iou=None)
    assert len(low) == 30  # the tiny model has 30 queries
    assert len(high) == int((low.confidence > 0.9).sum())


def test_long_class_list_equals_running_its_chunks_by_hand(det):
    # 300 of the LVIS-sized list's names: several chunks and a short last one, as 1,203 give (the chunking of the
    # full list: test_prompts.py); each chunk costs a text pass and a decoder pass, twice here (45 s for 1,203)
    names = lvis_sized_class_list()[:300]
    image = photo(seed=3)
    full = det.detect(image, classes=names, box_threshold=0.2)
    chunks = build_chunks(parse_classes(names), det.tokenizer)
    assert len(chunks) >= 3, len(chunks)
    parts = []
    for chunk in chunks:
        chunk_names = [names[p] for p in chunk.phrase_index]
        d = det.detect(image, classes=chunk_names, box_threshold=0.2, nms_iou=None)
        ids = torch.tensor([chunk.phrase_index[i] for i in d.class_id], dtype=torch.int64)
        parts.append(Labeled(torch.from_numpy(d.xyxy), torch.from_numpy(d.confidence), ids))
    by_hand = suppress_duplicates(Labeled.cat(parts), 0.5, None)
    assert len(full) == len(by_hand.scores) > 0
    assert np.allclose(full.xyxy, by_hand.boxes.numpy(), atol=1e-4)
    assert np.array_equal(full.class_id, by_hand.class_ids.numpy())
    assert set(full.data["class_name"]) <= set(names)


def test_synonyms(det):
    dets = det.detect(photo(), classes={"pet": ["cat", "dog"], "person": ["person", "man"]}, box_threshold=0.2)
    assert len(dets) > 0 and set(dets.data["class_name"]) <= {"pet", "person"}


def test_nms_per_class_and_across_classes(det):
    image = photo(seed=1)
    raw = det.detect(image, classes=CLASSES, box_threshold=0.0, nms_iou=None)
    per_class = det.detect(image, classes=CLASSES, box_threshold=0.0, nms_iou=0.3)
    agnostic = det.detect(image, classes=CLASSES, box_threshold=0.0, nms_iou=0.3, agnostic_nms_iou=0.3)
    assert len(raw) >= len(per_class) >= len(agnostic)
    for d, same_class_only in ((per_class, True), (agnostic, False)):
        iou = box_iou(torch.from_numpy(d.xyxy), torch.from_numpy(d.xyxy)).fill_diagonal_(0)
        if same_class_only:
            iou *= torch.from_numpy(d.class_id[:, None] == d.class_id[None, :])
        assert (iou <= 0.3 + 1e-6).all()


def test_cache_on_equals_cache_off_and_skips_the_backbone(model_dir):
    model = gdino.load_model(model_dir)
    cached, uncached = gdino.Detector(model, cache_size=4), gdino.Detector(model, cache_size=0)
    calls = []
    hook = model.backbone.register_forward_hook(lambda *a: calls.append(1))
    image = photo(seed=2)
    for prompt in (CLASSES, ["person", "car"], CLASSES):
        assert_same(cached.detect(image, classes=prompt, box_threshold=0.2),
                    uncached.detect(image, classes=prompt, box_threshold=0.2), atol=0)
    hook.remove()
    assert len(calls) == 1 + 3  # cached: the first call only; uncached: every call


def test_free_text_cache_and_phrases(det):
    prompt = "a cat sitting on the red couch . remote control"
    dets = det.detect(photo(), prompt=prompt, box_threshold=0.3, text_threshold=0.25)
    assert len(dets) > 0
    for phrase in dets.data["phrase"]:
        assert phrase and phrase in prompt and "##" not in phrase
        # whole words of the prompt, never across the '.'
        assert f" {phrase} " in f" {prompt} " and "." not in phrase
    assert list(dets.data["class_name"]) == [dets.metadata["classes"][i] for i in dets.class_id]


def test_batch_equals_one_at_a_time(det):
    images = [photo(300, 400, 0), photo(240, 320, 1), photo(300, 400, 2), photo(500, 200, 3), photo(300, 400, 4)]
    det.clear_cache()
    batched = det.detect_batch(images, classes=CLASSES, batch_size=2, box_threshold=0.2)
    det.clear_cache()
    for image, b in zip(images, batched, strict=True):
        assert_same(det.detect(image, classes=CLASSES, box_threshold=0.2), b)


def test_exif_rotated_input_gives_boxes_in_the_upright_frame(det, tmp_path):
    stored = Image.fromarray(photo(200, 320, 5))  # stored landscape 320x200
    exif = Image.Exif()
    exif[0x0112] = 8  # displayed rotated: a viewer shows it 200 wide, 320 high
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    with Image.open(path) as f:
        # rotated by hand, as plain pixels (transpose() would keep the stale EXIF tag in .info)
        upright = Image.fromarray(np.asarray(f.transpose(Image.Transpose.ROTATE_90).convert("RGB")))
    from_file = det.detect(path, classes=CLASSES, box_threshold=0.2)
    from_upright = det.detect(upright, classes=CLASSES, box_threshold=0.2)
    assert_same(from_file, from_upright)
    assert (from_file.xyxy[:, [0, 2]] <= 200).all() and (from_file.xyxy[:, [1, 3]] <= 320).all()


def test_bfloat16_runs_on_cpu(model_dir):
    det16 = gdino.Detector(gdino.load_model(model_dir, dtype=torch.bfloat16))
    dets = det16.detect(photo(), classes=CLASSES, box_threshold=0.2)
    assert np.isfinite(dets.xyxy).all() and set(dets.data["class_name"]) <= set(CLASSES)


def test_float16_on_cpu_is_refused(model_dir):
    with pytest.raises(ValueError, match="float16 is for CUDA only"):
        gdino.Detector.from_pretrained(str(model_dir), device="cpu", dtype=torch.float16)


def test_unicode_class_names_keep_the_users_label(det):
    dets = det.detect(photo(), classes=["cat 🐱", "remote control"], box_threshold=0.0)
    assert set(dets.data["class_name"]) <= {"cat 🐱", "remote control"}


# ------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(prompt=""), PromptError, "empty or has no words"),
        (dict(prompt="   ?! "), PromptError, "empty or has no words"),
        (dict(prompt=42), PromptError, "must be a string"),
        (dict(classes=[]), PromptError, "class list is empty"),
        (dict(classes=["cat", ""]), PromptError, "is empty"),
        (dict(classes=["..."]), PromptError, "is empty"),
        (dict(classes=["cat", "#$%"]), PromptError, "no letters or digits"),
        (dict(classes=["cat", "cat"]), PromptError, "duplicate class name"),
        (dict(classes=["cat", 7]), PromptError, "must be a string"),
        (dict(classes=["🐱"]), PromptError, "no letters or digits"),
        (dict(classes=["zebra"]), PromptError, "knows none of the words"),
        (dict(), PromptError, "either classes"),
        (dict(classes=["cat"], prompt="a cat"), PromptError, "either classes"),
        (dict(classes=["cat"], box_threshold=1.5), ValueError, "box_threshold must be a number between 0 and 1"),
        (dict(classes=["cat"], box_threshold=-0.1), ValueError, "box_threshold"),
        (dict(classes=["cat"], text_threshold=2), ValueError, "text_threshold"),
        (dict(classes=["cat"], box_threshold="0.3"), ValueError, "box_threshold"),
        (dict(classes=["cat"], nms_iou=1.2), ValueError, "nms_iou"),
        (dict(prompt=" ".join(["cat"] * 300)), PromptError, "at most 256"),
    ],
)
def test_bad_prompts_and_thresholds(det, kwargs, error, message):
    with pytest.raises(error, match=message):
        det.detect(photo(), **kwargs)


def test_bad_images(det, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = tmp_path / "good.png"
    Image.fromarray(photo(100, 100)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    cases = [
        (corrupt, "could not read"),
        (empty, "empty file"),
        (truncated, "could not read"),
        (tmp_path / "missing.jpg", "could not read"),
        (Image.new("RGB", (1, 1)), "only 1x1 pixels"),
        (np.zeros((10, 10, 7), dtype=np.uint8), "numpy image must be"),
        (Image.new("L", (8000, 7000)), "56 megapixels"),  # 56 MP > the 50 MP limit
        (Image.new("RGB", (5000, 10)), "aspect ratio is too extreme"),
        ("not/an/image/path.png", "could not read"),
    ]
    for image, message in cases:
        with pytest.raises(ImageError, match=message):
            det.detect(image, classes=["cat"])


def test_image_size_limit_is_configurable(model_dir):
    small_limit = gdino.Detector(gdino.load_model(model_dir), max_pixels=10_000)
    with pytest.raises(ImageError, match="more than the limit of 0 MP"):
        small_limit.detect(photo(200, 200), classes=["cat"])


def test_batch_arguments(det):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        det.detect_batch([photo()], classes=["cat"], batch_size=0)
    with pytest.raises(ValueError, match="must be a list of images"):
        det.detect_batch("photo.jpg", classes=["cat"])
    assert det.detect_batch([], classes=["cat"]) == []


# ------------------------------------------------------------------------------- number arguments

def test_numpy_and_torch_numbers_are_accepted_as_plain_numbers(det):
    """A threshold read from a numpy array (np.float32, a 0-d array) is a number like any other. The values
    are exact in float32 and float16, so the results must be identical to those of Python floats."""
    image = photo(seed=6)
    plain = det.detect(image, classes=CLASSES, box_threshold=0.25, nms_iou=0.5, agnostic_nms_iou=0.75)
    for kind in (np.float32, np.float16, np.float64, np.array, torch.tensor):
        d = det.detect(image, classes=CLASSES, box_threshold=kind(0.25), nms_iou=kind(0.5),
                       agnostic_nms_iou=kind(0.75))
        assert_same(plain, d, atol=0)
    text = det.detect(image, prompt="a cat on a couch", box_threshold=0.25, text_threshold=0.25)
    assert_same(text, det.detect(image, prompt="a cat on a couch", box_threshold=np.float32(0.25),
                                 text_threshold=np.array(0.25, dtype=np.float32)), atol=0)
    assert_same(det.detect_batch([image], classes=CLASSES, batch_size=np.int64(2), box_threshold=np.int64(0))[0],
                det.detect(image, classes=CLASSES, box_threshold=0), atol=0)


@pytest.mark.parametrize("name", ["box_threshold", "text_threshold", "nms_iou", "agnostic_nms_iou"])
@pytest.mark.parametrize("value", [float("nan"), np.float32("nan"), np.array(float("nan")), float("inf"), 1.5,
                                   np.float32(-0.1), True, np.bool_(False), "0.3", np.array([0.3]), [0.3], 1j])
def test_bad_numbers_are_refused_naming_the_argument_and_range(det, name, value):
    with pytest.raises(ValueError, match=f"^{name} must be a number between 0 and 1") as err:
        det.detect(photo(), classes=CLASSES, **{name: value})
    assert "got" in str(err.value)


@pytest.mark.parametrize("name", ["box_threshold", "text_threshold"])
def test_none_is_refused_where_a_number_is_required(det, name):
    with pytest.raises(ValueError, match=f"^{name} must be a number between 0 and 1, got None"):
        det.detect(photo(), classes=CLASSES, **{name: None})


@pytest.mark.parametrize("value", [np.float64(2.5), 0, -1, True, "2", None, float("nan"), float("inf")])
def test_batch_size_must_be_a_whole_positive_number(det, value):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        det.detect_batch([photo()], classes=["cat"], batch_size=value)


def test_detector_settings_are_checked(tiny_ours):
    assert gdino.Detector(tiny_ours, cache_size=np.int64(2), max_pixels=np.int32(10**6)).cache_size == 2
    assert gdino.Detector(tiny_ours, max_pixels=20e6).max_pixels == 20_000_000  # a whole float counts
    for kwargs, message in [(dict(cache_size=-1), "cache_size must be an integer >= 0"),
                            (dict(cache_size="4"), "cache_size must be an integer >= 0"),
                            (dict(cache_size=None), "cache_size must be an integer >= 0"),
                            (dict(max_pixels=0), "max_pixels must be a positive integer"),
                            (dict(max_pixels=float("nan")), "max_pixels must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            gdino.Detector(tiny_ours, **kwargs)
