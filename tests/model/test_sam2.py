"""Loading SAM 2.1 and EdgeTAM (names, hub cache, folders, the sam2 repository's .pt files), strictly, with the
size read from the tensors; the refusals users see; the Sam2Backend's coordinate spaces. The Segmenter's
geometry on these backends: test_segment.py; numbers against the sam2 package and transformers:
test_sam2_parity.py. Run time on 2 CPU cores: about 1 minute (one random full-size tiny .pt)."""

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sam2_models import (
    CONFIGS,
    convert_keys,
    official_on_meta,
    random_edgetam_folder,
    small_sam2_folder,
    transformers_config,
    write_official_pt,
)

from gdino.sam.catalog import HUB_REPOS, load_backend
from gdino.sam.prompts import SegmenterError
from gdino.sam.sam2 import Sam2Backend, from_official_state
from gdino.sam.sam2_keymap import official_to_transformers, read_size
from gdino.sam.segmenter import Segmenter


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return small_sam2_folder(tmp_path_factory.mktemp("small") / "sam2-small-random", seed=3)


@pytest.fixture(scope="module")
def edgetam_folder(tmp_path_factory):
    return random_edgetam_folder(tmp_path_factory.mktemp("edgetam") / "edgetam-random", seed=4, small=True)


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory):
    return write_official_pt("tiny", tmp_path_factory.mktemp("pt") / "sam2.1_hiera_tiny.pt", seed=5)


@pytest.fixture(scope="module")
def tiny_state(tiny_pt):
    return torch.load(tiny_pt, map_location="cpu", weights_only=True)["model"]


def copy_folder(folder, dst, edit=None):
    """A copy of a hub-layout folder, its tensors changed by edit(state) -> state."""
    shutil.copytree(folder, dst)
    if edit is not None:
        save_file(edit(load_file(str(dst / "model.safetensors"))), str(dst / "model.safetensors"))
    return dst


# ------------------------------------------------------------------------------------------ folders

def test_a_folder_loads_with_its_family_and_name(small_folder, edgetam_folder):
    sam2 = load_backend(small_folder, device="cpu")
    assert isinstance(sam2, Sam2Backend) and sam2.name == "sam2-small-random"
    assert sam2.identity.startswith("sam2:") and sam2.low_res_side == 256 and sam2.mask_threshold == 0.0
    assert type(sam2.model).__name__ == "Sam2Model"
    edgetam = load_backend(edgetam_folder, device="cpu")
    assert edgetam.identity.startswith("edgetam:") and type(edgetam.model).__name__ == "EdgeTamModel"
    emb = edgetam.embed(np.zeros((30, 50, 3), np.uint8))
    assert {k: tuple(v.shape) for k, v in emb.features.items()} == {
        "s0": (1, 8, 256, 256), "s1": (1, 16, 128, 128), "image": (1, 64, 64, 64)}  # the small decoder is 64 wide
    assert emb.input_size == (1024, 1024) and emb.original_size == (30, 50)
    again = load_backend(small_folder, device="cpu")
    assert again.identity == sam2.identity  # the same weights: embeddings are interchangeable


def test_a_folder_must_fit_the_model_exactly(small_folder, tmp_path):
    def drop_and_add(state):
        del state["mask_decoder.iou_token.weight"]
        state["mask_decoder.extra_head.weight"] = torch.zeros(3)
        return state

    bad = copy_folder(small_folder, tmp_path / "bad", drop_and_add)
    with pytest.raises(SegmenterError, match=r"1 missing, 1 unexpected(.|\n)*missing: mask_decoder\.iou_token\.weight"
                                             r"(.|\n)*unexpected: mask_decoder\.extra_head\.weight"):
        load_backend(bad, device="cpu")

    def reshape(state):
        state["mask_decoder.iou_token.weight"] = torch.zeros(1, 7)
        return state

    with pytest.raises(SegmenterError, match=r"wrong shape: mask_decoder\.iou_token\.weight: file \(1, 7\)"):
        load_backend(copy_folder(small_folder, tmp_path / "shape", reshape), device="cpu")


def test_the_image_wide_copy_of_the_positional_matrix_may_be_left_out(small_folder, tmp_path):
    def drop(state):
        del state["shared_image_embedding.positional_embedding"]
        return state

    full = load_backend(small_folder, device="cpu")
    lean = load_backend(copy_folder(small_folder, tmp_path / "lean", drop), device="cpu")
    assert lean.identity == full.identity  # filled from the prompt encoder's copy: the same matrix


