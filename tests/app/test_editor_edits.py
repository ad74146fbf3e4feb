"""Issue 25 in the edit protocol (ui/edits.py) on a real project file: a move keeps the box's size and stops at
the image's edge, and a person's brush and eraser strokes survive later SAM clicks (SAM gets the current mask as
its mask prompt where it takes one), through moves, resizes and undo / redo."""

import numpy as np
import pytest
from PIL import Image
from test_edits import H, W, block, image_id, send
from test_mask_edits import brute_stroke
from tiny_sam import make_tiny_sam

from gdino.masks import mask_to_rle, rle_to_mask
from gdino.sam.segmenter import Segmenter
from gdino.store import ObjectState, Project


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def project(tmp_path, photo):
    with Project.create(tmp_path / "proj", ["cat", "dog"]) as p:
        p.add_image(photo)
        yield p


def stored(project, obj):
    return next(o for o in project.objects(image_id(project)) if o.id == obj.id)


def test_a_plain_box_moved_past_the_edge_stops_there_with_its_size(project):
    (obj,) = project.edit_objects(image_id(project), new=[ObjectState("cat", (10.0, 10.0, 49.5, 30.25))])
    send(project, kind="move", object_id=obj.id, dx=100.0, dy=-3.5)
    assert stored(project, obj).box == (W - 39.5, 6.5, W, 26.75)
    send(project, kind="move", object_id=obj.id, dx=-500.0, dy=500.0)
    assert stored(project, obj).box == (0, H - 20.25, 39.5, H)
    before = stored(project, obj)
    assert send(project, kind="move", object_id=obj.id, dx=-5.0, dy=7.0).selected == obj.id  # at the corner already
    assert stored(project, obj) == before and project.history(image_id(project)) == (True, False)


def test_a_masked_box_moves_by_whole_pixels_up_to_the_edge(project):
    mask = block(12, 28, 12, 48)
    (obj,) = project.edit_objects(image_id(project), new=[ObjectState("cat", (10.0, 10.0, 50.0, 30.0), mask=mask_to_rle(mask))])
    send(project, kind="move", object_id=obj.id, dx=55.6, dy=-40.2)
    moved = stored(project, obj)
    assert moved.box == (W - 40, 0, W, 20)  # dx 30, dy -10: box and mask together
    assert np.array_equal(rle_to_mask(moved.mask), block(2, 18, W - 38, W - 2))
    send(project, kind="undo")
    assert stored(project, obj) == obj


def fake_sam(answer, calls=None):
    """SAM with a mask prompt: records (points, labels, box, mask) and answers `answer`."""
    def segment(points, labels, box, mask):
        if calls is not None:
            calls.append((points.tolist(), labels.tolist(), box, None if mask is None else mask.copy()))
        return answer.copy()
    return segment


def test_brushed_pixels_stay_in_and_erased_ones_out_across_clicks(project):
    iid = image_id(project)
    calls = []
    first = block(10, 40, 10, 40)
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (5.0, 5.0, 45.0, 45.0), score=0.9, source="model")])
    send(project, fake_sam(first, calls), kind="click", object_id=obj.id, x=20, y=20, positive=True, class_name="cat")
    assert calls[-1][3] is None  # no mask yet: no mask prompt
    brush, rub = [[50.0, 20.0], [60.0, 20.0]], [[25.0, 15.0], [25.0, 30.0]]
    send(project, kind="stroke", object_id=obj.id, points=brush, radius=3.0, erase=False, class_name="cat")
    send(project, kind="stroke", object_id=obj.id, points=rub, radius=2.0, erase=True, class_name="cat")
    painted, erased = brute_stroke(H, W, brush, 3.0), brute_stroke(H, W, rub, 2.0)
    before = stored(project, obj)
    assert np.array_equal(rle_to_mask(before.mask), (first | painted) & ~erased)
    assert before.clicks["points"] == [[20, 20, True]]  # the strokes keep the clicks

    # SAM answers the whole box again: the erased pixels stay out, the brushed ones (outside its answer) in
    send(project, fake_sam(first, calls), kind="click", object_id=obj.id, x=30, y=35, positive=True, class_name="cat")
    after = stored(project, obj)
    assert np.array_equal(rle_to_mask(after.mask), (first | painted) & ~erased)
    assert after.clicks["points"] == [[20, 20, True], [30, 35, True]]
    points, labels, box, prompt = calls[-1]
    assert points == [[20, 20], [30, 35]] and labels == [1, 1] and box == (5.0, 5.0, 45.0, 45.0)
    assert np.array_equal(prompt, rle_to_mask(before.mask))  # the current mask as the mask prompt
    send(project, kind="undo")
    assert stored(project, obj) == before
    send(project, kind="redo")
    assert stored(project, obj) == after

    # a later brush over an erased spot wins over the eraser there, and the reverse
    send(project, kind="stroke", object_id=obj.id, points=[[25.0, 20.0]], radius=1.5, erase=False, class_name="cat")
    send(project, kind="stroke", object_id=obj.id, points=[[55.0, 20.0]], radius=1.5, erase=True, class_name="cat")
    send(project, fake_sam(np.zeros((H, W), bool)), kind="click", object_id=obj.id, x=30, y=30, positive=False,
         class_name="cat")
    spot, hole = brute_stroke(H, W, [[25.0, 20.0]], 1.5), brute_stroke(H, W, [[55.0, 20.0]], 1.5)
    assert np.array_equal(rle_to_mask(stored(project, obj).mask), ((painted & ~hole) | spot))


