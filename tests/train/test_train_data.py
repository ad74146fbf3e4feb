"""Training data from a project (gdino.train.data): selection, safe reading, split, augmentation, batches."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gdino.processing import IMAGENET_MEAN, IMAGENET_STD
from gdino.store import NewImage, ObjectState, Project
from gdino.train.data import (
    MAX_SIZE,
    SCALES,
    Augment,
    Example,
    TrainingDataError,
    batches,
    collate,
    examples_from_project,
    load_image,
    load_sample,
    split_examples,
)

RED = (220, 20, 30)
GRAY = (128, 128, 128)


def picture(w: int, h: int, box, colour=RED) -> np.ndarray:
    """(h, w, 3) gray with `colour` filling the xyxy pixel box."""
    a = np.full((h, w, 3), GRAY, np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = colour
    return a


def red_fraction(pixels: np.ndarray) -> float:
    """Share of (..., 3) uint8 pixels that are (near) RED."""
    return float((np.abs(pixels.astype(int) - RED).max(-1) < 40).mean())


def to_uint8(pixel_values: torch.Tensor) -> np.ndarray:
    """(3, H, W) normalized -> (H, W, 3) uint8, undoing the ImageNet normalization."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((pixel_values * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def box_pixels(box: torch.Tensor, h: int, w: int) -> tuple[int, int, int, int]:
    cx, cy, bw, bh = box.tolist()
    return (round((cx - bw / 2) * w), round((cy - bh / 2) * h), round((cx + bw / 2) * w), round((cy + bh / 2) * h))


def covers_red(image: np.ndarray, box: tuple[int, int, int, int], margin: int) -> bool:
    """The box's inside (less a margin for resampling) is red, a band just outside it is not."""
    x0, y0, x1, y1 = box
    inside = image[y0 + margin:y1 - margin, x0 + margin:x1 - margin]
    h, w = image.shape[:2]
    outside = np.ones((h, w), bool)
    outside[max(y0 - margin, 0):y1 + margin, max(x0 - margin, 0):x1 + margin] = False
    return red_fraction(inside) > 0.99 and red_fraction(image[outside]) < 0.01


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "proj", ["cat", "dog"]) as p:
        yield p


def add(project: Project, name: str, status: str, objects=(), *, source="manual", size=(64, 48), box=(8, 12, 30, 40)):
    """An image with labels as an import brings them (`add_labeled`: no edit of a person in its history)."""
    path = project.path.parent / f"source-{name}"
    Image.fromarray(picture(*size, box)).save(path)
    labels = tuple({"box": b, "class_name": c, "score": 0.9 if source == "model" else None} for b, c in objects)
    (record,) = project.add_labeled([NewImage(path, name, *size, status, labels, source)])
    return record


# -- selection ---------------------------------------------------------------------------------------


def test_selection_by_status_and_touched_labels(project):
    reviewed = add(project, "a_reviewed.png", "reviewed", [((8, 12, 30, 40), "cat")], source="model")
    model_only = add(project, "b_auto.png", "auto", [((8, 12, 30, 40), "dog")], source="model")
    manual = add(project, "c_manual.png", "auto", [((8, 12, 30, 40), "dog")], source="model")
    project.edit_objects(manual.id, new=[ObjectState("cat", (1, 1, 5, 5))])  # drawn by a person
    edited = add(project, "d_edited.png", "auto", [((8, 12, 30, 40), "dog")], source="model")
    (obj,) = project.objects(edited.id)
    project.edit_objects(edited.id, {obj.id: None})  # a person deleted the model's box: no object left
    moved = add(project, "e_moved.png", "auto", [((8, 12, 30, 40), "cat")], source="model")
    (obj,) = project.objects(moved.id)
    project.edit_objects(moved.id, {obj.id: replace(ObjectState.of(obj), box=(9, 12, 30, 40), source="manual")})  # corrected
    add(project, "f_skipped.png", "skipped", [((8, 12, 30, 40), "cat")])
    add(project, "g_unlabeled.png", "unlabeled")
    negative = add(project, "h_negative.png", "reviewed")

    default = examples_from_project(project)
    assert [e.image_id for e in default.examples] == [reviewed.id, negative.id]
    assert default.classes == ("cat", "dog")
    assert default.report.model_objects == 1  # the reviewed image's accepted model box
    assert default.examples[1].boxes.shape == (0, 4) and default.examples[1].class_ids.shape == (0,)

    touched = examples_from_project(project, touched=True)
    assert [e.name for e in touched.examples] == ["a_reviewed.png", "c_manual.png", "d_edited.png", "e_moved.png",
                                                  "h_negative.png"]
    assert model_only.id not in [e.image_id for e in touched.examples]
    c = touched.examples[1]
    assert c.class_ids.tolist() == [1, 0] and c.boxes.tolist() == [[8, 12, 30, 40], [1, 1, 5, 5]]
    assert touched.examples[2].boxes.shape == (0, 4)  # all its boxes deleted: a negative


