"""The published MM-Grounding-DINO tiny (o365v1_goldg_v3det) against transformers' own integration values.

Runs only where the weights are already in the Hugging Face cache and the COCO val2017 image 000000039769 (two cats
on a couch) is on disk: it downloads nothing and generates nothing, and says which of the two is missing.
The values are transformers' MMGroundingDinoModelIntegrationTests.test_inference_object_detection_head
(tests/models/mm_grounding_dino/test_modeling_mm_grounding_dino.py), prompt "a cat.".
"""

import os
from pathlib import Path

import pytest
import torch

import gdino
from gdino.processing import preprocess_images, tokenize

REPO = "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"
IMAGE_ENV = "GDINO_COCO_000000039769"  # path to COCO val2017 000000039769 (.jpg, or transformers' fixture .png)
IMAGE_CANDIDATES = [
    Path(__file__).parent / "data" / "000000039769.png",
    Path(__file__).parent / "data" / "000000039769.jpg",
    Path("~/.cache/gdino/000000039769.jpg").expanduser(),
]

EXPECTED_LOGITS = torch.tensor([[-5.1160, -0.2143, -0.2089], [-5.0592, -0.4269, -0.4169], [-4.9087, -1.7608, -1.7372]])
EXPECTED_BOXES = torch.tensor([[0.7666, 0.4142, 0.4590], [0.2557, 0.5480, 0.4812], [0.5049, 0.5133, 0.9767]])
EXPECTED_SCORES = torch.tensor([0.4480, 0.3973])  # max token sigmoid > 0.35, in query order
EXPECTED_FIRST_BOX = torch.tensor([343.7321, 23.8182, 637.5044, 373.8593])  # xyxy pixels of the 640x480 image


def cached_model_dir() -> tuple[Path | None, str]:
    """(the snapshot directory, or None and why not)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    found = {f: try_to_load_from_cache(REPO, f) for f in ("config.json", "model.safetensors")}
    missing = [f for f, p in found.items() if not isinstance(p, str)]
    if missing:
        return None, (f"{REPO} is not in the Hugging Face cache ({HF_HUB_CACHE}: no {', '.join(missing)}); where the "
                      f"hub is reachable: `hf download {REPO}`")
    return Path(found["config.json"]).parent, ""


def image_path() -> tuple[Path | None, str]:
    candidates = ([Path(os.environ[IMAGE_ENV])] if os.environ.get(IMAGE_ENV) else []) + IMAGE_CANDIDATES
    for path in candidates:
        if path.is_file():
            return path, ""
    return None, (f"COCO val2017 image 000000039769 is not on disk (set {IMAGE_ENV}, or put it at "
                  f"{IMAGE_CANDIDATES[0]}): http://images.cocodataset.org/val2017/000000039769.jpg, or transformers' "
                  "tests/fixtures/tests_samples/COCO/000000039769.png")


def test_tiny_o365v1_goldg_v3det_matches_transformers_published_values():
    (image, no_image), (directory, no_model) = image_path(), cached_model_dir()
    if image is None or directory is None:
        pytest.skip("offline, this test downloads and generates nothing: " + "; ".join(r for r in (no_model, no_image) if r))
    model = gdino.load_model(directory)
    assert model.config.family == "mm_gdino"
    batch = preprocess_images([image])
    enc = tokenize(model.tokenizer, "a cat.")
    with torch.no_grad():
        out = model(batch.pixel_values, **enc, pixel_mask=batch.pixel_mask)
    assert out.logits.shape == (1, 900, 256)
    # transformers' tolerances are 1e-3 (logits) and 1e-4 (boxes) for its own code; ours rounds differently in
    # float32 (up to ~1e-4 at full size, tests/model/test_mm_parity.py), hence 2e-4 on the boxes
    torch.testing.assert_close(out.logits[0, :3, :3], EXPECTED_LOGITS, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out.pred_boxes[0, :3, :3], EXPECTED_BOXES, rtol=1e-4, atol=2e-4)
    scores = out.logits[0].sigmoid().max(-1).values
    keep = scores > 0.35
    torch.testing.assert_close(scores[keep], EXPECTED_SCORES, rtol=1e-3, atol=1e-3)
    h, w = batch.original_sizes[0]
    cx, cy, bw, bh = out.pred_boxes[0, keep][0].unbind(-1)
    first = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]) * torch.tensor([w, h, w, h])
    torch.testing.assert_close(first, EXPECTED_FIRST_BOX, rtol=1e-2, atol=1e-2)
