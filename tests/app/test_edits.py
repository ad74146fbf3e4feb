"""The canvas's edit protocol (ui/edits.py) on a real project file: every edit kind, what it does to masks
and SAM clicks, undo / redo (also after reopening the project), and refusals in the page's words."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from test_mask_edits import brute_stroke

from gdino.masks import mask_to_rle, rle_to_mask
from gdino.store import ObjectState, Project, ProjectError, history
from ui import edits
from ui.edits import EditError, parse

H, W = 60, 80


@pytest.fixture
def project(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    with Project.create(tmp_path / "proj", ["cat", "dog"]) as p:
        p.add_image(path)
        yield p


def image_id(project):
    return project.images()[0].id


def send(project, segment=None, **payload):
    payload.setdefault("image_id", image_id(project))
    return edits.apply(project, parse(payload), segment)


def block(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_add_then_undo_and_redo(project):
    iid = image_id(project)
    result = send(project, kind="add", box=[30, 40, 10, 5], class_name="dog")  # corners in any order
    (obj,) = project.objects(iid)
    assert result.selected == obj.id and obj.box == (10, 5, 30, 40) and obj.source == "manual"
    assert project.image(iid).status == "auto"  # drawn by hand: labeled
    assert project.history(iid) == (True, False)
    send(project, kind="undo")
    assert project.objects(iid) == [] and project.image(iid).status == "unlabeled"
    assert project.history(iid) == (False, True)
    send(project, kind="redo")
    assert project.objects(iid) == [obj] and project.image(iid).status == "auto"
    assert send(project, kind="redo").message == "nothing to redo"


def test_a_moved_box_takes_its_mask_and_clicks_along(project):
    iid = image_id(project)
    mask = block(10, 20, 15, 30)
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (15, 10, 30, 20), 0.8, "model", mask_to_rle(mask))])
    send(project, kind="move", object_id=obj.id, dx=10.4, dy=-5.6)
    (moved,) = project.objects(iid)
    assert moved.box == (25, 4, 40, 14)  # whole pixels: the same offset as the mask
    assert np.array_equal(rle_to_mask(moved.mask), block(4, 14, 25, 40))
    assert moved.score == 0.8 and moved.source == "manual"
    (plain,) = project.edit_objects(iid, new=[ObjectState("dog", (0, 0, 5, 5))])
    send(project, kind="move", object_id=plain.id, dx=1.25, dy=2.5)  # no mask: exact
    assert project.objects(iid)[1].box == (1.25, 2.5, 6.25, 7.5)


def test_a_resized_box_keeps_the_mask_inside_it(project):
    iid = image_id(project)
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (15, 10, 30, 20), mask=mask_to_rle(block(10, 20, 15, 30)))])
    send(project, kind="resize", object_id=obj.id, box=[15, 10, 22, 20])
    (resized,) = project.objects(iid)
    assert resized.box == (15, 10, 22, 20) and np.array_equal(rle_to_mask(resized.mask), block(10, 20, 15, 22))


def test_delete_and_undo_restore_everything(project):
    iid = image_id(project)
    (a,) = project.edit_objects(iid, new=[ObjectState("cat", (1, 1, 9, 9), 0.4, "model", mask_to_rle(block(1, 9, 1, 9)))])
    (b,) = project.edit_objects(iid, new=[ObjectState("dog", (20, 20, 30, 30))])
    send(project, kind="delete", object_ids=[a.id, b.id])
    assert project.objects(iid) == []
    send(project, kind="undo")
    assert project.objects(iid) == [a, b]  # the same ids, scores, sources and masks


def test_relabel_adds_a_new_class_and_maps_a_phrase_object(project):
    iid = image_id(project)
    project.replace_model_objects(iid, [{"box": (1, 1, 9, 9), "class_name": "a red couch", "score": 0.5}],
                                  phrases=["a red couch"])
    (obj,) = project.objects(iid)
    send(project, kind="relabel", object_ids=[obj.id], class_name="couch")
    (relabeled,) = project.objects(iid)
    assert (relabeled.class_name, relabeled.phrase, relabeled.source) == ("couch", False, "manual")
    assert project.classes == ["cat", "dog", "couch"] and project.phrases == []
    send(project, kind="undo")
    assert project.objects(iid) == [obj] and project.phrases == ["a red couch"]


def test_brush_and_eraser_store_the_stroke_rasterized(project):
    iid = image_id(project)
    stroke = [[10.2, 10.7], [30.5, 22.1], [50.0, 21.0]]
    result = send(project, kind="stroke", object_id=None, points=stroke, radius=3.0, erase=False, class_name="cat")
    (obj,) = project.objects(iid)
    painted = brute_stroke(H, W, stroke, 3.0)
    assert result.selected == obj.id and np.array_equal(rle_to_mask(obj.mask), painted)
    ys, xs = np.nonzero(painted)
    assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    rub = [[30.0, 10.0], [30.0, 40.0]]
    send(project, kind="stroke", object_id=obj.id, points=rub, radius=2.0, erase=True, class_name="cat")
    (erased,) = project.objects(iid)
    assert np.array_equal(rle_to_mask(erased.mask), painted & ~brute_stroke(H, W, rub, 2.0))
    assert erased.box == obj.box  # a box never shrinks by erasing


class FakeSam:
    """Records what SAM was asked; answers a disc around the last positive click."""

    def __init__(self):
        self.calls = []

    def __call__(self, points, labels, box):
        self.calls.append((points.tolist(), labels.tolist(), box))
        x, y = points[labels == 1][-1]
        yy, xx = np.mgrid[:H, :W]
        return (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= 25


def test_clicks_chain_on_the_selected_object_and_undo_removes_one(project):
    iid = image_id(project)
    sam = FakeSam()
    first = send(project, sam, kind="click", object_id=None, x=20, y=20, positive=True, class_name="dog")
    (obj,) = project.objects(iid)
    assert first.selected == obj.id and obj.class_name == "dog" and obj.clicks["points"] == [[20, 20, True]]
    assert sam.calls[-1] == ([[20, 20]], [1], None)
    send(project, sam, kind="click", object_id=obj.id, x=40, y=30, positive=True, class_name="dog")
    send(project, sam, kind="click", object_id=obj.id, x=22, y=22, positive=False, class_name="dog")
    assert sam.calls[-1] == ([[20, 20], [40, 30], [22, 22]], [1, 1, 0], None)
    (obj,) = project.objects(iid)
    assert len(obj.clicks["points"]) == 3 and len(project.objects(iid)) == 1
    send(project, kind="undo")
    assert project.objects(iid)[0].clicks["points"] == [[20, 20, True], [40, 30, True]]
    # a box from a model run: its clicks are prompted with the box
    (boxed,) = project.edit_objects(iid, new=[ObjectState("cat", (50, 5, 70, 25), score=0.9, source="model")])
    send(project, sam, kind="click", object_id=boxed.id, x=60, y=15, positive=True, class_name="cat")
    assert sam.calls[-1] == ([[60, 15]], [1], (50, 5, 70, 25))
    refined = project.objects(iid)[-1]
    assert refined.box == (50, 5, 70, 25) and refined.mask is not None and refined.source == "manual"


def test_clicks_without_sam_say_so(project):
    with pytest.raises(ProjectError, match="start the app with --sam"):
        send(project, kind="click", object_id=None, x=20, y=20, positive=True, class_name="dog")


def test_undo_and_redo_work_after_reopening(project, tmp_path):
    iid = image_id(project)
    send(project, kind="add", box=[1, 1, 10, 10], class_name="cat")
    send(project, kind="add", box=[20, 20, 30, 30], class_name="dog")
    send(project, kind="undo")
    project.close()
    with Project.open(tmp_path / "proj") as again:
        assert again.history(iid) == (True, True)
        edits.apply(again, parse({"kind": "redo", "image_id": iid}))
        assert [o.class_name for o in again.objects(iid)] == ["cat", "dog"]
        edits.apply(again, parse({"kind": "undo", "image_id": iid}))
        edits.apply(again, parse({"kind": "undo", "image_id": iid}))
        assert again.objects(iid) == [] and again.history(iid) == (False, True)


def test_a_new_edit_drops_what_was_undone(project):
    iid = image_id(project)
    send(project, kind="add", box=[1, 1, 10, 10], class_name="cat")
    send(project, kind="undo")
    send(project, kind="add", box=[20, 20, 30, 30], class_name="dog")
    assert project.history(iid) == (True, False)


def test_a_model_run_is_one_more_entry_and_a_conflict_clears_the_history_with_a_message(project):
    iid = image_id(project)
    send(project, kind="add", box=[1, 1, 10, 10], class_name="cat")
    project.replace_model_objects(iid, [{"box": (5, 5, 15, 15), "class_name": "dog", "score": 0.7}])
    assert project.history(iid) == (True, False)  # the run is one more entry; the history before it stays (issue 25)
    obj = project.objects(iid)[-1]
    send(project, kind="move", object_id=obj.id, dx=1, dy=1)
    with project._write() as db:  # another writer changes the object without an entry
        db.execute("UPDATE objects SET x0 = 0 WHERE id = ?", (obj.id,))
    with pytest.raises(ProjectError, match="changed by something else"):
        send(project, kind="undo")
    assert project.history(iid) == (False, False)


def test_an_object_changed_meanwhile_is_not_overwritten(project):
    iid = image_id(project)
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (1, 1, 10, 10))])
    stale = project.objects(iid)
    project.edit_objects(iid, {obj.id: replace(ObjectState.of(obj), box=(2, 2, 12, 12))})
    with pytest.raises(ProjectError, match="changed meanwhile"):
        project.edit_objects(iid, {obj.id: None}, expect=stale)
    assert project.objects(iid)[0].box == (2, 2, 12, 12)


def test_history_is_capped_per_image(project, monkeypatch):
    monkeypatch.setattr(history, "LIMIT", 3)
    iid = image_id(project)
    for k in range(5):
        send(project, kind="add", box=[k, k, k + 5, k + 5], class_name="cat")
    for _ in range(3):
        send(project, kind="undo")
    assert len(project.objects(iid)) == 2 and send(project, kind="undo").message == "nothing to undo"


@pytest.mark.parametrize("payload, message", [
    ("add", "not an edit"),
    ({"kind": "add", "image_id": "1", "box": [0, 0, 1, 1], "class_name": "cat"}, "no valid image id"),
    ({"kind": "add", "image_id": 1, "box": [0, 0, 1], "class_name": "cat"}, "four corners"),
    ({"kind": "add", "image_id": 1, "box": [0, 0, float("nan"), 1], "class_name": "cat"}, "not a number"),
    ({"kind": "add", "image_id": 1, "box": [0, 0, 1, 1], "class_name": " "}, "choose a class"),
    ({"kind": "delete", "image_id": 1, "object_ids": []}, "select the boxes"),
    ({"kind": "stroke", "image_id": 1, "object_id": None, "points": [[1, 2, 3]], "radius": 2, "erase": False,
      "class_name": "cat"}, r"\[x, y\] pairs"),
    ({"kind": "stroke", "image_id": 1, "object_id": None, "points": [[1, 2]] * 20_001, "radius": 2, "erase": False,
      "class_name": "cat"}, "1 to 20000 points"),
    ({"kind": "stroke", "image_id": 1, "object_id": None, "points": [[1, 2]], "radius": 0, "erase": False,
      "class_name": "cat"}, "brush size"),
    ({"kind": "click", "image_id": 1, "object_id": None, "x": 1, "y": 2, "positive": 1, "class_name": "cat"},
     "no valid positive"),
    ({"kind": "rotate", "image_id": 1}, "unknown edit"),
    ({"kind": "move", "image_id": 1, "object_id": 2**63, "dx": 1, "dy": 1}, "no valid object id"),
    ({"kind": "move", "image_id": 1, "object_id": 1, "dx": 1e300, "dy": 1}, "far outside the picture"),
    ({"kind": "stroke", "image_id": 1, "object_id": None, "points": [[1, 2]], "radius": 501, "erase": False,
      "class_name": "cat"}, "between 0 and 500 pixels"),
    # a natural drag across a big photo with the largest brush: 4 px steps, 2000 points -> refused up front
    ({"kind": "stroke", "image_id": 1, "object_id": None, "points": [[4 * k, 4 * k] for k in range(2000)],
      "radius": 500, "erase": False, "class_name": "cat"}, "too large to paint at once"),
])
def test_bad_payloads_are_refused_in_the_pages_words(payload, message):
    with pytest.raises(EditError, match=message):
        parse(payload)


def test_an_edit_of_a_box_that_is_gone_says_so(project):
    with pytest.raises(ProjectError, match="that box is gone"):
        send(project, kind="move", object_id=12345, dx=1, dy=1)


def test_several_boxes_are_relabeled_at_once(project):
    iid = image_id(project)
    ids = [project.edit_objects(iid, new=[ObjectState("cat", (k * 10, 0, k * 10 + 8, 8))])[0].id for k in range(3)]
    send(project, kind="relabel", object_ids=ids[:2], class_name="bird")  # a new class, two boxes
    assert [o.class_name for o in project.objects(iid)] == ["bird", "bird", "cat"]
    send(project, kind="relabel", object_ids=ids, class_name="Dog")
    assert [o.class_name for o in project.objects(iid)] == ["dog", "dog", "dog"]


@pytest.mark.parametrize("kind", ["relabel", "delete"])
def test_redo_after_an_undo_that_brought_a_phrase_back(project, kind):
    iid = image_id(project)
    project.replace_model_objects(iid, [{"box": (1, 1, 9, 9), "class_name": "red car", "score": 0.5}],
                                  phrases=["red car"])
    (obj,) = project.objects(iid)
    payload = {"kind": "relabel", "object_ids": [obj.id], "class_name": "cat"} if kind == "relabel" else \
        {"kind": "delete", "object_ids": [obj.id]}
    send(project, **payload)
    assert project.phrases == []  # the phrase went with its last object
    send(project, kind="undo")
    assert [(o.class_name, o.phrase) for o in project.objects(iid)] == [("red car", True)]
    send(project, kind="redo")  # the phrase came back as a new row: still the same label
    send(project, kind="undo")
    assert [(o.class_name, o.phrase) for o in project.objects(iid)] == [("red car", True)]
    assert project.history(iid) == (True, True)  # the model run before it is an entry too


def test_undo_after_the_class_was_removed_and_redo(project):
    iid = image_id(project)
    send(project, kind="add", box=[1, 1, 10, 10], class_name="bird")
    (obj,) = project.objects(iid)
    send(project, kind="delete", object_ids=[obj.id])
    project.remove_class("bird")
    send(project, kind="undo")  # the box comes back, and its class with it
    assert [o.class_name for o in project.objects(iid)] == ["bird"] and "bird" in project.classes
    send(project, kind="redo")
    send(project, kind="undo")
    send(project, kind="undo")
    assert project.objects(iid) == [] and project.history(iid) == (False, True)


def test_edits_that_change_nothing_keep_the_redo(project):
    iid = image_id(project)
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (10, 10, 30, 30), mask=mask_to_rle(block(10, 30, 10, 30)))])
    send(project, kind="move", object_id=obj.id, dx=5, dy=0)
    send(project, kind="undo")
    for payload in ({"kind": "move", "object_id": obj.id, "dx": 0, "dy": 0},
                    {"kind": "resize", "object_id": obj.id, "box": list(obj.box)},
                    {"kind": "relabel", "object_ids": [obj.id], "class_name": "cat"}):
        send(project, **payload)
    assert project.history(iid) == (True, True) and project.objects(iid) == [obj]  # the add undoable, the redo kept


def test_a_box_resized_off_its_mask_has_no_mask(project):
    iid = image_id(project)
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (10, 10, 30, 30), mask=mask_to_rle(block(10, 20, 10, 20)))])
    send(project, kind="resize", object_id=obj.id, box=[22, 22, 30, 30])
    assert project.objects(iid)[0].mask is None


def test_a_payload_is_read_whole_into_one_value():
    """ui/payload.py: every field of a canvas payload read once; what is wrong is kept (never raised), the view's
    fault before the edit's, and the edit's place in its window's order is read even then (its turn must end)."""
    from ui.payload import CanvasPayload, ViewError, parse_payload

    order = {"window": "window-0001", "seq": 3, "prev": 2}
    good = parse_payload({"kind": "move", "image_id": 7, "object_id": 1, "dx": 2, "dy": 0, **order, "base": 5,
                          "seen": [[1, "0123456789abcdef"]]})
    assert isinstance(good, CanvasPayload) and good.refused is None
    assert (good.seq, good.image_id, good.order) == (3, 7, ("window-0001", 3, 2))
    assert good.edit == edits.Move(7, 1, 2.0, 0.0) and good.seen.revs == {1: "0123456789abcdef"} and good.seen.base == 5
    plain = parse_payload({"kind": "undo", "image_id": 7})  # a page that names no window: not checked, no turn
    assert plain.seen is None and plain.order is None and plain.edit == edits.Undo(7)
    view = parse_payload({"kind": "nonsense", "image_id": 7, **order, "base": 5, "seen": "all"})
    assert isinstance(view.refused, ViewError) and view.edit is None and view.order == ("window-0001", 3, 2)
    edit = parse_payload({"kind": "nonsense", "image_id": 7})
    assert isinstance(edit.refused, EditError) and "unknown edit" in str(edit.refused) and edit.image_id == 7
    assert parse_payload({"kind": "undo", "image_id": True}).image_id is None  # a bool is no id
    assert isinstance(parse_payload([1, 2]).refused, EditError) and parse_payload("x").image_id is None


