"""The auto-labeling pipeline shared by the app and the command line."""

import numpy as np
import pytest
from tiny_sam import save_tiny_sam

import gdino
from gdino.labeling import LabelSettings, label_images, parse_class_text
from gdino.masks import rle_to_mask
from gdino.store import ObjectState, Project


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
    manual = project.add_classes(["person"]) and project.edit_objects(ids[0], new=[ObjectState("person", (1, 1, 20, 20))])[0]
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


def test_add_sources_reports_each_source_and_adds_each_once(tmp_path):
    """The one image-adding loop (the CLI's, import-results', the app's): added, already there (by key, by
    path), removed earlier (left out on request), failed with its reason; each in input order."""
    from PIL import Image

    from gdino.labeling.adding import ADDED, FAILED, REMOVED, THERE, Source, add_sources

    files = tmp_path / "in"
    files.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (20, 10), "red").save(files / name)
    (files / "bad.png").write_bytes(b"not an image")
    with Project.create(tmp_path / "p") as project:
        first = add_sources(project, [Source(files / "a.png", key="k-a"), Source(files / "bad.png", key="k-bad"),
                                      Source(files / "b.png", key="k-b", name="renamed.png")])
        assert [o.status for o in first.outcomes] == [ADDED, FAILED, ADDED]
        assert "bad.png" in first.failed[0].why and first.failed[0].record is None
        assert [o.record.name for o in first.added] == ["a.png", "renamed.png"]
        project.remove_images([first.outcomes[2].record.id])
        here = add_sources(project, [Source(files / "c.png")], copy=False)  # referenced where it lies, no key
        assert here.added[0].record.path == files / "c.png"
        seen = []
        again = add_sources(project, [Source(files / "a.png", key="k-a"), Source(files / "b.png", key="k-b"),
                                      Source(files / "c.png")], copy=False, skip_removed=True,
                            by_path={str(here.added[0].record.path): here.added[0].record}, each=seen.append)
        assert [o.status for o in again.outcomes] == [THERE, REMOVED, THERE] and seen == again.outcomes
        assert again.there[0].record.id == first.added[0].record.id
        assert len(project.images()) == 2
        back = add_sources(project, [Source(files / "b.png", key="k-b")])  # without skip_removed: added again
        assert [o.status for o in back.outcomes] == [ADDED]


def test_the_one_model_loader_takes_typed_specs(tiny_hf, tmp_path):
    """load_detector / load_segmenter (the CLI's, the Ray actors' and the app's models): device and dtype from
    the spec; a dtype it does not know is refused before anything loads."""
    import torch

    from gdino.labeling.loading import DetectorSpec, SegmenterSpec, load_detector, load_segmenter

    bf16 = load_detector(DetectorSpec(str(tiny_hf[1]), device="cpu", dtype="bfloat16"))
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    plain = load_detector(DetectorSpec(str(tiny_hf[1]), device="cpu"))
    assert next(plain.model.parameters()).dtype == torch.float32 and next(plain.model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_detector(DetectorSpec(str(tiny_hf[1]), dtype="float64"))
    with pytest.raises(ValueError):
        load_detector(DetectorSpec(str(tmp_path / "no-such-model"), device="cpu"))
    seg = load_segmenter(SegmenterSpec(str(save_tiny_sam(tmp_path / "sam.pth")), device="cpu"))
    assert isinstance(seg, gdino.Segmenter)