def test_folders_that_are_not_a_sam2_model_are_refused(small_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegmenterError, match="no readable config.json.*--sam FOLDER"):
        load_backend(tmp_path / "empty", device="cpu")
    sam1 = tmp_path / "sam1"
    sam1.mkdir()
    (sam1 / "config.json").write_text('{"model_type": "sam"}')
    with pytest.raises(SegmenterError, match="holds a 'sam' model, not SAM 2 / EdgeTAM"):
        load_backend(sam1, device="cpu")
    no_weights = copy_folder(small_folder, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(SegmenterError, match="has no weights"):
        load_backend(no_weights, device="cpu")
    torn = copy_folder(small_folder, tmp_path / "torn")
    data = (torn / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SegmenterError, match="corrupt or truncated"):
        load_backend(torn, device="cpu")


# --------------------------------------------------------------------------------- names, the hub cache

@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty huggingface_hub cache for this test (this machine has no network)."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("name", ["sam2.1-large", "edgetam"])
def test_a_name_not_in_the_cache_fails_fast_with_the_offline_message(hub_cache, name):
    import time

    start = time.monotonic()
    with pytest.raises(SegmenterError) as err:
        Segmenter.from_pretrained(name, device="cpu")
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert f"could not get the SAM model '{HUB_REPOS[name]}' from the Hugging Face Hub" in message
    assert f"`hf download {HUB_REPOS[name]}`" in message and "`--sam FOLDER`" in message
    assert "Traceback" not in message and "Segmenter" not in message


def test_a_name_in_the_cache_loads_without_network(hub_cache, small_folder):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / "models--facebook--sam2.1-hiera-tiny"  # huggingface_hub's cache layout
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(small_folder, repo / "snapshots" / revision)
    seg = Segmenter.from_pretrained("sam2.1-tiny", device="cpu")
    assert seg.name == "sam2.1-tiny" and seg.backend.identity == load_backend(small_folder, device="cpu").identity


# --------------------------------------------------------------------------------- the sam2 repository's .pt

def test_an_official_pt_loads_through_our_key_map(tiny_pt, tiny_state):
    backend = load_backend(tiny_pt, device="cpu")
    assert backend.name == "sam2.1_hiera_tiny.pt" and backend.identity.startswith("sam2:")
    expected = convert_keys(tiny_state)  # transformers' converter's rules (tests/support), not gdino's map
    loaded = backend.model.state_dict()
    assert set(loaded) == set(expected)
    for key, value in loaded.items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize("size", list(CONFIGS))
def test_the_size_is_read_from_the_tensors(size):
    """All four published sizes, built by the sam2 package (parameters on the meta device): the size, the
    config transformers' converter would write, and every tensor named and shaped as Sam2Model's."""
    from transformers import Sam2Model

    state = official_on_meta(size).state_dict()
    found, kwargs = read_size(state)
    assert found.name == size
    ours = kwargs["vision_config"]["backbone_config"]
    ref = transformers_config(size)
    for field, value in ours.items():
        assert list(np.atleast_1d(getattr(ref.vision_config.backbone_config, field))) == list(np.atleast_1d(value)), field
    assert kwargs["vision_config"]["backbone_channel_list"] == ref.vision_config.backbone_channel_list
    mapped, unknown = official_to_transformers(state)
    assert unknown == []
    with torch.device("meta"):
        model_state = Sam2Model(ref).state_dict()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in model_state.items()}


