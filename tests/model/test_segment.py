"""gdino.Segmenter on every backend: a small random SAM 1 saved like the official checkpoints, a small random
SAM 2.1 and a small random EdgeTAM in the hub layout (tests/support/sam2_models.py), a small random SAM 3
(its interactive head, in facebook/sam3's folder layout; tests/support/sam3_models.py). The geometry guarantees
(all boxes in one call, clipping, EXIF, odd and tiny sizes, masks in the image's pixels) run on each; the
SAM 1 file format tests on SAM 1 (SAM 2.1 / EdgeTAM loading: test_sam2.py)."""

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image
from sam2_models import random_edgetam_folder, small_sam2_folder
from sam3_models import save_tiny_sam3_video
from tiny_sam import make_tiny_sam, save_tiny_sam

import gdino.sam.sam1 as segment_module
from gdino.processing import ImageError
from gdino.sam.prompts import SegmenterError
from gdino.sam.sam1 import SAM_CHECKPOINTS, sam_shape_from_state
from gdino.sam.segmenter import Segmenter

BACKENDS = ["sam1", "sam2.1", "edgetam", "sam3"]
# tiny SAM 1: a 256 px frame; SAM 2.1 / EdgeTAM: 1024; the tiny SAM 3: 224 (the real one: 1008, 288)
LOW_RES = {"sam1": 64, "sam2.1": 256, "edgetam": 256, "sam3": 64}


@pytest.fixture(scope="module")
def sam_path(tmp_path_factory):
    return save_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pth")