def test_a_model_run_alone_is_not_a_persons_touch(project):
    """A Detect or auto-label run is an undoable history entry of its image (issue 25), but not a person's
    decision: `touched=True` trains on it only once a person edits it."""
    ran = add(project, "a_run.png", "unlabeled")
    project.replace_model_objects(ran.id, [{"box": (8, 12, 30, 40), "class_name": "cat", "score": 0.9}])
    assert project.history(ran.id)[0]  # the run can be undone
    with pytest.raises(ValueError, match="no reviewed images or images with labels a person made"):
        examples_from_project(project, touched=True)
    (obj,) = project.objects(ran.id)
    project.edit_objects(ran.id, {obj.id: replace(ObjectState.of(obj), box=(9, 12, 30, 40))})  # a person's fix
    assert [e.image_id for e in examples_from_project(project, touched=True).examples] == [ran.id]


def test_phrases_are_never_trained_on(project):
    record = add(project, "a.png", "reviewed", [((8, 12, 30, 40), "cat")])
    project.replace_model_objects(record.id, [{"box": (30, 5, 60, 20), "class_name": "red thing", "score": 0.8},
                                              {"box": (2, 2, 9, 9), "class_name": "dog", "score": 0.7}],
                                  phrases=["red thing"])
    assert project.phrases == ["red thing"]
    data = examples_from_project(project)
    assert data.classes == ("cat", "dog")
    (example,) = data.examples
    assert sorted(example.class_ids.tolist()) == [0, 1] and len(example.boxes) == 2
    assert data.report.phrase_objects == 1 and data.report.objects == 2


def test_degenerate_boxes_are_clipped_or_dropped(project):
    record = add(project, "a.png", "reviewed", [((8, 12, 30, 40), "cat"), ((1, 1, 9, 9), "dog"), ((2, 2, 6, 6), "cat"),
                                                ((3, 3, 7, 7), "dog")])
    ids = [o.id for o in project.objects(record.id)]
    # what an older or damaged store may hold; the store's own writes never let such boxes in
    with sqlite3.connect(project.path / "project.sqlite") as db:
        db.execute("UPDATE objects SET x0 = -10, x1 = 20 WHERE id = ?", (ids[1],))  # partly outside: clipped
        db.execute("UPDATE objects SET x0 = 70, x1 = 90 WHERE id = ?", (ids[2],))  # wholly outside: dropped
        db.execute("UPDATE objects SET y1 = 3 WHERE id = ?", (ids[3],))  # zero height: dropped
    data = examples_from_project(project)
    assert (data.report.clipped, data.report.dropped, data.report.objects) == (1, 2, 2)
    assert data.examples[0].boxes.tolist() == [[8, 12, 30, 40], [0, 1, 20, 9]]


def test_no_usable_images_is_a_clear_error(tmp_path):
    with Project.create(tmp_path / "empty", ["cat"]) as p:
        add(p, "a.png", "auto", [((8, 12, 30, 40), "cat")], source="model")
        with pytest.raises(TrainingDataError, match="no reviewed images to train on.*mark them reviewed"):
            examples_from_project(p)
        with pytest.raises(TrainingDataError, match="no reviewed images or images with labels a person made"):
            examples_from_project(p, touched=True)
    with Project.create(tmp_path / "classless") as p, pytest.raises(TrainingDataError, match="no classes"):
        examples_from_project(p)


# -- reading files -----------------------------------------------------------------------------------