def test_a_pt_that_does_not_fit_is_refused_with_the_keys_named(tiny_state):
    state = dict(tiny_state)
    del state["sam_mask_decoder.conv_s0.weight"]
    state["sam_mask_decoder.extra.weight"] = torch.zeros(2)
    with pytest.raises(SegmenterError, match=r"does not fit the model \(1 missing, 1 unexpected(.|\n)*"
                                             r"missing: mask_decoder\.conv_s0\.weight(.|\n)*"
                                             r"unexpected: sam_mask_decoder\.extra\.weight"):
        from_official_state(state, device="cpu", name="edited.pt")
    state = dict(tiny_state)
    state["sam_prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 3)
    with pytest.raises(SegmenterError, match=r"wrong shape: prompt_encoder\.no_mask_embed\.weight"):
        from_official_state(state, device="cpu", name="edited.pt")


def test_video_tensors_are_dropped_and_nothing_else(tiny_state):
    image_only = {k: v for k, v in tiny_state.items() if not k.startswith(("memory_", "obj_ptr", "mask_downsample"))
                  and k not in ("maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial")}
    assert len(image_only) < len(tiny_state)
    a = from_official_state(tiny_state, device="cpu", name="full.pt")
    b = from_official_state(image_only, device="cpu", name="image-only.pt")
    assert a.identity == b.identity


def test_pts_of_other_models_are_refused_with_what_to_do(tiny_state, tmp_path):
    unknown_size = {k: v for k, v in tiny_state.items() if not k.startswith("image_encoder.trunk.blocks.11.")}
    with pytest.raises(SegmenterError, match=r"none of the published SAM 2 sizes.*tiny \(width 96, blocks \[1, 2, 7, 2\]\)"):
        from_official_state(unknown_size, device="cpu", name="custom.pt")
    edgetam = {"image_encoder.trunk.body.stem.0.weight": torch.zeros(1), **{k: v for k, v in tiny_state.items()
                                                                          if "trunk" not in k}}
    path = tmp_path / "edgetam.pt"
    torch.save({"model": edgetam}, path)
    with pytest.raises(SegmenterError, match="EdgeTAM's own checkpoint.*--sam edgetam"):
        load_backend(path, device="cpu")


# --------------------------------------------------------------------------------- coordinate spaces

def test_pixel_values_are_the_sam2_predictors(small_folder):
    """Float first, then resized (antialiased), then normalized: bit-equal to the sam2 package's transforms."""
    from sam2.utils.transforms import SAM2Transforms

    backend = load_backend(small_folder, device="cpu")
    for h, w in [(37, 613), (1500, 900), (8, 8)]:
        rgb = np.random.default_rng(h).integers(0, 255, (h, w, 3), dtype=np.uint8)
        expected = SAM2Transforms(resolution=1024, mask_threshold=0.0)(rgb)[None]
        assert torch.equal(backend.pixel_values(rgb), expected)


def test_frame_and_low_res_cover_the_whole_stretched_image(small_folder):
    backend = load_backend(small_folder, device="cpu")
    xy = backend.to_frame(np.array([[0, 0], [400, 300], [100, 150], [200, 30]]), (300, 400))
    np.testing.assert_allclose(xy, [[0, 0], [1024, 1024], [256, 512], [512, 102.4]])
    emb = backend.embed(np.zeros((300, 400, 3), np.uint8))
    half = torch.zeros(300, 400)
    half[:, :200] = 1  # the left half of the image -> the left half of the low-res grid
    prompt = backend.mask_prompt(half, emb)
    assert prompt.shape == (1, 1, 256, 256)
    assert (prompt[..., :128] == 20).all() and (prompt[..., 128:] == -20).all()
    logits = torch.full((2, 1, 256, 256), -5.0)
    logits[1, :, 64:192, 128:] = 5.0  # rows 1/4..3/4, right half
    up = backend.upscale(logits, emb)
    assert up.shape == (2, 1, 300, 400) and not (up[0] > 0).any()
    inside = up[1, 0] > 0
    assert inside[80:220, 205:].all() and not inside[:, :195].any() and not inside[:70].any()


@pytest.mark.parametrize("h, w", [(1, 1), (3, 500), (500, 3)])
def test_the_backend_itself_takes_images_of_any_size(small_folder, h, w):
    """Below the Segmenter's 8 px minimum too: the backend's geometry has no lower limit."""
    backend = load_backend(small_folder, device="cpu")
    emb = backend.embed(np.full((h, w, 3), 200, np.uint8))
    with torch.inference_mode():
        box = torch.tensor(backend.to_frame(np.array([[0, 0], [w, h]]), (h, w)).reshape(1, 4), dtype=torch.float32)
        low, iou = backend.decode(emb, points=None, labels=None, boxes=box, masks=None, multimask=False)
        assert low.shape == (1, 1, 256, 256) and iou.shape == (1, 1)
        assert backend.upscale(low, emb).shape == (1, 1, h, w)
        prompt = backend.mask_prompt(torch.ones(h, w), emb)
        again, _ = backend.decode(emb, points=box.reshape(1, 2, 2)[:, :1], labels=torch.ones(1, 1, dtype=torch.long),
                                  boxes=None, masks=prompt, multimask=False)
    assert (prompt == 20).all() and again.shape == (1, 1, 256, 256)


def test_several_prompts_with_masks_decode_each_with_its_own(small_folder):
    backend = load_backend(small_folder, device="cpu")
    emb = backend.embed(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    boxes = torch.tensor([[10.0, 10.0, 500.0, 600.0], [300.0, 200.0, 1000.0, 900.0]])
    masks = torch.stack([torch.full((1, 256, 256), 20.0), torch.full((1, 256, 256), -20.0)])
    with torch.inference_mode():
        both, iou = backend.decode(emb, points=None, labels=None, boxes=boxes, masks=masks, multimask=False)
        for i in range(2):
            one, one_iou = backend.decode(emb, points=None, labels=None, boxes=boxes[i:i + 1], masks=masks[i:i + 1],
                                          multimask=False)
            assert torch.allclose(both[i], one[0], atol=1e-5) and torch.allclose(iou[i], one_iou[0], atol=1e-6)