@pytest.mark.parametrize("payload", [
    {"kind": "move", "dx": 5, "dy": 3},
    {"kind": "resize", "box": [2, 2, 30, 30]},
    {"kind": "relabel", "class_name": "dog"},
    {"kind": "delete"},
    {"kind": "stroke", "points": [[40, 30]], "radius": 3, "erase": False, "class_name": "cat"},
])
def test_an_edit_reads_its_objects_once_inside_its_transaction(project, monkeypatch, payload):
    """The objects an edit changes are read once, in the edit's own transaction (so the write compares nothing
    again), and the guard sees them there."""
    (obj,) = project.edit_objects(image_id(project), new=[ObjectState("cat", (10, 10, 40, 40))])
    inside, reads, expects, guarded = [False], [], [], []
    real_batch, real_objects, real_edit = project.batch, project.objects, project.edit_objects

    def batch():
        cm = real_batch()

        class Held:
            def __enter__(self):
                cm.__enter__()
                inside[0] = True

            def __exit__(self, *exc):
                inside[0] = False
                return cm.__exit__(*exc)
        return Held()

    def objects(iid):
        reads.append(inside[0])
        return real_objects(iid)

    def edit_objects(*args, **kwargs):
        expects.append(kwargs.get("expect", ()))
        return real_edit(*args, **kwargs)
    monkeypatch.setattr(project, "batch", batch)
    monkeypatch.setattr(project, "objects", objects)
    monkeypatch.setattr(project, "edit_objects", edit_objects)
    key = "object_ids" if payload["kind"] in ("relabel", "delete") else "object_id"
    payload = {**payload, key: [obj.id] if key == "object_ids" else obj.id, "image_id": image_id(project)}
    edits.apply(project, parse(payload), guard=lambda current: guarded.append((inside[0], set(current))))
    assert reads == [True] and guarded == [(True, {obj.id})] and expects == [()]