def test_exif_rotated_jpeg_and_png_with_alpha(project, tmp_path):
    upright = picture(40, 64, (5, 30, 25, 60))  # 40 wide, 64 high
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 64 x 40 as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to show": exif_transpose turns the stored pixels back upright
    stored.save(tmp_path / "photo.jpg", quality=95, exif=exif)
    rgba = np.zeros((48, 64, 4), np.uint8)  # transparent, except an opaque red box
    rgba[10:30, 20:50] = (*RED, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    for name, objects in (("photo.jpg", [((5, 30, 25, 60), "cat")]), ("alpha.png", [((20, 10, 50, 30), "dog")])):
        record = project.add_image(tmp_path / name)
        project.edit_objects(record.id, new=[ObjectState(c, b) for b, c in objects])
        project.set_status(record.id, "reviewed")
    alpha, photo = examples_from_project(project).examples
    assert (photo.width, photo.height) == (40, 64) and (alpha.width, alpha.height) == (64, 48)
    assert np.asarray(load_image(alpha))[0, 0].tolist() == [255, 255, 255]  # transparency composited on white
    for example in (photo, alpha):
        sample = load_sample(example)
        h, w = sample.image.shape[1:]
        assert min(h, w) == 800
        image = sample.image.permute(1, 2, 0).numpy()
        assert covers_red(image, box_pixels(sample.target.boxes[0], h, w), margin=25)


def test_a_link_out_of_the_project_is_refused(project, tmp_path):
    safe = add(project, "a.png", "reviewed", [((8, 12, 30, 40), "cat")])
    linked = add(project, "b.png", "reviewed", [((8, 12, 30, 40), "cat")])
    secret = tmp_path / "outside.png"
    Image.fromarray(picture(64, 48, (8, 12, 30, 40))).save(secret)
    linked.path.unlink()
    linked.path.symlink_to(secret)
    data = examples_from_project(project)
    assert [e.image_id for e in data.examples] == [safe.id]
    ((name, why),) = data.report.skipped
    assert name == "b.png" and "link" in why and str(tmp_path) not in why

    (example,) = data.examples  # swapped for a link after it was selected: refused when read
    safe.path.unlink()
    safe.path.symlink_to(secret)
    with pytest.raises(ValueError, match="link"):
        load_image(example)
    with pytest.raises(TrainingDataError, match="none of the 2 image.*could be read.*link"):
        examples_from_project(project)


def test_a_referenced_file_swapped_for_a_link_is_refused(project, tmp_path):
    outside = tmp_path / "data"
    outside.mkdir()
    Image.fromarray(picture(64, 48, (8, 12, 30, 40))).save(outside / "real.png")
    record = project.add_image(outside / "real.png", copy=False)
    project.set_status(record.id, "reviewed")
    assert len(examples_from_project(project).examples) == 1
    (outside / "real.png").rename(outside / "moved.png")
    (outside / "real.png").symlink_to(outside / "moved.png")
    with pytest.raises(TrainingDataError, match="through a link"):
        examples_from_project(project)


def test_a_changed_file_is_left_out(project):
    kept = add(project, "a.png", "reviewed")
    changed = add(project, "b.png", "reviewed")
    Image.fromarray(picture(50, 48, (8, 12, 30, 40))).save(changed.path)
    data = examples_from_project(project)
    assert [e.image_id for e in data.examples] == [kept.id]
    assert "changed since it was added" in data.report.skipped[0][1]


# -- split -------------------------------------------------------------------------------------------


def fake(n: int, start: int = 0) -> list[Example]:
    return [Example(i, f"img{i:03d}.jpg", Path(f"/x/{i}"), Path("/x"), 64, 48, np.zeros((0, 4), np.float32),
                    np.zeros(0, np.int64)) for i in range(start, start + n)]


def names(examples) -> set[str]:
    return {e.name for e in examples}


def test_split_is_seeded_disjoint_and_stable():
    examples = fake(40)
    split = split_examples(examples, 0.25, seed=3)
    assert names(split.train) | names(split.val) == names(examples) and not names(split.train) & names(split.val)
    assert 4 <= len(split.val) <= 18
    again = split_examples(list(reversed(examples)), 0.25, seed=3)
    assert names(again.val) == names(split.val)
    assert names(split_examples(examples, 0.25, seed=4).val) != names(split.val)
    grown = split_examples(examples + fake(30, start=40), 0.25, seed=3)  # images added later
    assert names(split.val) <= names(grown.val) and names(split.train) <= names(grown.train)
    assert [e.name for e in split.train] == sorted(names(split.train))  # order kept


def test_split_minimums():
    for seed in range(20):
        few = split_examples(fake(2), 0.01, seed)
        assert (len(few.train), len(few.val)) == (1, 1)
        many = split_examples(fake(3), 0.99, seed)
        assert (len(many.train), len(many.val)) == (1, 2)
    assert len(split_examples(fake(1), 0.5).val) == 0
    assert len(split_examples(fake(5), 0.0).val) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_examples(fake(5), 1.0)


# -- augmentation and batches ------------------------------------------------------------------------


def test_augmented_boxes_stay_on_the_pixels(project):
    box = (8, 12, 30, 40)  # off-centre: a flip that forgot the boxes would miss the red
    add(project, "a.png", "reviewed", [(box, "cat")], box=box)
    (example,) = examples_from_project(project).examples
    rng = random.Random(0)
    for flip in (0.0, 1.0):
        for scale in (480, 608, 800):
            sample = load_sample(example, Augment(scales=(scale,), flip=flip), rng)
            h, w = sample.image.shape[1:]
            assert (h, w) == (scale, int(scale * 64 / 48))
            batch = collate([sample])
            image = to_uint8(batch.pixel_values[0])
            assert covers_red(image, box_pixels(batch.targets[0].boxes[0], h, w), margin=12)
            assert (batch.targets[0].boxes[0, 0] < 0.5) == (flip == 0.0)


def test_augmented_sizes(project):
    wide = add(project, "wide.png", "reviewed", [((2, 2, 9, 9), "cat")], size=(128, 24), box=(2, 2, 9, 9))
    square = add(project, "square.png", "reviewed", [((2, 2, 9, 9), "cat")], size=(40, 40), box=(2, 2, 9, 9))
    examples = examples_from_project(project).examples
    seen, flips = set(), 0
    for epoch in range(6):
        for batch in batches(examples, 1, augment=Augment(), seed=1, epoch=epoch):
            (h, w), (image_id,) = batch.sizes[0], batch.image_ids
            if image_id == wide.id:  # any shorter side in 480..800 would make it longer than 1333: capped
                assert (h, w) == (250, MAX_SIZE)
            else:
                assert image_id == square.id and h == w and h in SCALES
                seen.add(h)
            flips += batch.targets[0].boxes[0, 0].item() > 0.5  # the box's centre (5.5 px) moves right when flipped
    assert len(seen) >= 3 and 0 < flips < 12
    plain = {b.image_ids[0]: b.sizes[0] for b in batches(examples, 1, seed=1)}
    assert plain == {square.id: (800, 800), wide.id: (250, MAX_SIZE)}
    assert list(batches([], 2)) == []
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(examples, 0))


