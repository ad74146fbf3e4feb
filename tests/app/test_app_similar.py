"""Find similar in the app (issue 30): with a SAM 3 model, the selected boxes of a class (and Alt's
counter-examples) make SAM 3 search the picture; what it finds is stored as model objects of that class with
masks, in one edit that one undo takes back, leaving out what overlaps a box already there (gdino/labeling/similar.py).
With a Grounding DINO model the edit says which model it needs. Expected values come from our own
Sam3Detector loaded from the same folder, never from the app."""

import numpy as np
import pytest
from PIL import Image
from sam3_models import save_tiny_sam3

import gdino
from gdino.labeling.similar import SIMILAR_IOU, new_ones
from ui import actions as h
from ui.actions.models import project_detector
from ui.app_config import AppConfig
from ui.session import Sessions


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    return save_tiny_sam3(tmp_path_factory.mktemp("sam3_app"), confident=True)


def make(model, tmp_path):
    return h.make_app(AppConfig(model=str(model), sam="none", workspace=tmp_path / "ws", device="cpu"))


def project_with_one_image(app, tmp_path):
    state = Sessions.new_state()
    path = tmp_path / "up" / "photo.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
    h.add_uploads(app, state, [str(path)])
    project = app.sessions.project(state)
    return state, project, h.rows(app, state, "all")[0][0]


def edit(app, state, payload):
    value, _ = h.canvas_edit(app, state, payload)
    return value


def test_one_box_and_x_stores_the_found_objects_in_one_undoable_edit(sam3_dir, tmp_path):
    app = make(sam3_dir, tmp_path)
    try:
        state, project, image_id = project_with_one_image(app, tmp_path)
        value = edit(app, state, {"kind": "add", "image_id": image_id, "seq": 1, "box": [20, 30, 70, 90],
                                  "class_name": "cup"})
        (exemplar,) = project.objects(image_id)
        value = edit(app, state, {"kind": "similar", "image_id": image_id, "seq": 2,
                                  "positive_ids": [exemplar.id], "negative_ids": []})
        stored = project.objects(image_id)
        added = [o for o in stored if o.id != exemplar.id]
        # what our own detector finds in the same picture, less what the rule leaves out
        det = gdino.Detector.from_pretrained(str(sam3_dir), device="cpu")
        found = det.find_similar(np.asarray(Image.open(tmp_path / "up" / "photo.png").convert("RGB")),
                                 [exemplar.box], [True], class_name="cup")
        keep = new_ones(found.xyxy, found.confidence, [exemplar.box])
        assert len(added) == len(keep) > 0, value["message"]
        assert value["message"].startswith(f"found {len(keep)} more like the example")
        for o, k in zip(sorted(added, key=lambda o: -o.score), keep, strict=True):
            assert o.class_name == "cup" and o.source == "model" and o.mask is not None
            assert np.allclose(o.box, found.xyxy[k], atol=1e-3) and abs(o.score - found.confidence[k]) < 1e-6
        for o in added:  # never a duplicate of the exemplar or of each other
            others = [p.box for p in stored if p.id != o.id]
            assert all(_iou(o.box, b) < SIMILAR_IOU for b in others)
        # one undo takes every found object back, and only them
        edit(app, state, {"kind": "undo", "image_id": image_id, "seq": 3})
        assert [o.id for o in project.objects(image_id)] == [exemplar.id]
        edit(app, state, {"kind": "redo", "image_id": image_id, "seq": 4})
        assert len(project.objects(image_id)) == 1 + len(keep)
    finally:
        app.sessions.close()


