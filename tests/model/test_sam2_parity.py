"""Parity of gdino's Segmenter on SAM 2.1 (tiny and large, random full-size weights, every tensor perturbed) with
the sam2 package's own SAM2ImagePredictor on the same .pt, and with transformers' Sam2Model called directly on the
same weights in the hub layout; EdgeTAM with transformers' EdgeTamModel. Box, several boxes in one call, and a
chain of three clicks passing the mask logits back: mask IoU >= 0.999, low-res logits within 1e-3.

One embedding per model per size (module fixtures); an odd-sized image once more on tiny. Run time on this
2-core machine: 85 s (4 minutes while other jobs ran), mostly large's setup: writing and loading four copies of
224 M parameters and three 1024 x 1024 encodings.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sam2_models import hub_folder_from_pt, random_edgetam_folder, write_official_pt
from sam_parity import check_mask, record_decodes

from gdino.sam.catalog import load_backend
from gdino.sam.segmenter import Segmenter

H, W = 480, 640
BOX = [70.0, 90.0, 420.0, 400.0]
BOXES = [[10.0, 20.0, 200.0, 180.0], [150.0, 60.0, 600.0, 470.0], [300.0, 10.0, 630.0, 200.0]]
CLICKS = [(250.0, 240.0), (120.0, 330.0), (480.0, 150.0)]
CLICK_LABELS = [1, 0, 1]
SEEN: dict[str, list[float]] = {"logit diff": [], "iou": []}  # the numbers this file saw, printed at its end


@pytest.fixture(scope="module", autouse=True)
def report_numbers():
    """After the file: the worst numbers its checks saw (shown with pytest -s)."""
    yield
    if SEEN["iou"]:
        print(f"\nSAM 2.1 / EdgeTAM parity: {len(SEEN['iou'])} checks, min mask IoU {min(SEEN['iou']):.6f}, "
              f"max low-res logit difference {max(SEEN['logit diff']):.2e}")


def photo(seed: int = 0) -> np.ndarray:
    """A (H, W, 3) uint8 image with large regions (blocks of colour plus noise), so masks have structure."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (6, 8, 3)).astype(np.float64)
    image = np.kron(blocks, np.ones((H // 6, W // 8, 1))) + rng.normal(0, 12, (H, W, 3))
    return image.clip(0, 255).astype(np.uint8)


def check(ours_mask, ours_logits, ref_mask, ref_logits, what: str) -> None:
    """Mask IoU >= 0.999, low-res logits within 1e-3 (tests/support/sam_parity.py), recorded for the file's report."""
    check_mask(ours_mask, ours_logits, ref_mask, ref_logits, what, seen=SEEN)


class HfOracle:
    """transformers' model called directly: its own embedding call, prompt tensors and mask post-processing."""

    def __init__(self, model, pixel_values: torch.Tensor):
        from transformers import Sam2ImageProcessor

        self.model = model.eval()
        self.post = Sam2ImageProcessor()
        with torch.no_grad():
            self.embeddings = model.get_image_embeddings(pixel_values)

    @staticmethod
    def frame(xy) -> torch.Tensor:  # pixels -> the stretched 1024 frame, written out here (not gdino's to_frame)
        xy = torch.tensor(xy, dtype=torch.float32)
        return (xy.reshape(-1, 2) * torch.tensor([1024 / W, 1024 / H])).reshape(xy.shape)

    def __call__(self, multimask: bool, **prompts):
        with torch.no_grad():
            out = self.model(image_embeddings=self.embeddings, multimask_output=multimask, **prompts)
        masks = self.post.post_process_masks(out.pred_masks, [(H, W)])[0]  # (objects, K, H, W)
        return masks.numpy(), out.pred_masks[0].numpy(), out.iou_scores[0].numpy()


@pytest.fixture(scope="module", params=["tiny", "large"])
def sam21(request, tmp_path_factory):
    """One size: the .pt, its hub folder, the sam2 predictor (image set), our Segmenter (image embedded) and
    transformers' oracle (image embedded), on one photo."""
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from transformers import Sam2Model

    size = request.param
    tmp = tmp_path_factory.mktemp(f"sam21_{size}")
    pt = write_official_pt(size, tmp / f"sam2.1_hiera_{size}.pt", seed=1)
    folder = hub_folder_from_pt(pt, tmp / "hub")
    image = photo()
    config = {"tiny": "t", "large": "l"}[size]
    predictor = SAM2ImagePredictor(build_sam2(f"configs/sam2.1/sam2.1_hiera_{config}.yaml", str(pt), device="cpu"))
    predictor.set_image(image)
    seg = Segmenter(load_backend(pt, device="cpu"))
    seg.embed(image)
    oracle = HfOracle(Sam2Model.from_pretrained(folder), predictor._transforms(image)[None])
    yield dict(size=size, pt=pt, folder=folder, image=image, predictor=predictor, seg=seg, oracle=oracle)


def test_box(sam21, monkeypatch):
    seg, image = sam21["seg"], sam21["image"]
    calls = record_decodes(seg, monkeypatch)
    ours = seg.segment(image, [BOX])
    masks, scores, low_res = sam21["predictor"].predict(box=np.array(BOX), multimask_output=False)
    check(ours.masks[0], calls[0][0][0, 0], masks[0], low_res[0], f"{sam21['size']} box vs sam2")
    assert ours.scores[0] == pytest.approx(scores[0], abs=1e-4)
    hf_masks, hf_low, hf_iou = sam21["oracle"](False, input_boxes=HfOracle.frame([BOX])[None])
    check(ours.masks[0], calls[0][0][0, 0], hf_masks[0, 0], hf_low[0, 0], f"{sam21['size']} box vs transformers")
    assert ours.scores[0] == pytest.approx(hf_iou[0, 0], abs=1e-4)
    assert seg.encoder_calls == 1  # the one embedding of the fixture


def test_several_boxes_in_one_call(sam21, monkeypatch):
    seg, image = sam21["seg"], sam21["image"]
    calls = record_decodes(seg, monkeypatch)
    ours = seg.segment(image, BOXES)
    assert len(calls) == 1  # one decoder call for all boxes
    masks, scores, low_res = sam21["predictor"].predict(box=np.array(BOXES), multimask_output=False)
    hf_masks, hf_low, hf_iou = sam21["oracle"](False, input_boxes=HfOracle.frame(BOXES)[None])
    for i in range(len(BOXES)):
        check(ours.masks[i], calls[0][0][i, 0], masks[i, 0], low_res[i, 0], f"{sam21['size']} box {i} vs sam2")
        check(ours.masks[i], calls[0][0][i, 0], hf_masks[i, 0], hf_low[i, 0], f"{sam21['size']} box {i} vs transformers")
    np.testing.assert_allclose(ours.scores, scores[:, 0], atol=1e-4)
    np.testing.assert_allclose(ours.scores, hf_iou[:, 0], atol=1e-4)


def test_three_clicks_passing_the_logits_back(sam21):
    seg, image, predictor, oracle = sam21["seg"], sam21["image"], sam21["predictor"], sam21["oracle"]
    ours_logits = ref_logits = hf_logits = None
    for n in (1, 2, 3):
        points, labels = CLICKS[:n], CLICK_LABELS[:n]
        ours = seg.refine(image, points=points, labels=labels, mask=ours_logits)
        # the sam2 predictor as its notebook uses it: 3 masks for one click, the best kept; one mask after
        masks, scores, low_res = predictor.predict(point_coords=np.array(points), point_labels=np.array(labels),
                                                   mask_input=ref_logits, multimask_output=n == 1)
        best = int(np.argmax(scores))
        check(ours.mask, ours.logits[0], masks[best], low_res[best], f"{sam21['size']} click {n} vs sam2")
        assert ours.score == pytest.approx(scores[best], abs=1e-4)
        ours_logits, ref_logits = ours.logits, low_res[best][None]
        prompts = dict(input_points=HfOracle.frame(points)[None, None], input_labels=torch.tensor([[labels]]))
        if hf_logits is not None:
            prompts["input_masks"] = torch.as_tensor(hf_logits).clamp(-32, 32)[None, None]
        hf_masks, hf_low, hf_iou = oracle(n == 1, **prompts)
        hf_best = int(np.argmax(hf_iou[0]))
        check(ours.mask, ours.logits[0], hf_masks[0, hf_best], hf_low[0, hf_best],
              f"{sam21['size']} click {n} vs transformers")
        hf_logits = hf_low[0, hf_best]
    assert seg.encoder_calls == 1


def test_the_hub_folder_loads_the_same_model_as_the_pt(sam21):
    from_pt = sam21["seg"].backend
    from_hub = load_backend(sam21["folder"], device="cpu")
    assert from_hub.identity == from_pt.identity  # embeddings of one are valid for the other
    for (name, a), (_, b) in zip(from_pt.model.state_dict().items(), from_hub.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    if sam21["size"] == "tiny":  # the whole path once more (large: its tensors are equal, shown above)
        seg = Segmenter(from_hub)
        assert np.array_equal(seg.segment(sam21["image"], BOXES).masks, sam21["seg"].segment(sam21["image"], BOXES).masks)


@pytest.mark.parametrize("sam21", ["tiny"], indirect=True)  # the geometry is the same for every size
def test_an_odd_size_matches_the_sam2_predictor(sam21):
    """A frame stretched far from square the other way than the photo's: the same masks as the sam2 predictor
    for a box, a click with the last logits, and clicks with the box, in the image's pixels."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    h, w = 333, 77
    image = np.ascontiguousarray(photo(2)[:h, :w])
    predictor = SAM2ImagePredictor(sam21["predictor"].model)
    predictor.set_image(image)
    seg = Segmenter(sam21["seg"].backend)
    box = [w * 0.1, h * 0.2, w * 0.8, h * 0.9]
    ours = seg.refine(image, points=[], labels=[], box=box)
    masks, scores, low_res = predictor.predict(box=np.array(box), multimask_output=False)
    assert ours.mask.shape == (h, w)
    check(ours.mask, ours.logits[0], masks[0], low_res[0], f"{h}x{w} box")
    click = [(w * 0.3, h * 0.6)]
    ours = seg.refine(image, points=click, labels=[1], mask=ours.logits)
    masks, scores, low_res = predictor.predict(point_coords=np.array(click), point_labels=np.array([1]),
                                               mask_input=low_res, multimask_output=False)
    check(ours.mask, ours.logits[0], masks[0], low_res[0], f"{h}x{w} click after a box")
    clicks = [click[0], (w * 0.7, h * 0.3)]  # clicks and the box together: corners first, then the clicks
    ours = seg.refine(image, points=clicks, labels=[1, 0], box=box, mask=ours.logits)
    masks, scores, low_res = predictor.predict(point_coords=np.array(clicks), point_labels=np.array([1, 0]),
                                               box=np.array(box), mask_input=low_res, multimask_output=False)
    check(ours.mask, ours.logits[0], masks[0], low_res[0], f"{h}x{w} clicks with the box")


# ------------------------------------------------------------------------------------------ EdgeTAM

@pytest.fixture(scope="module")
def edgetam(tmp_path_factory):
    from sam2.utils.transforms import SAM2Transforms
    from transformers import EdgeTamModel

    folder = random_edgetam_folder(tmp_path_factory.mktemp("edgetam"), seed=2)
    image = photo(1)
    seg = Segmenter(load_backend(folder, device="cpu"))
    seg.embed(image)
    # EdgeTAM's repository is the sam2 code base: the same image transforms (float first, then resize)
    pixels = SAM2Transforms(resolution=1024, mask_threshold=0.0)(image)[None]
    return dict(image=image, seg=seg, oracle=HfOracle(EdgeTamModel.from_pretrained(folder), pixels))


def test_edgetam_matches_transformers(edgetam, monkeypatch):
    seg, image, oracle = edgetam["seg"], edgetam["image"], edgetam["oracle"]
    assert seg.backend.identity.startswith("edgetam:")
    calls = record_decodes(seg, monkeypatch)
    ours = seg.segment(image, BOXES)
    hf_masks, hf_low, hf_iou = oracle(False, input_boxes=HfOracle.frame(BOXES)[None])
    for i in range(len(BOXES)):
        check(ours.masks[i], calls[0][0][i, 0], hf_masks[i, 0], hf_low[i, 0], f"edgetam box {i}")
    np.testing.assert_allclose(ours.scores, hf_iou[:, 0], atol=1e-4)
    ours_logits = hf_logits = None
    for n in (1, 2, 3):
        points, labels = CLICKS[:n], CLICK_LABELS[:n]
        ours = seg.refine(image, points=points, labels=labels, mask=ours_logits)
        prompts = dict(input_points=HfOracle.frame(points)[None, None], input_labels=torch.tensor([[labels]]))
        if hf_logits is not None:
            prompts["input_masks"] = torch.as_tensor(hf_logits).clamp(-32, 32)[None, None]
        hf_masks, hf_low, hf_iou = oracle(n == 1, **prompts)
        best = int(np.argmax(hf_iou[0]))
        check(ours.mask, ours.logits[0], hf_masks[0, best], hf_low[0, best], f"edgetam click {n}")
        ours_logits, hf_logits = ours.logits, hf_low[0, best]
    assert seg.encoder_calls == 1


def test_upscale_is_bilinear_to_the_image(edgetam):
    """The low-res logits of a mask -> its pixels: bilinear, align_corners=False, straight to (H, W), as the sam2
    predictor and transformers' post-processing both do."""
    seg, image = edgetam["seg"], edgetam["image"]
    r = seg.refine(image, points=[CLICKS[0]], labels=[1], box=BOX)
    expected = F.interpolate(torch.as_tensor(r.logits)[None], size=(H, W), mode="bilinear", align_corners=False)[0, 0] > 0
    assert np.array_equal(r.mask, expected.numpy())
