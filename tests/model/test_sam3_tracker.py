"""SAM 3 as a mask stage (`--sam sam3`, gdino.sam.sam3) on small random models: loading facebook/sam3's folder layout
strictly (every tensor from where the published file keeps it), the hole filling of the official predictor, the
refusals. Parity with the official predictor on full-size weights: tests/model/test_sam3_parity.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam3_models import save_tiny_sam3, save_tiny_sam3_video, tiny_sam3_video_model

from gdino.sam.catalog import load_backend
from gdino.sam.prompts import SegmenterError
from gdino.sam.sam3 import MAX_HOLE_AREA, Sam3TrackerBackend, fill_holes
from gdino.sam.segmenter import Segmenter


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    return save_tiny_sam3_video(tmp_path_factory.mktemp("sam3_video") / "sam3", seed=3)


def _source_of(name: str) -> str:
    """Our tracker's tensor name -> where the published sam3_video file keeps it (written out here)."""
    if name.startswith("vision_encoder.backbone."):
        return "detector_model." + name
    if name.startswith("vision_encoder.neck."):
        return "tracker_neck." + name[len("vision_encoder.neck."):]
    return "tracker_model." + name


@pytest.mark.parametrize("how", ["hub", "save_pretrained"])
def test_a_sam3_folder_loads_every_tensor_from_its_place(tmp_path, how):
    folder = save_tiny_sam3_video(tmp_path / "sam3", seed=3, how=how)
    backend = load_backend(folder, device="cpu")
    assert isinstance(backend, Sam3TrackerBackend) and backend.identity.startswith("sam3:")
    source = tiny_sam3_video_model(seed=3).state_dict()
    ours = backend.model.state_dict()
    assert len(ours) > 100
    for name, tensor in ours.items():
        assert torch.equal(tensor, source[_source_of(name)]), name
    # the ViT is the detector's: the same tensors the SAM 3 detector loads
    assert torch.equal(ours["vision_encoder.backbone.embeddings.patch_embeddings.projection.weight"],
                       source["detector_model.vision_encoder.backbone.embeddings.patch_embeddings.projection.weight"])


def test_boxes_and_clicks_give_masks_of_the_picture(video_folder):
    seg = Segmenter(load_backend(video_folder, device="cpu"))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)
    masks = seg.segment(image, [[10, 10, 60, 70], [50, 20, 120, 80]])
    assert masks.masks.shape == (2, 90, 130) and masks.scores.shape == (2,)
    refined = seg.refine(image, points=[(30, 40)], labels=[1])
    assert refined.mask.shape == (90, 130) and refined.logits.shape == (1, 64, 64)  # 4 x the 16 x 16 grid
    again = seg.refine(image, points=[(30, 40), (100, 50)], labels=[1, 0], mask=refined.logits)
    assert again.mask.shape == (90, 130)
    assert seg.encoder_calls == 1


def test_hole_filling_fills_small_background_regions_only():
    logits = torch.full((1, 1, 64, 64), 5.0)
    logits[0, 0, 10:13, 10:13] = -3.0  # a 9-pixel hole: filled
    logits[0, 0, 30:50, 30:50] = -3.0  # 400 pixels: kept
    logits[0, 0, 20, 40] = logits[0, 0, 21, 41] = -3.0  # two pixels touching at a corner: one 2-pixel region (8-connected)
    out = fill_holes(logits, MAX_HOLE_AREA)
    assert (out[0, 0, 10:13, 10:13] == 10.0).all()
    assert (out[0, 0, 30:50, 30:50] == -3.0).all()
    assert out[0, 0, 20, 40] == out[0, 0, 21, 41] == 10.0
    assert torch.equal(out[logits > 0], logits[logits > 0])  # the foreground is left as it was
    background = torch.full((1, 1, 64, 64), -1.0)  # all background: one region of 4096, kept
    assert torch.equal(fill_holes(background, MAX_HOLE_AREA), background)


def test_an_image_only_sam3_folder_is_refused_saying_what_is_needed(tmp_path):
    folder = save_tiny_sam3(tmp_path / "detector_only")
    with pytest.raises(SegmenterError, match="image detector only.*sam3_video.*sam3.pt"):
        load_backend(folder, device="cpu")


def test_a_standalone_tracker_folder_is_refused_saying_what_to_pass(tmp_path):
    import json

    folder = tmp_path / "tracker"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "sam3_tracker"}))
    with pytest.raises(SegmenterError, match="stand-alone SAM 3 tracker.*facebook/sam3 folder.*sam3.pt"):
        load_backend(folder, device="cpu")


def test_a_sam3_checkpoint_without_its_tracker_is_refused(tmp_path):
    path = tmp_path / "sam3.pt"
    torch.save({"model": {"detector.backbone.vision_backbone.trunk.pos_embed": torch.zeros(1, 577, 8)}}, path)
    with pytest.raises(SegmenterError, match="without its interactive"):
        load_backend(path, device="cpu")


def test_a_folder_with_a_missing_tracker_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_tiny_sam3_video(tmp_path / "sam3", seed=1)
    state = load_file(str(folder / "model.safetensors"))
    del state["tracker_model.mask_decoder.iou_token.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(SegmenterError, match=r"(?s)1 missing.*mask_decoder\.iou_token\.weight"):
        load_backend(folder, device="cpu")


def test_sam3_offline_says_it_is_gated_and_how_to_pass_a_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)  # huggingface_hub read the variables at its import
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(SegmenterError) as err:
        load_backend("sam3", device="cpu")
    text = str(err.value)
    assert "gated" in text and "hf download facebook/sam3" in text and "--sam FOLDER" in text
    assert "LocalEntryNotFoundError" in text  # offline: the cache was asked, not the network
    assert "Traceback" not in text
