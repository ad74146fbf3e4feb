"""Undo across images (issue 25, item 2): the project's journal of removed images and classes, re-detection that
keeps what a person decided, and real processes killed at each step of a removal and its undo and redo."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gdino.masks import mask_to_rle
from gdino.store import TRASH_DIR, ObjectState, Project, history

ROOT = Path(__file__).resolve().parents[2]


def rle(box, shape=(40, 60)):
    m = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return mask_to_rle(m)


def table(project, name, where="1"):
    with project._read() as db:
        return db.execute(f"SELECT * FROM {name} WHERE {where} ORDER BY rowid").fetchall()


def everything(project):
    """Every row of every table that holds labels, and every image file's bytes."""
    rows = {t: table(project, t) for t in ("images", "objects", "classes", "edits", "runs", "sources", "rejected",
                                           "removed")}
    files = {r.name: r.path.read_bytes() for r in project.images() if r.path is not None}
    return rows, files


@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "p", ["cat", "dog"])
    a = p.add_image(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8), name="a.png", key="src/a")
    p.add_image(np.zeros((40, 60, 3), np.uint8), name="b.png")
    p.replace_model_objects(a.id, [{"box": (1, 1, 20, 20), "class_name": "cat", "score": 0.9, "mask": rle((1, 1, 20, 20))},
                                   {"box": (30, 5, 50, 30), "class_name": "dog", "score": 0.6}], run={"prompt": "x"})
    first = p.objects(a.id)[0]
    p.edit_objects(a.id, {first.id: None}, expect=[first])  # a rejected model box
    p.edit_objects(a.id, new=[ObjectState("dog", (5, 5, 9, 9), source="manual")])
    yield p
    p.close()


def ids(project):
    return {r.name: r.id for r in project.images()}


def test_a_removed_image_comes_back_whole_from_any_image_and_goes_again_on_redo(project):
    before = everything(project)
    a, b = ids(project)["a.png"], ids(project)["b.png"]
    file = project.image(a).path
    project.remove_images([a])
    assert not project.has_image(a) and not file.exists()
    assert project.removed_keys(["src/a"]) == {"src/a"}
    assert project.history(b) == (True, False)  # b has no edits: its Ctrl+Z takes the removal
    assert project.next_step(b, undo=True) == "the removal of 1 image(s): 'a.png'"
    assert project.undo(b)
    assert everything(project) == before
    assert not list((project.path / TRASH_DIR).iterdir())  # the trash held it only while removed
    assert project.redo(b) and not project.has_image(a) and not file.exists()
    assert project.undo(b) and everything(project) == before
    assert project.undo(a) and len(project.objects(a)) == 1  # then a's own history, older than the removal: the add
    assert project.undo(a) and len(project.objects(a)) == 2  # and the delete, undone


def test_a_restored_image_whose_name_and_key_were_taken_meanwhile(project, tmp_path):
    a = ids(project)["a.png"]
    objects = project.objects(a)
    project.remove_images([a])
    other = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 7, np.uint8)).save(other)
    taken = project.add_image(other, key="src/a")  # the same name and key again, other pixels
    assert project.undo(taken.id)  # taken has no history: its Ctrl+Z takes the removal
    back = project.image(a)
    assert back.name == "a_1.png" and back.path.name == "a_1.png" and project.objects(a) == objects
    assert project.image_by_key("src/a").id == taken.id  # the key stays with the image that took it
    assert project.image(taken.id).path.read_bytes() == other.read_bytes()


def test_a_new_change_drops_what_was_undone(project):
    a, b = ids(project)["a.png"], ids(project)["b.png"]
    project.remove_images([a])
    project.undo(b)
    project.edit_objects(b, new=[ObjectState("cat", (1, 1, 5, 5))])
    assert project.history(b) == (True, False)  # the removal's redo went
    project.undo(b)
    assert project.history(b) == (False, True)  # and the removal, done before the edit, is not undone again


def test_a_class_deleted_with_its_objects_comes_back_with_every_object(project):
    a, b = ids(project)["a.png"], ids(project)["b.png"]
    project.edit_objects(b, new=[ObjectState("dog", (2, 2, 8, 8), mask=rle((2, 2, 8, 8)))])
    classes, before = project.classes, everything(project)
    project.remove_class("dog", delete_objects=True)
    assert project.classes == ["cat"] and project.objects(b) == []
    project.edit_objects(b, new=[ObjectState("cat", (1, 1, 5, 5))])  # newer than the removal, on b
    project.undo(b)  # b's own edit first
    assert "dog" not in project.classes
    assert project.next_step(b, undo=True) == "the deletion of the class 'dog' with 3 object(s)"
    project.undo(b)
    assert project.classes == classes and everything(project)[0]["objects"] == before[0]["objects"]
    project.redo(a)
    assert project.classes == ["cat"]
    project.undo(a)
    assert project.classes == classes and everything(project)[0]["objects"] == before[0]["objects"]