def test_strokes_move_with_the_box_and_a_resize_keeps_those_inside(project):
    iid = image_id(project)
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (10.0, 10.0, 40.0, 40.0),
                                                        mask=mask_to_rle(block(10, 40, 10, 40)))])
    send(project, kind="stroke", object_id=obj.id, points=[[20.0, 20.0]], radius=3.0, erase=True, class_name="cat")
    send(project, kind="stroke", object_id=obj.id, points=[[35.0, 35.0]], radius=2.0, erase=False, class_name="cat")
    send(project, kind="move", object_id=obj.id, dx=5.0, dy=-2.0)
    moved = stored(project, obj)
    assert moved.box == (15, 8, 45, 38) and moved.clicks["box"] == [15, 8, 45, 38]
    hole = brute_stroke(H, W, [[25.0, 18.0]], 3.0)
    assert np.array_equal(rle_to_mask(moved.clicks["removed"]), hole)
    send(project, fake_sam(block(0, H, 0, W)), kind="click", object_id=obj.id, x=30, y=30, positive=True,
         class_name="cat")
    assert not (rle_to_mask(stored(project, obj).mask) & hole).any()
    send(project, kind="resize", object_id=obj.id, box=[15, 8, 30, 38])
    resized = stored(project, obj)
    assert resized.clicks["points"] == [] and resized.clicks["box"] == [15, 8, 30, 38]
    assert np.array_equal(rle_to_mask(resized.clicks["removed"]), hole) and "added" not in resized.clicks


def test_a_segmenter_without_a_mask_prompt_still_keeps_the_strokes(project):
    iid = image_id(project)
    (obj,) = project.edit_objects(iid, new=[ObjectState("cat", (5.0, 5.0, 45.0, 45.0))])
    send(project, kind="stroke", object_id=obj.id, points=[[60.0, 50.0]], radius=3.0, erase=False, class_name="cat")

    def three(points, labels, box):  # the app's (points, labels, box) before it passes a mask prompt
        return block(10, 20, 10, 20)
    send(project, three, kind="click", object_id=obj.id, x=15, y=15, positive=True, class_name="cat")
    assert np.array_equal(rle_to_mask(stored(project, obj).mask),
                          block(10, 20, 10, 20) | brute_stroke(H, W, [[60.0, 50.0]], 3.0))


def test_a_brushed_object_keeps_its_strokes_through_real_sam_clicks(project, photo):
    """The tiny SAM of segment-anything, with the current mask as its mask prompt."""
    iid = image_id(project)
    seg = Segmenter(make_tiny_sam())
    pixels = np.asarray(Image.open(photo).convert("RGB"))

    def segment(points, labels, box, mask):
        return seg.refine(pixels, points=points, labels=labels, box=box, mask=mask).mask
    stroke = [[20.0, 30.0], [60.0, 30.0]]
    send(project, kind="stroke", object_id=None, points=stroke, radius=4.0, erase=False, class_name="dog")
    (obj,) = project.objects(iid)
    rub = [[40.0, 20.0], [40.0, 40.0]]
    send(project, kind="stroke", object_id=obj.id, points=rub, radius=2.0, erase=True, class_name="dog")
    for x, y, positive in ((30, 30, True), (50, 30, False), (25, 28, True)):
        send(project, segment, kind="click", object_id=obj.id, x=x, y=y, positive=positive, class_name="dog")
    final = stored(project, obj)
    mask = rle_to_mask(final.mask)
    painted, erased = brute_stroke(H, W, stroke, 4.0), brute_stroke(H, W, rub, 2.0)
    assert (mask >= painted & ~erased).all() and not (mask & erased).any()
    assert [p[2] for p in final.clicks["points"]] == [True, False, True]