def _iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_examples_of_two_classes_and_an_example_also_negative_are_refused(sam3_dir, tmp_path):
    app = make(sam3_dir, tmp_path)
    try:
        state, project, image_id = project_with_one_image(app, tmp_path)
        edit(app, state, {"kind": "add", "image_id": image_id, "seq": 1, "box": [20, 30, 70, 90], "class_name": "cup"})
        edit(app, state, {"kind": "add", "image_id": image_id, "seq": 2, "box": [90, 30, 150, 90], "class_name": "pen"})
        a, b = project.objects(image_id)
        value = edit(app, state, {"kind": "similar", "image_id": image_id, "seq": 3, "positive_ids": [a.id, b.id]})
        assert "boxes of one class" in value["message"] and len(project.objects(image_id)) == 2
        value = edit(app, state, {"kind": "similar", "image_id": image_id, "seq": 4, "positive_ids": [a.id],
                                  "negative_ids": [a.id]})
        assert "example and a counter-example" in value["message"]
        value = edit(app, state, {"kind": "similar", "image_id": image_id, "seq": 5, "positive_ids": [a.id],
                                  "negative_ids": [b.id]})  # a counter-example of another class is fine
        assert value["message"].startswith("found ")
    finally:
        app.sessions.close()


def test_with_grounding_dino_the_edit_says_which_model_it_needs(tiny_hf, tmp_path):
    app = make(tiny_hf[1], tmp_path)
    try:
        state, project, image_id = project_with_one_image(app, tmp_path)
        edit(app, state, {"kind": "add", "image_id": image_id, "seq": 1, "box": [20, 30, 70, 90], "class_name": "cup"})
        (a,) = project.objects(image_id)
        value = edit(app, state, {"kind": "similar", "image_id": image_id, "seq": 2, "positive_ids": [a.id]})
        assert "needs a SAM 3 model" in value["message"] and "choose a SAM 3 model under Model" in value["message"]
        assert len(project.objects(image_id)) == 1
    finally:
        app.sessions.close()


def test_the_overlap_rule():
    found = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # the exemplar [0,0,10,10] blocks every found box over it; the far one stays
    assert new_ones(found, scores, [[0, 0, 10, 10]]) == [2]
    # nothing there: the best of the overlapping ones stays and blocks the rest
    assert new_ones(found, scores, []) == [3, 2]


def three_images(app, tmp_path):
    state = Sessions.new_state()
    paths = []
    for i in range(3):
        p = tmp_path / "up3" / f"im{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(30 + i).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    h.add_uploads(app, state, paths)
    project = app.sessions.project(state)
    return state, project, [r[0] for r in h.rows(app, state, "all")]


def test_across_the_project_runs_as_a_job_the_job_line_shows(sam3_dir, tmp_path):
    app = make(sam3_dir, tmp_path)
    try:
        state, project, (first, *others) = three_images(app, tmp_path)
        edit(app, state, {"kind": "add", "image_id": first, "seq": 1, "box": [20, 30, 70, 90], "class_name": "cup"})
        (cup,) = project.objects(first)
        value = edit(app, state, {"kind": "similar", "image_id": first, "seq": 2, "positive_ids": [cup.id],
                                  "scope": "project"})
        assert value["message"].startswith("searching 2 other image(s)")
        job = app.jobs.wait(project.path, 120)
        assert job.state == "done", job.text()
        line = h.job_status(app, state)
        assert line.startswith("find similar (cup) in the other images: 2 / 2 image(s)") and "done" in line
        added = sum(len(project.objects(i)) for i in others)
        assert added == job.objects > 0
        assert [o.id for o in project.objects(first)] == [cup.id]  # the source image is not searched
    finally:
        app.sessions.close()


def test_cancel_stops_the_job_before_the_next_image(sam3_dir, tmp_path):
    """Deterministic: the test holds the model lock, so the job waits at its first model call; Cancel is pressed
    meanwhile; released, the job makes the prompt, sees the stop before the first image and ends cancelled."""
    app = make(sam3_dir, tmp_path)
    try:
        state, project, (first, *others) = three_images(app, tmp_path)
        edit(app, state, {"kind": "add", "image_id": first, "seq": 1, "box": [20, 30, 70, 90], "class_name": "cup"})
        (cup,) = project.objects(first)
        project_detector(app, state)  # loaded before: the job's first model call is then its prompt
        with app.jobs.model_lock:
            edit(app, state, {"kind": "similar", "image_id": first, "seq": 2, "positive_ids": [cup.id],
                              "scope": "project"})
            h.cancel_auto_label(app, state)
        job = app.jobs.wait(project.path, 120)
        assert job.state == "cancelled" and job.done == 0
        assert all(project.objects(i) == [] for i in others)
        assert "cancelled; run it again" in h.job_status(app, state)
    finally:
        app.sessions.close()