def test_padding_and_masks(project):
    add(project, "a_wide.png", "reviewed", [((8, 12, 30, 40), "cat")], size=(64, 48))
    add(project, "b_tall.png", "reviewed", [((4, 4, 20, 30), "dog")], size=(48, 64), box=(4, 4, 20, 30))
    add(project, "c_wide.png", "reviewed", [((1, 2, 3, 4), "dog")], size=(64, 48), box=(1, 2, 3, 4))
    wide, tall, wide2 = examples_from_project(project).examples
    batch = collate([load_sample(wide), load_sample(tall)])
    assert batch.pixel_values.shape == (2, 3, 1066, 1066) and batch.pixel_mask.shape == (2, 1066, 1066)
    assert batch.sizes == [(800, 1066), (1066, 800)] and batch.original_sizes == [(48, 64), (64, 48)]
    for b, (h, w) in enumerate(batch.sizes):
        mask = batch.pixel_mask[b]
        assert mask[:h, :w].all() and mask.sum() == h * w
        assert (batch.pixel_values[b][:, h:, :] == 0).all() and (batch.pixel_values[b][:, :, w:] == 0).all()
    # targets stay normalized to the unpadded image: the same as in a batch of one
    assert torch.equal(batch.targets[1].boxes, collate([load_sample(tall)]).targets[0].boxes)
    assert batch.targets[1].as_dict()["class_labels"].tolist() == [1]
    same = collate([load_sample(wide), load_sample(wide2)])
    assert same.pixel_values.shape == (2, 3, 800, 1066) and same.pixel_mask.all()
    grouped = list(batches([wide, tall, wide2], 2, same_size=True, seed=0))
    assert sorted(len(b.image_ids) for b in grouped) == [1, 2] and all(b.pixel_mask.all() for b in grouped)
    epochs = [[b.image_ids for b in batches([wide, tall, wide2], 2, seed=5, epoch=e)] for e in (0, 0, 1)]
    assert epochs[0] == epochs[1]
    assert sorted(i for b in epochs[2] for i in b) == sorted([wide.image_id, tall.image_id, wide2.image_id])
