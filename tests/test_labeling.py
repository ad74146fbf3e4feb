"""The auto-labeling pipeline shared by the app and the command line."""

import numpy as np
import pytest
from tiny_sam import save_tiny_sam

import gdino
from gdino.labeling import LabelSettings, label_images, parse_class_text
from gdino.masks import rle_to_mask
from gdino.project import Project


@pytest.mark.parametrize("text, expected", [
    ("cat, remote control", ["cat", "remote control"]),
    ("cat,remote control,", ["cat", "remote control"]),
    ("car: car, automobile", {"car": ["car", "automobile"]}),
    ("car: car, automobile; person: person, man", {"car": ["car", "automobile"], "person": ["person", "man"]}),
    ("cat; car: car, automobile", {"cat": ["cat"], "car": ["car", "automobile"]}),
    ("cat\ndog", ["cat", "dog"]),
])
def test_parse_class_text(text, expected):
    assert parse_class_text(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "no classes"), ("  ", "no classes"), ("cat,,dog", "empty class name"),
    ("cat, car: car, automobile", "separate the classes with ';'"), (": a, b", "no label"),
    ("car: a; car: b", "given twice"),
])
def test_parse_class_text_errors(text, message):
    with pytest.raises(gdino.PromptError, match=message):
        parse_class_text(text)


@pytest.fixture
def setup(tiny_hf, tmp_path):
    det = gdino.Detector(gdino.load_model(tiny_hf[1]))
    seg = gdino.Segmenter.from_pretrained(save_tiny_sam(tmp_path / "sam.pth"), device="cpu")
    project = Project.create(tmp_path / "proj")
    rng = np.random.default_rng(0)
    ids = [project.add_image(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), name=f"im{i}.png").id for i in range(3)]
    yield det, seg, project, ids
    project.close()


def test_label_images_stores_model_objects_with_masks_and_the_run(setup):
    det, seg, project, ids = setup
    manual = project.add_classes(["person"]) and project.add_object(ids[0], (1, 1, 20, 20), "person")
    settings = LabelSettings(classes=parse_class_text("cat, remote control"), box_threshold=0.2, masks=True)
    seen = []
    summary = label_images(project, det, ids, settings, segmenter=seg, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert summary.labeled == ids and not summary.failed and summary.objects > 0
    assert seen == [(2, 3), (3, 3)]
    assert project.classes[:1] == ["person"] and {"cat", "remote control"} <= set(project.classes)
    objects = project.objects(ids[0])
    assert manual.id in [o.id for o in objects]  # manual objects survive
    model = [o for o in objects if o.source == "model"]
    assert model and all(o.class_name in ("cat", "remote control") and o.mask is not None for o in model)
    assert rle_to_mask(model[0].mask).shape == (120, 160)
    assert project.image(ids[1]).status == "auto"
    assert LabelSettings.from_run(project.last_run(ids[1])) == LabelSettings(
        classes=["cat", "remote control"], box_threshold=0.2, masks=True)


def test_a_bad_image_is_reported_and_the_run_goes_on(setup, tmp_path):
    det, _, project, ids = setup
    broken = project.image(ids[1]).path
    broken.write_bytes(b"not an image any more")
    summary = label_images(project, det, ids, LabelSettings(classes=["cat"], box_threshold=0.2), batch_size=3)
    assert summary.labeled == [ids[0], ids[2]] and list(summary.failed) == [ids[1]]
    assert "could not read" in summary.failed[ids[1]]


def test_stop_between_batches_keeps_what_is_done(setup):
    det, _, project, ids = setup
    calls = iter([False, True])
    summary = label_images(project, det, ids, LabelSettings(classes=["cat"]), batch_size=1, should_stop=lambda: next(calls))
    assert summary.cancelled and summary.labeled == [ids[0]]
    assert project.image(ids[0]).status == "auto" and project.image(ids[1]).status == "unlabeled"


def test_free_text_phrases_become_classes(setup):
    det, _, project, ids = setup
    summary = label_images(project, det, ids[:1], LabelSettings(prompt="a cat on the red couch", box_threshold=0.2))
    names = {o.class_name for o in project.objects(ids[0])}
    assert summary.objects > 0 and names <= set(project.classes) and all(n in "a cat on the red couch" for n in names)
    assert project.phrases == []


def test_free_text_phrases_can_stay_phrases(setup):
    det, _, project, ids = setup
    before = project.classes
    summary = label_images(project, det, ids[:1], LabelSettings(prompt="a cat on the red couch", box_threshold=0.2),
                           add_all_classes=False, keep_phrases=True)
    objects = project.objects(ids[0])
    assert summary.objects == len(objects) > 0 and all(o.phrase for o in objects)
    assert project.classes == before and project.phrases == sorted({o.class_name for o in objects})


def test_masks_without_a_segmenter_is_an_error(setup):
    det, _, project, ids = setup
    with pytest.raises(ValueError, match="no SAM model"):
        label_images(project, det, ids, LabelSettings(classes=["cat"], masks=True))