def test_across_the_project_with_grounding_dino_says_which_model_it_needs(tiny_hf, tmp_path):
    app = make(tiny_hf[1], tmp_path)
    try:
        state, project, (first, *_) = three_images(app, tmp_path)
        edit(app, state, {"kind": "add", "image_id": first, "seq": 1, "box": [20, 30, 70, 90], "class_name": "cup"})
        (cup,) = project.objects(first)
        edit(app, state, {"kind": "similar", "image_id": first, "seq": 2, "positive_ids": [cup.id], "scope": "project"})
        job = app.jobs.wait(project.path, 120)
        assert job.state == "failed" and "needs a SAM 3 model" in h.job_status(app, state)
    finally:
        app.sessions.close()


def test_the_status_line_says_sam3_is_a_batch_model_on_a_cpu(sam3_dir, tmp_path):
    app = make(sam3_dir, tmp_path)
    try:
        app.hub.detector()
        status = app.hub.status
        assert "SAM 3: boxes with its own masks (Meta's SAM License)" in status
        assert "a batch model (Auto-label), not an interactive one" in status and "deformable attention" not in status
        assert "precision: exact (float32)" in status
        assert "is not a published model" in status  # the tiny random one
    finally:
        app.sessions.close()


def test_x_again_after_deleting_a_found_box_adds_nothing_back(sam3_dir, tmp_path):
    app = make(sam3_dir, tmp_path)
    try:
        state, project, image_id = project_with_one_image(app, tmp_path)
        edit(app, state, {"kind": "add", "image_id": image_id, "seq": 1, "box": [20, 30, 70, 90], "class_name": "cup"})
        (cup,) = project.objects(image_id)
        edit(app, state, {"kind": "similar", "image_id": image_id, "seq": 2, "positive_ids": [cup.id]})
        found = [o for o in project.objects(image_id) if o.id != cup.id]
        assert found
        edit(app, state, {"kind": "delete", "image_id": image_id, "seq": 3, "object_ids": [o.id for o in found]})
        value = edit(app, state, {"kind": "similar", "image_id": image_id, "seq": 4, "positive_ids": [cup.id]})
        assert [o.id for o in project.objects(image_id)] == [cup.id]
        assert value["message"].startswith("nothing new")
    finally:
        app.sessions.close()


def test_detect_with_sam3_stores_its_masks_on_a_server_without_sam(sam3_dir, tmp_path):
    app = make(sam3_dir, tmp_path)  # --sam none: the page's Masks box is off and locked
    try:
        state, project, image_id = project_with_one_image(app, tmp_path)
        settings = h.settings_from_inputs("classes", "cat, dog", "", 0.5, 0.25, False)
        h.detect_image(app, state, image_id, settings)
        objects = project.objects(image_id)
        assert objects and all(o.mask is not None and o.source == "model" for o in objects)
    finally:
        app.sessions.close()


def test_training_a_sam3_project_is_refused_in_the_pages_words(sam3_dir, tmp_path):
    app = make(sam3_dir, tmp_path)
    try:
        state, project, image_id = project_with_one_image(app, tmp_path)
        edit(app, state, {"kind": "add", "image_id": image_id, "seq": 1, "box": [20, 30, 70, 90], "class_name": "cup"})
        project.set_status(image_id, "reviewed")
        with pytest.raises(Exception, match="training fine-tunes Grounding DINO models; this project uses SAM 3"):
            h.start_training(app, state, 1, True)
    finally:
        app.sessions.close()