@pytest.fixture(scope="module", params=BACKENDS)
def model(request, sam_path, tmp_path_factory):
    """(backend kind, the file or folder --sam would be given)."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sam1":
        return "sam1", sam_path
    if request.param == "sam2.1":
        return "sam2.1", small_sam2_folder(tmp / "sam2.1-small-random")
    if request.param == "sam3":
        return "sam3", save_tiny_sam3_video(tmp / "sam3-small-random")
    return "edgetam", random_edgetam_folder(tmp / "edgetam-small-random", small=True)


@pytest.fixture
def seg(model):
    return Segmenter.from_pretrained(model[1], device="cpu")


def photo(h=300, w=400, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_checkpoint_loads_through_the_real_path_with_inferred_sizes(sam_path):
    seg = Segmenter.from_pretrained(sam_path, device="cpu")
    ref = make_tiny_sam()
    for (name, a), (_, b) in zip(seg.sam.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    enc = seg.sam.image_encoder
    assert enc.img_size == 256 and len(enc.blocks) == 2


@pytest.mark.parametrize("name, dim, depth, heads, global_blocks", [
    ("vit_b", 768, 12, 12, (2, 5, 8, 11)), ("vit_l", 1024, 24, 16, (5, 11, 17, 23)), ("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
])
def test_official_architectures_are_read_from_their_shapes(name, dim, depth, heads, global_blocks):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # the official builders, no memory used
        state = sam_model_registry[name]().state_dict()
    s = sam_shape_from_state(state)
    assert (s.img_size, s.patch_size, s.embed_dim, s.depth, s.num_heads) == (1024, 16, dim, depth, heads)
    assert s.global_attn_indexes == global_blocks and s.window_size == 14 and s.mlp_ratio == 4
    assert (s.prompt_dim, s.mask_in_chans, s.num_multimask_outputs, s.decoder_depth, s.decoder_mlp_dim) == (256, 16, 3, 2, 2048)
    assert (s.iou_head_depth, s.iou_head_hidden_dim) == (3, 256)


def test_all_boxes_in_one_call(seg):
    image = photo()
    boxes = [[10, 10, 100, 120], [50, 60, 300, 290], [200, 20, 390, 100]]
    result = seg.segment(image, boxes)
    assert result.masks.shape == (3, 300, 400) and result.masks.dtype == bool
    assert result.scores.shape == (3,) and seg.encoder_calls == 1
    for i, box in enumerate(boxes):  # one call for all == one call per box
        single = seg.segment(image, [box])
        agree = (single.masks[0] == result.masks[i]).mean()
        assert agree > 0.999 and abs(single.scores[0] - result.scores[i]) < 1e-4
    assert seg.encoder_calls == 1  # the embedding was reused


def test_box_edge_cases(seg):
    image = photo()
    empty = seg.segment(image, [])
    assert empty.masks.shape == (0, 300, 400) and seg.encoder_calls == 0  # no model call at all
    zero = seg.segment(image, [[50, 50, 50, 80], [500, 500, 600, 600]])  # no width; fully outside
    assert not zero.masks.any() and (zero.scores == 0).all() and seg.encoder_calls == 0
    clipped = seg.segment(image, [[-50, -40, 120, 130]])
    inside = seg.segment(image, [[0, 0, 120, 130]])
    assert np.array_equal(clipped.masks, inside.masks)
    with pytest.raises(SegmenterError, match="finite"):
        seg.segment(image, [[0, 0, float("nan"), 10]])


def test_refine_reuses_the_embedding(seg, model):
    image = photo(seed=1)
    first = seg.segment(image, [[40, 40, 200, 200]])
    r1 = seg.refine(image, points=[(100, 100)], labels=[1])
    r2 = seg.refine(image, points=[(100, 100), (150, 60)], labels=[1, 0], mask=r1.logits)
    r3 = seg.refine(image, points=[(100, 100)], labels=[1], box=[40, 40, 200, 200], mask=first.masks[0])
    assert seg.encoder_calls == 1
    for r in (r1, r2, r3):
        assert r.mask.shape == (300, 400) and r.mask.dtype == bool and np.isfinite(r.score)
    side = LOW_RES[model[0]]
    assert r1.logits.shape == (1, side, side) and r1.logits.dtype == np.float32


def test_single_click_picks_the_best_of_three(seg, monkeypatch):
    image = photo(seed=2)
    seen = {}
    original = seg.backend.decode

    def spy(*args, **kwargs):
        low_res, iou = original(*args, **kwargs)
        seen["iou"], seen["multimask"] = iou.clone(), kwargs["multimask"]
        return low_res, iou

    monkeypatch.setattr(seg.backend, "decode", spy)
    r = seg.refine(image, points=[(120, 130)], labels=[1])
    assert seen["multimask"] is True and seen["iou"].shape == (1, 3)
    assert r.score == pytest.approx(seen["iou"].max().item())
    seg.refine(image, points=[(120, 130), (10, 10)], labels=[1, 0])
    assert seen["multimask"] is False and seen["iou"].shape == (1, 1)


def test_refine_bad_inputs(seg):
    image = photo()
    with pytest.raises(SegmenterError, match="2 points but 1 labels"):
        seg.refine(image, points=[(1, 1), (2, 2)], labels=[1])
    with pytest.raises(SegmenterError, match="outside the 400x300 image"):
        seg.refine(image, points=[(500, 10)], labels=[1])
    with pytest.raises(SegmenterError, match="must be 1"):
        seg.refine(image, points=[(5, 5)], labels=[2])
    with pytest.raises(SegmenterError, match="at least one point or a box"):
        seg.refine(image, points=[], labels=[])
    with pytest.raises(SegmenterError, match="previous mask is"):
        seg.refine(image, points=[(5, 5)], labels=[1], mask=np.zeros((10, 10), bool))


def test_add_masks_fills_detections(seg):
    dets = sv.Detections(xyxy=np.array([[10, 10, 100, 120], [50, 60, 300, 290]], dtype=np.float32),
                         confidence=np.array([0.9, 0.8], dtype=np.float32), class_id=np.array([0, 1]),
                         data={"class_name": np.array(["cat", "dog"], dtype=object)})
    out = seg.add_masks(photo(), dets)
    assert out.mask.shape == (2, 300, 400) and dets.mask is None  # the input is not modified
    assert list(out.data["class_name"]) == ["cat", "dog"] and out.data["mask_score"].shape == (2,)


@pytest.mark.parametrize("bad", [None, [[1, 2, 3, 4]], np.zeros((1, 4)), "boxes"])
def test_add_masks_refuses_what_is_not_detections(seg, bad):
    with pytest.raises(SegmenterError, match="supervision.Detections"):
        seg.add_masks(photo(), bad)


def test_exif_rotated_image_gives_masks_in_the_upright_frame(seg, tmp_path):
    stored = photo(200, 320, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    path = tmp_path / "rotated.png"
    Image.fromarray(stored).save(path, exif=exif)
    upright = np.ascontiguousarray(np.rot90(stored, k=-1))  # (320, 200): what a viewer shows
    box = [[10, 10, 150, 250]]
    from_file = seg.segment(path, box)
    assert from_file.masks.shape == (1, 320, 200)
    assert np.array_equal(from_file.masks, seg.segment(upright, box).masks)  # the same pixels, the same masks


@pytest.mark.parametrize("h, w", [(8, 8), (8, 501), (501, 8), (37, 613), (613, 37), (333, 334)])
def test_odd_and_tiny_sizes_give_masks_of_the_image(seg, h, w):
    image = photo(h, w, seed=h + w)
    result = seg.segment(image, [[0, 0, w, h], [w * 0.25, h * 0.25, w * 0.75, h * 0.75]])
    assert result.masks.shape == (2, h, w) and result.masks.dtype == bool and np.isfinite(result.scores).all()
    r = seg.refine(image, points=[(w - 1, h - 1), (0, 0)], labels=[1, 0])  # the far corners are inside the image
    assert r.mask.shape == (h, w)
    r2 = seg.refine(image, points=[(w / 2, h / 2)], labels=[1], mask=r.mask)  # a full-size mask as the prompt
    assert r2.mask.shape == (h, w)
    assert seg.encoder_calls == 1


def test_images_below_the_minimum_size_are_refused(seg):
    for shape in [(1, 1, 3), (3, 500, 3), (500, 3, 3)]:
        with pytest.raises(ImageError, match="at least 8 px"):
            seg.segment(np.zeros(shape, np.uint8), [[0, 0, 1, 1]])
    assert seg.encoder_calls == 0


def test_a_50_megapixel_image_gives_full_size_masks(seg):
    h, w = 6250, 8000  # 50 MP, the largest image gdino takes
    image = np.broadcast_to((np.arange(w, dtype=np.uint16) % 251).astype(np.uint8)[None, :, None], (h, w, 3))
    result = seg.segment(image, [[1000, 500, 7000, 6000]])
    assert result.masks.shape == (1, h, w) and seg.encoder_calls == 1
    r = seg.refine(image, points=[(4000, 3000)], labels=[1], mask=result.masks[0])
    assert r.mask.shape == (h, w)


def test_checkpoint_errors(tmp_path, monkeypatch):
    with pytest.raises(SegmenterError, match="unknown SAM model 'vit_x'"):
        Segmenter.from_pretrained("vit_x", device="cpu")
    with pytest.raises(SegmenterError, match="SAM checkpoint not found"):
        Segmenter.from_pretrained(tmp_path / "nope.pth", device="cpu")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(SegmenterError, match="corrupt or truncated"):
        Segmenter.from_pretrained(corrupt, device="cpu")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(SegmenterError, match="not a SAM checkpoint"):
        Segmenter.from_pretrained(other, device="cpu")

    def offline(url, dst, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(segment_module.torch.hub, "download_url_to_file", offline)
    with pytest.raises(SegmenterError, match=r"could not download the SAM checkpoint sam_vit_b_01ec64\.pth.*pass its path"):
        Segmenter.from_pretrained("vit_b", device="cpu", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-written left behind


def test_download_is_verified(tmp_path, monkeypatch):
    def fake_download(url, dst, **kwargs):
        with open(dst, "wb") as f:
            f.write(b"not the real weights")

    monkeypatch.setattr(segment_module.torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(SegmenterError, match="damaged"):
        Segmenter.from_pretrained("vit_b", device="cpu", cache_dir=tmp_path)
    assert not list(tmp_path.glob("*"))
    assert SAM_CHECKPOINTS["vit_b"].url.endswith("/segment_anything/sam_vit_b_01ec64.pth")


# ------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("boxes, message", [
    (None, "boxes must be"),
    ("10 10 20 20", "boxes must be"),
    ([10, 10, 20, 20], r"\(N, 4\)"),  # one box needs its own brackets
    ([[10, 10, 20]], r"\(N, 4\)"),
    (np.zeros((4, 3)), r"\(N, 4\)"),  # 12 numbers: once silently read as three boxes
    (np.zeros((2, 2, 4)), r"\(N, 4\)"),
    ([[10, 10, 20, 20], [1, 2]], "boxes must be"),
    ([["a", "b", "c", "d"]], "boxes must be"),
    ([[0, 0, float("nan"), 10]], "finite"),
    ([[0, 0, float("inf"), 10]], "finite"),
])
def test_bad_boxes_are_refused(seg, boxes, message):
    with pytest.raises(SegmenterError, match=message):
        seg.segment(photo(), boxes)
    assert issubclass(SegmenterError, ValueError) and seg.encoder_calls == 0


def test_empty_box_lists_are_accepted(seg):
    for empty in ([], (), np.zeros((0, 4)), np.zeros((0,))):
        assert seg.segment(photo(), empty).masks.shape == (0, 300, 400)


@pytest.mark.parametrize("kwargs, message", [
    (dict(points=None, labels=[1]), "points must be"),
    (dict(points=[(5, 5)], labels=None), "labels must be a list"),
    (dict(points=(5, 5), labels=[1]), r"\(N, 2\)"),  # one point needs its own brackets
    (dict(points=[(5, 5, 5)], labels=[1]), r"\(N, 2\)"),
    (dict(points=np.zeros((2, 3)), labels=[1, 1, 1]), r"\(N, 2\)"),  # 6 numbers: once read as three points
    (dict(points=[("a", "b")], labels=[1]), "points must be"),
    (dict(points=[(float("nan"), 5)], labels=[1]), "finite"),
    (dict(points=[(5, 5)], labels=[[1]]), "labels must be a list"),
    (dict(points=[(5, 5)], labels=[0.5]), "must be 1"),
    (dict(points=[(5, 5)], labels=["1"]), "must be 1"),
    (dict(points=[(5, 5)], labels=[float("nan")]), "must be 1"),
    (dict(points=[(5, 5), (6, 6)], labels=[1]), "2 points but 1 labels"),
    (dict(points=[(5, 5)], labels=[1], box=[1, 2, 3]), "box must be"),
    (dict(points=[(5, 5)], labels=[1], box=[[1, 2, 30, 40], [1, 2, 30, 40]]), "box must be"),
    (dict(points=[(5, 5)], labels=[1], box=[1, 2, float("nan"), 40]), "box must be"),
    (dict(points=[(5, 5)], labels=[1], box="1 2 30 40"), "box must be"),
])
def test_bad_refine_inputs_are_refused(seg, kwargs, message):
    with pytest.raises(SegmenterError, match=message):
        seg.refine(photo(), **kwargs)
    assert seg.encoder_calls == 0


def test_refine_takes_numpy_inputs_and_boolean_labels(seg):
    image = photo(seed=4)
    plain = seg.refine(image, points=[(100, 100), (150, 60)], labels=[1, 0], box=[40, 40, 200, 200])
    same = seg.refine(image, points=np.array([[100.0, 100.0], [150.0, 60.0]], dtype=np.float32),
                      labels=np.array([True, False]), box=np.array([[40, 40, 200, 200]]))
    assert np.array_equal(plain.mask, same.mask) and plain.score == same.score


def test_segmenter_settings_are_checked(sam_path):  # SAM 1's module; the checks are the Segmenter's own
    sam = Segmenter.from_pretrained(sam_path, device="cpu").sam
    assert Segmenter(sam, cache_size=np.int64(1), max_pixels=np.int64(10**6)).cache_size == 1
    for kwargs, message in [(dict(cache_size=-1), "cache_size must be an integer >= 0"),
                            (dict(cache_size=1.5), "cache_size must be an integer >= 0"),
                            (dict(max_pixels=None), "max_pixels must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            Segmenter(sam, **kwargs)