def test_a_new_run_leaves_out_what_a_person_decided_and_is_one_undoable_edit(project):
    a = ids(project)["a.png"]
    decided = project.objects(a)  # the dog model box, a manual dog; the cat model box was deleted
    run = [{"box": (1, 1, 20, 21), "class_name": "cat", "score": 0.9},  # the deleted one again: left out
           {"box": (1, 1, 20, 21), "class_name": "dog", "score": 0.5},  # another label there: kept
           {"box": (5, 5, 9, 10), "class_name": "dog", "score": 0.5},  # over the manual box: left out
           {"box": (30, 5, 50, 30), "class_name": "dog", "score": 0.7}]  # replaces the model box
    new = project.replace_model_objects(a, run)
    assert [(o.class_name, o.box) for o in new] == [("dog", (1, 1, 20, 21)), ("dog", (30, 5, 50, 30))]
    assert project.undo(a) and project.objects(a) == decided  # the run, undone
    assert project.undo(a) and project.undo(a)  # the manual box's add, then the delete, undone
    assert project.replace_model_objects(a, run[:1])  # with the delete undone, the box is found again
    assert [o.class_name for o in project.objects(a) if o.source == "model"] == ["cat"]


def test_a_changed_model_box_is_not_found_again(project):
    a = ids(project)["a.png"]
    dog = next(o for o in project.objects(a) if o.source == "model")
    project.edit_objects(a, {dog.id: ObjectState("cat", (32, 5, 52, 30), source="manual")}, expect=[dog])
    new = project.replace_model_objects(a, [{"box": dog.box, "class_name": "dog", "score": 0.6}])
    assert new == []


def test_the_journal_keeps_its_newest_entries_and_their_files(project, monkeypatch):
    monkeypatch.setattr(history, "JOURNAL_LIMIT", 2)
    for k in range(4):
        image = project.add_image(np.full((16, 16, 3), k, np.uint8), name=f"x{k}.png")
        project.remove_images([image.id])
    assert len(list((project.path / TRASH_DIR).iterdir())) == 2
    b = ids(project)["b.png"]
    assert project.undo(b) and project.undo(b) and not project.undo(b)
    assert sorted(r.name for r in project.images()) == ["a.png", "b.png", "x2.png", "x3.png"]


CHILD = """
import os, signal, sys
from gdino.store import Project, history
from gdino.store.files import Files

stage, folder = sys.argv[1], sys.argv[2]
def die():
    os.kill(os.getpid(), signal.SIGKILL)

def then_die(fn):
    def run(*args, **kwargs):
        fn(*args, **kwargs)
        die()
    return run

if stage == "remove-before-commit":
    history.journal_add = then_die(history.journal_add)  # the files linked into the trash, not committed
elif stage in ("remove-after-commit", "redo-after-commit"):
    Files.unlink_unreferenced = lambda self, files: die()  # committed, the file still in images/
elif stage in ("undo-before-commit", "redo-before-commit"):
    history.journal_mark = then_die(history.journal_mark)  # undo: the file linked back, not committed
elif stage == "undo-after-commit":
    Files.drop_trash = lambda self, entries: die()  # committed, the trash not emptied
p = Project.open(folder)
names = {r.name: r.id for r in p.images()}
if stage.startswith("remove"):
    p.remove_images([names["a.png"]])
elif stage.startswith("undo"):
    p.undo(names["b.png"])
else:
    p.redo(names["b.png"])
"""


@pytest.mark.parametrize("stage", ["remove-before-commit", "remove-after-commit", "undo-before-commit",
                                   "undo-after-commit", "redo-before-commit", "redo-after-commit"])
def test_a_process_killed_at_any_step_of_a_removal_loses_nothing(project, stage):
    whole = everything(project)
    a, b = ids(project)["a.png"], ids(project)["b.png"]
    if stage.startswith(("undo", "redo")):
        project.remove_images([a])
    if stage.startswith("redo"):
        project.undo(b)
    project.close()
    proc = subprocess.run([sys.executable, "-c", CHILD, stage, str(project.path)], cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Project.open(project.path) as again:
        with again._read() as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not again.has_image(a):  # removed (the kill came after a removal's commit, or before an undo's)
            assert again.undo(b)  # Ctrl+Z brings it back whole
        assert everything(again) == whole
        again.remove_images([a])  # and it goes and comes back as often as asked
        assert again.undo(b) and again.redo(b) and again.undo(b) and everything(again) == whole
        leftovers = [p.name for p in (again.path / "images").iterdir()]
        assert sorted(leftovers) == ["a.png", "b.png"]  # an orphan copy was reused, not doubled


def test_a_removal_that_need_not_be_undone_frees_the_disk(project):
    a, b = ids(project)["a.png"], ids(project)["b.png"]
    file = project.image(a).path
    project.remove_images([a], undoable=False)
    assert not file.exists() and not (project.path / TRASH_DIR).exists()
    assert project.history(b) == (False, False)
