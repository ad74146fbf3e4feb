"""`gdino label --model <SAM 3>`: the second family through the command line (a tiny random SAM 3 in the hub
layout): boxes and SAM 3's own masks stored, its 0.5 threshold by default, --sam refused, export checked."""

import numpy as np
import pytest
from PIL import Image
from sam3_models import save_tiny_sam3

from gdino.cli import main
from gdino.store import Project


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    return save_tiny_sam3(tmp_path_factory.mktemp("sam3_cli"), confident=True)


def images(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        pixels = np.random.default_rng(k).integers(0, 255, (60 + 10 * k, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"im{k}.png")
    return root


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_label_with_sam3_stores_boxes_and_its_masks_and_exports(sam3_dir, tmp_path, capsys):
    src = images(tmp_path / "in")
    code, out, err = run(capsys, "label", src, "--classes", "cat, dog", "--model", sam3_dir, "--device", "cpu",
                         "--box-threshold", "0.05", "--out", tmp_path / "proj", "--export", "coco",
                         "--export-dir", tmp_path / "coco")
    assert code == 0, out + err
    assert "SAM 3" in err and "deformable attention" not in err
    with Project.open(tmp_path / "proj") as project:
        objects = [(r, o) for r in project.images() for o in project.objects(r.id)]
        assert objects and {o.class_name for _, o in objects} <= {"cat", "dog"}
        for record, o in objects:
            assert o.mask is not None and o.mask["size"] == [record.height, record.width]
            assert o.source == "model"
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "coco" / "annotations" / "instances_train.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == len(objects)
    for ann in anns:  # every mask decodes at its image's size, as pycocotools reads it
        img = coco.loadImgs(ann["image_id"])[0]
        assert coco.annToMask(ann).shape == (img["height"], img["width"])


def test_sam3_keeps_its_own_threshold_unless_told(sam3_dir, tmp_path, capsys):
    """The run each image records holds the threshold used: SAM 3's 0.5 by default, --box-threshold when given;
    and the stored scores obey it (a score in (0.35, 0.5] is stored only with --box-threshold 0.35)."""
    src = images(tmp_path / "in", n=3)
    runs, scores = {}, {}
    for name, more in (("default", []), ("flag", ["--box-threshold", "0.35"])):
        code, out, err = run(capsys, "label", src, "--classes", "cat, dog, car", "--model", sam3_dir, "--device", "cpu",
                             "--nms-iou", "off", "--out", tmp_path / name, *more)
        assert code == 0, out + err
        with Project.open(tmp_path / name) as project:
            runs[name] = {project.last_run(r.id)["box_threshold"] for r in project.images()}
            scores[name] = sorted(o.score for r in project.images() for o in project.objects(r.id))
    assert runs == {"default": {0.5}, "flag": {0.35}}
    assert scores["default"] and min(scores["default"]) > 0.5
    between = [s for s in scores["flag"] if 0.35 < s <= 0.5]
    assert between, scores["flag"]  # the inputs give some: the test would not tell the thresholds apart without
    assert scores["default"] == [s for s in scores["flag"] if s > 0.5]


def test_sam_flag_with_sam3_is_refused_before_any_write(sam3_dir, tmp_path, capsys):
    src = images(tmp_path / "in", n=1)
    code, out, err = run(capsys, "label", src, "--classes", "cat", "--model", sam3_dir, "--device", "cpu",
                         "--sam", "vit_b", "--out", tmp_path / "proj")
    assert code == 2 and "SAM 3, which makes its own masks: leave out --sam" in err
    assert not (tmp_path / "proj").exists()


def test_sam3_as_the_mask_stage_of_grounding_dino(tiny_hf, tmp_path, capsys):
    """--sam with SAM 3's folder (facebook/sam3's layout): Grounding DINO's boxes, SAM 3's interactive head's
    masks, stored at each image's size; its embeddings kept in the project for the clicks of review."""
    from sam3_models import save_tiny_sam3_video

    sam = save_tiny_sam3_video(tmp_path / "sam3", seed=2)
    src = images(tmp_path / "in")
    code, out, err = run(capsys, "label", src, "--classes", "cat, remote control", "--model", tiny_hf[1], "--sam", sam,
                         "--device", "cpu", "--box-threshold", "0.05", "--out", tmp_path / "proj")
    assert code == 0, out + err
    with Project.open(tmp_path / "proj") as project:
        objects = [(r, o) for r in project.images() for o in project.objects(r.id)]
        assert objects
        for record, o in objects:
            assert o.mask is not None and o.mask["size"] == [record.height, record.width]
    assert any((tmp_path / "proj" / ".cache" / "sam").rglob("*"))  # the embeddings, kept for review
