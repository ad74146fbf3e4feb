"""The project store on real SQLite files: API, validation, EXIF sizes, migrations, crash safety."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gdino.processing import ImageError, to_rgb
from gdino.store import ObjectRecord, ObjectState, Project, ProjectError, schema
from gdino.store.schema import MIGRATIONS


def make_image(path, width=40, height=20, orientation=None, fmt=None, seed=0):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    img.save(path, format=fmt, **kwargs)
    return path


def rle(height, width):
    return {"size": [height, width], "counts": f"{height * width}"}


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "proj", ["cat", "dog"]) as p:
        yield p


@pytest.fixture
def image(project, tmp_path):
    return project.add_image(make_image(tmp_path / "a.jpg"))


# -- lifecycle -------------------------------------------------------------------------------------


def test_create_open_round_trip(tmp_path):
    src = make_image(tmp_path / "a.png")
    with Project.create(tmp_path / "proj", ["cat", "dog"]) as p:
        assert p.path == (tmp_path / "proj").resolve()
        assert (p.path / "project.sqlite").is_file() and (p.path / "images").is_dir()
        img = p.add_image(src)
        (obj,) = p.edit_objects(img.id, new=[ObjectState("dog", (1, 2, 30, 15), score=0.5, mask=rle(20, 40))])
        p.set_setting("prompt", {"text": "cat . dog .", "box_threshold": 0.35})
        img = p.image(img.id)
        assert img.num_objects == 1
    with Project.open(tmp_path / "proj") as p:
        assert p.classes == ["cat", "dog"]
        assert p.schema_version == len(MIGRATIONS)
        assert p.images() == [img]
        assert p.objects(img.id) == [obj]
        assert p.setting("prompt") == {"text": "cat . dog .", "box_threshold": 0.35}
    assert sqlite3.connect(tmp_path / "proj" / "project.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (tmp_path / "proj").rename(tmp_path / "moved")  # copied images are stored relative to the project
    with Project.open(tmp_path / "moved") as p:
        (moved,) = p.images()
        assert moved.path == (tmp_path / "moved" / "images" / "a.png").resolve() and moved.path.is_file()


def test_create_refuses_existing_unless_exist_ok(tmp_path):
    Project.create(tmp_path / "proj", ["cat"]).close()
    with pytest.raises(ProjectError, match="already holds a project.*exist_ok=True"):
        Project.create(tmp_path / "proj")
    with Project.create(tmp_path / "proj", ["dog", "Cat"], exist_ok=True) as p:
        assert p.classes == ["cat", "dog"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProjectError, match="not a directory"):
        Project.create(tmp_path / "file")
    with pytest.raises(ProjectError, match="non-empty string"):
        Project.create(tmp_path / "bad", ["cat", ""])
    assert not (tmp_path / "bad").exists()  # bad classes are refused before anything is written


def test_open_errors(tmp_path):
    with pytest.raises(ProjectError, match="not a gdino project \\(it has no project.sqlite\\)$"):
        Project.open(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "project.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ProjectError, match="not a readable project database"):
        Project.open(tmp_path / "junk")
    Project.create(tmp_path / "new").close()
    db = sqlite3.connect(tmp_path / "new" / "project.sqlite")
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    with pytest.raises(ProjectError, match="newer gdino.*upgrade"):
        Project.open(tmp_path / "new")
    (tmp_path / "other").mkdir()
    db = sqlite3.connect(tmp_path / "other" / "project.sqlite")
    db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(ProjectError, match="not a gdino project"):
        Project.open(tmp_path / "other")


def test_closed_project_refuses_calls(tmp_path):
    p = Project.create(tmp_path / "proj")
    p.close()
    p.close()  # twice is fine
    with pytest.raises(ProjectError, match="closed"):
        p.images()


# -- classes ---------------------------------------------------------------------------------------


def test_add_classes_is_idempotent_and_validates(project):
    assert project.add_classes(["bird", " CAT ", "fish "]) == ["bird", "fish"]
    assert project.classes == ["cat", "dog", "bird", "fish"]
    with pytest.raises(ProjectError, match="listed twice"):
        project.add_classes(["horse", "Horse"])
    with pytest.raises(ProjectError, match="non-empty string"):
        project.add_classes(["  "])
    with pytest.raises(ProjectError, match="not a single string"):
        project.add_classes("horse")
    assert project.classes == ["cat", "dog", "bird", "fish"]


def test_rename_class_keeps_objects(project, image):
    (obj,) = project.edit_objects(image.id, new=[ObjectState("cat", (0, 0, 10, 10))])
    project.rename_class("cat", "kitten")
    assert project.classes == ["kitten", "dog"]
    assert project.objects(image.id)[0].class_name == "kitten"
    assert project.objects(image.id)[0].id == obj.id
    project.rename_class("kitten", "Kitten")  # respelling the same class is allowed
    assert project.classes == ["Kitten", "dog"]
    with pytest.raises(ProjectError, match="to 'DOG': the class 'dog' already exists"):
        project.rename_class("Kitten", "DOG")
    with pytest.raises(ProjectError, match=r"unknown class 'cat'.*\['Kitten', 'dog'\]"):
        project.rename_class("cat", "x")


def test_remove_class_refuses_when_used_then_deletes(project, image):
    for _ in range(3):
        project.edit_objects(image.id, new=[ObjectState("cat", (0, 0, 10, 10))])
    (keep,) = project.edit_objects(image.id, new=[ObjectState("dog", (0, 0, 10, 10))])
    with pytest.raises(ProjectError, match=r"used by 3 object\(s\); pass delete_objects=True"):
        project.remove_class("cat")
    assert len(project.objects(image.id)) == 4
    project.remove_class("cat", delete_objects=True)
    assert project.classes == ["dog"]
    assert project.objects(image.id) == [keep]
    project.add_classes(["unused"])
    project.remove_class("unused")
    assert project.classes == ["dog"]


def test_set_classes_reorders_adds_and_refuses_dropping_used(project, image):
    project.edit_objects(image.id, new=[ObjectState("dog", (0, 0, 10, 10))])
    project.add_classes(["bird"])
    project.set_classes(["Dog", "fish", "cat"])  # drops unused "bird", respells "dog"
    assert project.classes == ["Dog", "fish", "cat"]
    assert project.objects(image.id)[0].class_name == "Dog"
    with pytest.raises(ProjectError, match=r"drop the class 'Dog', which is used by 1 object"):
        project.set_classes(["cat"])
    assert project.classes == ["Dog", "fish", "cat"]  # the refused call changed nothing


# -- images ----------------------------------------------------------------------------------------


def test_add_image_copies_bytes_and_dedupes_names(project, tmp_path):
    src = make_image(tmp_path / "a.jpg", orientation=3)
    first = project.add_image(src)
    second = project.add_image(src)
    assert (first.name, second.name) == ("a.jpg", "a_1.jpg")
    for record in (first, second):
        assert record.path.is_absolute() and record.path.parent == project.path / "images"
        assert record.path.read_bytes() == src.read_bytes()  # EXIF and all
        assert (record.width, record.height, record.status, record.min_score, record.num_objects) == (40, 20, "unlabeled",
                                                                                                       None, 0)
    named = project.add_image(src, name="custom.jpg")
    assert named.name == "custom.jpg" and named.path.name == "custom.jpg"
    assert project.find_image("A.JPG") == first
    assert project.find_image("missing.jpg") is None
    assert project.image(second.id) == second
    assert [r.name for r in project.images(order="added")] == ["a.jpg", "a_1.jpg", "custom.jpg"]
    assert not [p for p in (project.path / "images").iterdir() if p.name.startswith(".")]  # no temp files left


def test_an_image_name_with_a_lone_surrogate_is_stored_not_a_traceback(project, tmp_path):
    """A name from JSON or a result row may hold a lone surrogate (not text: SQLite and file systems cannot
    take it); like bytes from disk that are not UTF-8, it becomes U+FFFD."""
    src = make_image(tmp_path / "a.png")
    assert project.add_image(src, name="a\ud800.png").name == "a\ufffd.png"
    assert project.add_reference("s3://b/k.png", 40, 20, name="k\udfff.png").name == "k\ufffd.png"
    assert project.add_image(src, name=os.fsdecode(b"caf\xe9.png")).name == "caf\ufffd.png"  # bytes from disk, as before


def test_add_image_by_reference_and_remove(project, tmp_path):
    (tmp_path / "big").mkdir()
    src = make_image(tmp_path / "big" / "b.png")
    ref = project.add_image(src, copy=False)
    assert ref.path == src.resolve()
    assert not (project.path / "images" / "b.png").exists()
    copied = project.add_image(src)
    assert copied.name == "b_1.png"
    project.edit_objects(ref.id, new=[ObjectState("cat", (0, 0, 5, 5))])
    project.remove_image(ref.id)
    assert src.exists()  # a referenced file is not ours to delete
    project.remove_image(copied.id)
    assert not copied.path.exists()
    assert project.images() == []
    with pytest.raises(ProjectError, match="no image with id"):
        project.objects(ref.id)


def test_add_pil_image_and_array_are_written_as_png(project):
    rec = project.add_image(Image.new("RGBA", (30, 12), (255, 0, 0, 0)))
    assert rec.name == "image.png" and (rec.width, rec.height) == (30, 12)
    with Image.open(rec.path) as f:
        assert f.format == "PNG" and f.mode == "RGB"
        assert f.getpixel((0, 0)) == (255, 255, 255)  # alpha composited on white, as to_rgb does
    arr = project.add_image(np.zeros((16, 24, 3), np.uint8), name="frame")
    assert arr.name == "frame.png" and (arr.width, arr.height) == (24, 16)
    again = project.add_image(np.zeros((16, 24), np.uint8), name="frame.png")
    assert again.name == "frame_1.png"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_gives_upright_size(project, tmp_path, fmt):
    for orientation in range(1, 9):
        path = make_image(tmp_path / f"o{orientation}.{fmt.lower()}", 40, 20, orientation=orientation, fmt=fmt)
        rec = project.add_image(path)
        expected = (20, 40) if orientation >= 5 else (40, 20)
        assert (rec.width, rec.height) == expected, orientation
        assert (rec.width, rec.height) == to_rgb(path).size, orientation  # the frame boxes refer to


def test_exif_rotated_jpeg_bounds_boxes_and_masks(project, tmp_path):
    rec = project.add_image(make_image(tmp_path / "r.jpg", 40, 20, orientation=6))
    assert (rec.width, rec.height) == (20, 40)
    (obj,) = project.edit_objects(rec.id, new=[ObjectState("cat", (-5, -5, 100, 100), mask=rle(40, 20))])
    assert obj.box == (0.0, 0.0, 20.0, 40.0)
    with pytest.raises(ProjectError, match=r"\[40, 20\]"):
        project.edit_objects(rec.id, new=[ObjectState("cat", (0, 0, 5, 5), mask=rle(20, 40))])


def test_bad_image_files_raise_image_error(project, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageError, match="empty file"):
        project.add_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="could not read the image .*text.jpg"):
        project.add_image(tmp_path / "text.jpg")
    with pytest.raises(ImageError, match="could not read .*missing.jpg"):
        project.add_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="only 4x4 pixels"):
        project.add_image(make_image(tmp_path / "tiny.png", 4, 4))
    with pytest.raises(ImageError, match="got int"):
        project.add_image(42)
    with pytest.raises(ProjectError, match="plain file name"):
        project.add_image(make_image(tmp_path / "ok.png"), name="../escape.png")
    assert project.images() == []
    assert [p.name for p in (project.path / "images").iterdir()] == []


def test_add_images_stops_at_first_bad_after_committing_the_good(project, tmp_path):
    good = [make_image(tmp_path / f"g{k}.png", seed=k) for k in range(2)]
    (tmp_path / "bad.png").write_text("not an image")
    later = make_image(tmp_path / "later.png")
    assert [r.name for r in project.add_images(good)] == ["g0.png", "g1.png"]
    with pytest.raises(ImageError, match=r"bad.png.*the 1 image\(s\) before it were added") as info:
        project.add_images([make_image(tmp_path / "g2.png"), tmp_path / "bad.png", later])
    assert [r.name for r in info.value.added] == ["g2.png"]
    assert [r.name for r in project.images()] == ["g0.png", "g1.png", "g2.png"]


def test_status_filter_and_validation(project, image, tmp_path):
    other = project.add_image(make_image(tmp_path / "b.jpg"))
    project.set_status(other.id, "skipped")
    assert [r.id for r in project.images(status="skipped")] == [other.id]
    assert [r.id for r in project.images(status="unlabeled")] == [image.id]
    with pytest.raises(ProjectError, match="unknown status 'done'.*reviewed"):
        project.set_status(image.id, "done")
    with pytest.raises(ProjectError, match="unknown status"):
        project.images(status="done")
    with pytest.raises(ProjectError, match="unknown order 'size'"):
        project.images(order="size")
    with pytest.raises(ProjectError, match="no image with id 999"):
        project.set_status(999, "reviewed")


def test_confidence_order_least_confident_first(project, tmp_path):
    recs = {n: project.add_image(make_image(tmp_path / f"{n}.png")) for n in ("a", "b", "c", "d")}
    project.replace_model_objects(recs["a"].id, [{"box": (0, 0, 5, 5), "class_name": "cat", "score": 0.9},
                                                  {"box": (0, 0, 5, 5), "class_name": "cat", "score": 0.6}])
    project.replace_model_objects(recs["c"].id, [{"box": (0, 0, 5, 5), "class_name": "dog", "score": 0.3}])
    project.edit_objects(recs["d"].id, new=[ObjectState("cat", (0, 0, 5, 5), score=0.01)])  # manual objects do not count
    ordered = project.images(order="confidence")
    assert [r.name for r in ordered] == ["c.png", "a.png", "b.png", "d.png"]
    assert [r.min_score for r in ordered] == [pytest.approx(0.3), pytest.approx(0.6), None, None]
    assert [r.num_objects for r in ordered] == [1, 2, 0, 1]
    assert [r.name for r in project.images(order="name")] == ["a.png", "b.png", "c.png", "d.png"]


# -- objects ---------------------------------------------------------------------------------------


def test_a_new_object_is_validated_and_clipped(project, image):
    box = np.array([-3.0, 2.5, 50.0, 10.0], np.float32)
    (obj,) = project.edit_objects(image.id, new=[ObjectState("Cat", box, score=np.float32(0.25))])
    assert obj.box == (0.0, 2.5, 40.0, 10.0) and obj.class_name == "cat" and obj.score == 0.25
    assert obj.source == "manual" and obj.mask is None and obj.image_id == image.id
    bad = {
        (0, 0, 10): "4 numbers",
        (0, 0, "10", 10): "4 numbers",
        (0, 0, float("nan"), 10): "finite",
        (10, 0, 5, 10): "x0 < x1",
        (0, 10, 5, 10): "y0 < y1",
        (100, 100, 200, 200): "outside the 40x20 image",
    }
    for box, message in bad.items():
        with pytest.raises(ProjectError, match=message):
            project.edit_objects(image.id, new=[ObjectState("cat", box)])
    with pytest.raises(ProjectError, match=r"unknown class 'horse'; the project's classes are \['cat', 'dog'\]"):
        project.replace_model_objects(image.id, [{"box": (0, 0, 5, 5), "class_name": "horse", "score": 0.5}])
    with pytest.raises(ProjectError, match="unknown source"):
        project.edit_objects(image.id, new=[ObjectState("cat", (0, 0, 5, 5), source="human")])
    with pytest.raises(ProjectError, match="finite number"):
        project.edit_objects(image.id, new=[ObjectState("cat", (0, 0, 5, 5), score=float("inf"))])
    with pytest.raises(ProjectError, match="no image with id 12345"):
        project.edit_objects(12345, new=[ObjectState("cat", (0, 0, 5, 5))])
    assert project.objects(image.id) == [obj]


def test_masks_are_validated_stored_and_returned(project, image):
    mask = {"size": [20, 40], "counts": "PPa0j0"}
    (obj,) = project.edit_objects(image.id, new=[ObjectState("cat", (0, 0, 5, 5), mask=mask)])
    assert obj.mask == mask and project.objects(image.id)[0].mask == mask
    pycocotools = {"size": (20, 40), "counts": b"PPa0j0"}
    (as_bytes,) = project.edit_objects(image.id, new=[ObjectState("cat", (0, 0, 5, 5), mask=pycocotools)])
    assert as_bytes.mask == mask  # what pycocotools returns, stored as the same string
    for bad, message in [([1, 2], "COCO RLE dict"), ({"size": [20, 40]}, "COCO RLE dict"),
                         ({"size": [40, 20], "counts": "x"}, r"not the image's \[height, width\] = \[20, 40\]"),
                         ({"size": [20, 40], "counts": 7}, "counts must be")]:
        with pytest.raises(ProjectError, match=message):
            project.edit_objects(image.id, new=[ObjectState("cat", (0, 0, 5, 5), mask=bad)])


def test_an_edit_sets_an_objects_state_or_deletes_it(project, image):
    (obj,) = project.edit_objects(image.id, new=[ObjectState("cat", (0, 0, 5, 5), 0.7, "model", rle(20, 40))])

    def edit(**changes) -> ObjectRecord:
        (now,) = project.objects(image.id)
        project.edit_objects(image.id, {obj.id: replace(ObjectState.of(now), **changes)}, expect=[now])
        (after,) = project.objects(image.id)
        return after

    assert edit() == obj
    scored = edit(score=0.2)
    assert scored.score == 0.2 and scored.source == "model" and scored.mask == obj.mask
    moved = edit(box=(1, 1, 60, 8), source="manual")  # a person's correction (the canvas says so)
    assert moved.box == (1.0, 1.0, 40.0, 8.0) and moved.source == "manual"
    unmasked = edit(mask=None, class_name="dog", score=None)
    assert (unmasked.mask, unmasked.class_name, unmasked.score) == (None, "dog", None)
    with pytest.raises(ProjectError, match="x0 < x1"):
        edit(class_name="horse", box=(9, 0, 2, 2))
    assert project.objects(image.id) == [unmasked] and "horse" not in project.classes  # the refused edit changed nothing
    with pytest.raises(ProjectError, match="that box is gone"):
        project.edit_objects(image.id, {999: replace(ObjectState.of(obj), score=0.1)})
    project.edit_objects(image.id, {obj.id: None})
    assert project.objects(image.id) == []
    with pytest.raises(ProjectError, match="that box is gone"):
        project.edit_objects(image.id, {obj.id: None})


def test_replace_model_objects(project, image):
    (manual,) = project.edit_objects(image.id, new=[ObjectState("dog", (0, 0, 9, 9))])
    first = project.replace_model_objects(image.id, [{"box": (0, 0, 5, 5), "class_name": "cat", "score": 0.8}],
                                          run={"prompt": "cat . dog .", "box_threshold": 0.35})
    assert project.image(image.id).status == "auto"
    assert project.last_run(image.id) == {"prompt": "cat . dog .", "box_threshold": 0.35}
    second = project.replace_model_objects(image.id, [
        {"box": (1, 1, 6, 6), "class_name": "dog", "score": 0.4, "mask": rle(20, 40)},
        {"box": (2, 2, 7, 7), "class_name": "cat", "score": 0.9},
    ], run={"prompt": "dog ."})
    objects = project.objects(image.id)
    assert objects == [manual, *second]
    assert first[0].id not in {o.id for o in objects}
    assert [o.source for o in second] == ["model", "model"] and second[0].mask == rle(20, 40)
    assert project.last_run(image.id) == {"prompt": "dog ."}

    project.set_status(image.id, "reviewed")
    project.replace_model_objects(image.id, [], run=None)
    assert project.image(image.id).status == "reviewed"
    assert project.objects(image.id) == [manual]
    assert project.last_run(image.id) is None


def test_replace_model_objects_is_all_or_nothing(project, image):
    before = project.replace_model_objects(image.id, [{"box": (0, 0, 5, 5), "class_name": "cat", "score": 0.8}],
                                           run={"prompt": "cat ."})
    bad_batches = [
        ([{"box": (0, 0, 5, 5), "class_name": "cat", "score": 0.5}, {"box": (0, 0, 5, 5), "class_name": "horse", "score": 0.5}],
         "unknown class 'horse'"),
        ([{"box": (0, 0, 5, 5), "class_name": "cat"}], "keys box, class_name, score"),
        ([{"box": (0, 0, 5, 5), "class_name": "cat", "score": None}], "need a score"),
    ]
    for objects, message in bad_batches:
        with pytest.raises(ProjectError, match=message):
            project.replace_model_objects(image.id, objects, run={"prompt": "x"})
    with pytest.raises(ProjectError, match="JSON-able"):
        project.replace_model_objects(image.id, [], run={"threshold": object()})
    assert project.objects(image.id) == before
    assert project.last_run(image.id) == {"prompt": "cat ."}


def test_settings(project):
    assert project.setting("missing") is None
    assert project.setting("missing", 3) == 3
    project.set_setting("thresholds", {"box": 0.35, "text": 0.25})
    project.set_setting("thresholds", {"box": 0.3})
    project.set_setting("prompt", "cat . dog .")
    assert project.setting("thresholds") == {"box": 0.3}
    assert project.setting("prompt") == "cat . dog ."
    with pytest.raises(ProjectError, match="JSON-able"):
        project.set_setting("bad", {1, 2})
    with pytest.raises(ProjectError, match="non-empty string"):
        project.set_setting("", 1)


def test_stats(project, image, tmp_path):
    other = project.add_image(make_image(tmp_path / "b.png"))
    project.replace_model_objects(image.id, [{"box": (0, 0, 5, 5), "class_name": "cat", "score": 0.5}] * 3)
    project.edit_objects(other.id, new=[ObjectState("cat", (0, 0, 5, 5))])
    project.set_status(other.id, "reviewed")
    assert project.stats() == {
        "images": 2, "objects": 4,
        "status": {"unlabeled": 0, "auto": 1, "reviewed": 1, "skipped": 0},
        "classes": {"cat": 4, "dog": 0}, "phrases": {},
    }


def test_one_project_shared_by_threads(project, image):
    def work(k):
        for _ in range(25):
            project.edit_objects(image.id, new=[ObjectState("cat", (k, 0, k + 5, 5))])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(project.objects(image.id)) == 100
    assert project.stats()["classes"]["cat"] == 100


# -- schema migrations -----------------------------------------------------------------------------


def make_v1_project(directory, image_path):
    """A project as the first schema version left it, with data in it."""
    (directory / "images").mkdir(parents=True)
    db = sqlite3.connect(directory / "project.sqlite")
    for sql in MIGRATIONS[0]:
        db.execute(sql)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO classes (name, position) VALUES ('cat', 0), ('dog', 1)")
    db.execute("INSERT INTO images (name, path, copied, width, height, status) VALUES ('a.png', ?, 0, 40, 20, 'auto')",
               (str(image_path),))
    db.execute("INSERT INTO objects (image_id, class_id, x0, y0, x1, y1, score, source) VALUES (1, 2, 1, 2, 3, 4, 0.4, 'model')")
    db.execute("INSERT INTO settings (key, value) VALUES ('prompt', '\"cat .\"')")
    db.commit()
    db.close()


def test_open_migrates_a_version_1_project(tmp_path):
    src = make_image(tmp_path / "a.png")
    make_v1_project(tmp_path / "old", src)
    with Project.open(tmp_path / "old") as p:
        assert p.schema_version == len(MIGRATIONS) > 1
        assert p.classes == ["cat", "dog"]
        (img,) = p.images(order="confidence")
        assert (img.name, img.path, img.status, img.min_score, img.num_objects) == ("a.png", src, "auto", 0.4, 1)
        (obj,) = p.objects(img.id)
        assert (obj.class_name, obj.box, obj.score, obj.source) == ("dog", (1.0, 2.0, 3.0, 4.0), 0.4, "model")
        assert p.setting("prompt") == "cat ."
        assert p.last_run(img.id) is None
        p.replace_model_objects(img.id, [], run={"prompt": "dog ."})  # the runs table came with migration 2
        assert p.last_run(img.id) == {"prompt": "dog ."}
    indices = {row[0] for row in sqlite3.connect(tmp_path / "old" / "project.sqlite").execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "objects_by_image_source_score" in indices and "objects_by_image" not in indices


def test_failed_migration_leaves_the_project_unchanged(tmp_path, monkeypatch):
    make_v1_project(tmp_path / "old", make_image(tmp_path / "a.png"))
    broken = ("CREATE TABLE half_done (x)", "CREATE TABLE oops (")
    monkeypatch.setattr(schema, "MIGRATIONS", (MIGRATIONS[0], MIGRATIONS[1], broken))
    with pytest.raises(ProjectError, match="migration 3 failed.*unchanged"):
        Project.open(tmp_path / "old")
    db = sqlite3.connect(tmp_path / "old" / "project.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "runs" not in tables and "half_done" not in tables
    db.close()
    monkeypatch.undo()
    with Project.open(tmp_path / "old") as p:
        assert p.schema_version == len(MIGRATIONS)


# -- crash safety ----------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    from gdino.store import ObjectState, Project

    project = Project.open(sys.argv[1])
    image_id = int(sys.argv[2])
    mask = {"size": [20, 40], "counts": "x" * 20000}  # several pages per commit, so kills land mid-write
    print("ready", flush=True)
    for k in range(1_000_000):
        (obj,) = project.edit_objects(image_id, new=[ObjectState("cat", (k % 30, 1, 35, 15), 0.5, mask=mask)])
        print(obj.id, flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_write_loses_nothing_committed(tmp_path):
    with Project.create(tmp_path / "proj", ["cat"]) as p:
        image_id = p.add_image(make_image(tmp_path / "a.png")).id
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "proj"), str(image_id)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    committed = []
    try:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        while len(committed) < 300:
            line = child.stdout.readline()
            assert line.endswith("\n"), child.stderr.read()
            committed.append(int(line))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    committed += [int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]

    with Project.open(tmp_path / "proj") as p:
        stored = {o.id for o in p.objects(image_id)}
    assert set(committed) <= stored
    assert len(stored) - len(committed) <= 1  # at most the write in flight, committed but not yet printed
    db = sqlite3.connect(tmp_path / "proj" / "project.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.close()


def test_an_edit_is_one_transaction(tmp_path):
    import numpy as np

    with Project.create(tmp_path / "p", classes=["cat"]) as p:
        image = p.add_image(np.zeros((20, 30, 3), dtype=np.uint8))
        added = p.edit_objects(image.id, new=[ObjectState("cat", (1, 1, 5, 5)), ObjectState("cat", (2, 2, 9, 9), 0.5)])
        assert [o.source for o in added] == ["manual", "manual"] and p.image(image.id).status == "auto"
        with pytest.raises(ProjectError, match="x0 < x1"):
            p.edit_objects(image.id, new=[ObjectState("dog", (1, 1, 5, 5)), ObjectState("cat", (5, 5, 1, 1))])
        assert len(p.objects(image.id)) == 2 and p.classes == ["cat"]  # the failed call added nothing, not even "dog"


# -- free-text phrases: labels outside the class list until a person maps them -------------------------


def test_found_phrases_stay_out_of_the_class_list(project, image):
    found = project.replace_model_objects(image.id, [
        {"box": (0, 0, 5, 5), "class_name": "a cat sitting", "score": 0.8},
        {"box": (1, 1, 6, 6), "class_name": "Cat", "score": 0.7},  # a phrase that names a class is that class
    ], phrases=["a cat sitting", "Cat"])
    assert project.classes == ["cat", "dog"]
    assert project.phrases == ["a cat sitting"]
    assert [(o.class_name, o.phrase) for o in found] == [("a cat sitting", True), ("cat", False)]
    assert project.stats()["classes"] == {"cat": 1, "dog": 0}
    assert project.stats()["phrases"] == {"a cat sitting": 1}
    # a re-run that no longer finds the phrase leaves no phrase behind
    project.replace_model_objects(image.id, [{"box": (0, 0, 5, 5), "class_name": "the red", "score": 0.8}],
                                  phrases=["the red"])
    assert project.phrases == ["the red"] and project.classes == ["cat", "dog"]


def test_mapping_a_phrase_moves_its_objects_into_a_class(project, image, tmp_path):
    other = project.add_image(make_image(tmp_path / "b.png"))
    for img in (image, other):
        project.replace_model_objects(img.id, [{"box": (0, 0, 5, 5), "class_name": "a cat sitting", "score": 0.8}],
                                      phrases=["a cat sitting"])
    assert project.map_phrase("a cat sitting", "CAT") == 2  # an existing class, matched case-insensitively
    assert project.phrases == [] and project.classes == ["cat", "dog"]
    assert {o.class_name for img in (image, other) for o in project.objects(img.id)} == {"cat"}
    assert all(o.source == "model" and o.score == 0.8 for o in project.objects(image.id))  # nothing else changes

    project.replace_model_objects(image.id, [{"box": (0, 0, 5, 5), "class_name": "the red couch", "score": 0.6}],
                                  phrases=["the red couch"])
    assert project.map_phrase("the red couch", "couch") == 1  # a new class
    assert project.classes == ["cat", "dog", "couch"] and project.phrases == []
    with pytest.raises(ProjectError, match="not a phrase"):
        project.map_phrase("cat", "dog")
    with pytest.raises(ProjectError, match="not a phrase"):
        project.map_phrase("nothing like it", "dog")


def test_adding_a_class_named_like_a_phrase_maps_the_phrase(project, image):
    project.replace_model_objects(image.id, [{"box": (0, 0, 5, 5), "class_name": "remote", "score": 0.8}],
                                  phrases=["remote"])
    assert project.add_classes(["Remote"]) == ["Remote"]
    assert project.classes == ["cat", "dog", "Remote"] and project.phrases == []
    assert [(o.class_name, o.phrase) for o in project.objects(image.id)] == [("Remote", False)]


def test_class_edits_never_touch_phrases(project, image):
    project.replace_model_objects(image.id, [{"box": (0, 0, 5, 5), "class_name": "a dog", "score": 0.8}],
                                  phrases=["a dog"])
    project.set_classes(["dog", "bird"])  # drops the unused class cat; the phrase is not a class to drop
    assert project.classes == ["dog", "bird"] and project.phrases == ["a dog"]
    with pytest.raises(ProjectError, match="unknown class"):
        project.rename_class("a dog", "hound")
    with pytest.raises(ProjectError, match="unknown class"):
        project.merge_class("a dog", "dog")  # map_phrase does that
    (found,) = project.objects(image.id)
    project.edit_objects(image.id, {found.id: replace(ObjectState.of(found), class_name="bird")})  # maps that one object
    assert project.phrases == [] and project.classes == ["dog", "bird"]


def test_a_version_4_project_keeps_its_classes_when_migrated(tmp_path):
    path = tmp_path / "old"
    (path / "images").mkdir(parents=True)
    db = sqlite3.connect(path / "project.sqlite")
    for statements in MIGRATIONS[:4]:
        for sql in statements:
            db.execute(sql)
    db.execute("PRAGMA user_version = 4")
    db.execute("INSERT INTO classes (name, position) VALUES ('a cat sitting', 0)")
    db.commit()
    db.close()
    with Project.open(path) as p:
        assert p.schema_version == len(MIGRATIONS) and p.classes == ["a cat sitting"] and p.phrases == []


def test_a_reference_larger_than_any_readable_image_is_refused(project):
    """A result row or a caller may claim any size for an object-store image; the store takes only what gdino could
    have decoded (processing.MAX_PIXELS), so no export or mask of that image can ask for gigabytes."""
    from gdino.processing import MAX_PIXELS

    with pytest.raises(ProjectError, match="larger than gdino reads"):
        project.add_reference("s3://b/huge.png", 100_000, 100_000)
    assert project.images() == []
    side = int(MAX_PIXELS ** 0.5)
    assert project.add_reference("s3://b/big.png", side, side).width == side


@pytest.mark.parametrize("given, stored", [("a\nb.png", "a_b.png"), ("tab\there.png", "tab_here.png"),
                                           ("c\x01d\x7f.png", "c_d_.png"), ("evil\u202egnp.exe.png", "evil_gnp.exe.png"),
                                           ("line\u2028sep.png", "line_sep.png"), ("ok café 🐱.png", "ok café 🐱.png")])
def test_an_image_name_holds_no_control_characters(project, tmp_path, given, stored):
    """A name from a zip, a COCO file or a URI key may hold line breaks, control or direction characters; the
    stored name (also the file's name in images/, and a line of exported lists) has '_' for each."""
    assert project.add_image(make_image(tmp_path / "a.png"), name=given).name == stored


def test_the_store_and_dataset_files_agree_on_a_box_outside_the_image(project, image):
    """One rule (gdino.checks.clipped): a box the store refuses as outside the image is the box an import refuses."""
    from gdino import checks
    from gdino.formats.validate import DatasetError, on_image

    for box in [(-5, -5, 0, 10), (40, 0, 50, 5), (0, 20, 5, 30), (-1, -1, 0.5, 0.5), (39, 19, 41, 21), (-10, -10, 100, 100)]:
        outside = checks.clipped(box, 40, 20) is None
        try:
            on_image(box, "a box", 40, 20)
            refused_by_import = False
        except DatasetError:
            refused_by_import = True
        try:
            project.edit_objects(image.id, new=[ObjectState("cat", box)])
            refused_by_store = False
        except ProjectError as err:
            assert "outside the 40x20 image" in str(err)
            refused_by_store = True
        assert outside == refused_by_import == refused_by_store, box
