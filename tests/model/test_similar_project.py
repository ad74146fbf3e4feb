"""Find similar across the project (gdino.labeling.similar): the exemplars of one image carried to the others as
SAM 3 prompt tokens, what is found stored by the overlap rule, one edit per image; reviewed and skipped images
left alone; a stop between images; a second run adds nothing new. A real project file, the tiny SAM 3;
expected objects come from the detector called directly, not from the run."""

import numpy as np
import pytest
from PIL import Image
from sam3_models import save_tiny_sam3

import gdino
from gdino.labeling.similar import new_ones, similar_in_project, similar_targets
from gdino.sources import read_image
from gdino.store import ObjectState, Project, ProjectError


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    return gdino.Detector.from_pretrained(str(save_tiny_sam3(tmp_path_factory.mktemp("sam3"), confident=True)),
                                          device="cpu")


def project_of(tmp_path, n=4):
    folder = tmp_path / "in"
    folder.mkdir()
    project = Project.create(tmp_path / "proj")
    ids = []
    for i in range(n):
        p = folder / f"im{i}.png"
        Image.fromarray(np.random.default_rng(20 + i).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(p)
        ids.append(project.add_image(p).id)
    return project, ids


def read_of(project):
    return lambda image_id: read_image(project.image(image_id).location)


def test_a_run_adds_what_the_carried_exemplars_find_and_leaves_decided_images(det, tmp_path):
    project, (source, a, b, c) = project_of(tmp_path)
    (cup,) = project.edit_objects(source, new=[ObjectState("cup", (20, 30, 70, 90))])
    (pen,) = project.edit_objects(source, new=[ObjectState("pen", (90, 20, 150, 100))])
    project.set_status(c, "reviewed")
    read = read_of(project)
    targets = similar_targets(project, source)
    assert targets == [a, b]  # not the source, not the reviewed one
    summary = similar_in_project(project, det, source, [cup.id], [pen.id], targets, read)
    prompt = det.exemplar_prompt(read(source), [cup.box, pen.box], [True, False])
    total = 0
    for image_id in (a, b):
        found = det.detect_like(read(image_id), prompt, class_name="cup")
        keep = new_ones(found.xyxy, found.confidence, [])
        stored = project.objects(image_id)
        assert len(stored) == len(keep)
        for o, k in zip(sorted(stored, key=lambda o: -o.score), keep, strict=True):
            assert o.class_name == "cup" and o.source == "model" and o.mask is not None
            assert np.allclose(o.box, found.xyxy[k], atol=1e-3)
        total += len(keep)
        if keep:
            assert project.image(image_id).status == "auto"
    assert total > 0 and summary.objects == total and summary.searched == [a, b] and not summary.cancelled
    assert project.objects(c) == [] and len(project.objects(source)) == 2
    # a second run finds the same things: all of them are boxed already
    again = similar_in_project(project, det, source, [cup.id], [pen.id], targets, read)
    assert again.objects == 0 and again.left_out >= total
    # one undo on an image takes back what the run added there
    project.undo(a)
    assert project.objects(a) == []
    project.close()


def test_a_stop_between_images_and_bad_exemplars(det, tmp_path):
    project, (source, a, b, _) = project_of(tmp_path)
    cup, pen = project.edit_objects(source, new=[ObjectState("cup", (20, 30, 70, 90)), ObjectState("pen", (90, 20, 150, 100))])
    calls = []
    summary = similar_in_project(project, det, source, [cup.id], [], [a, b], read_of(project),
                                 should_stop=lambda: len(calls) >= 1, progress=calls.append)
    assert summary.cancelled and summary.searched == [a] and project.objects(b) == []
    with pytest.raises(ProjectError, match="one class"):
        similar_in_project(project, det, source, [cup.id, pen.id], [], [a], read_of(project))
    with pytest.raises(ProjectError, match="gone"):
        similar_in_project(project, det, source, [cup.id + 100], [], [a], read_of(project))
    project.close()


def test_a_run_is_not_a_persons_edit_skips_images_decided_meanwhile_and_never_brings_back_a_deleted_box(det, tmp_path):
    project, (source, a, b, _) = project_of(tmp_path)
    (cup,) = project.edit_objects(source, new=[ObjectState("cup", (20, 30, 70, 90))])
    read = read_of(project)
    targets = similar_targets(project, source)
    project.set_status(b, "reviewed")  # after the targets were chosen: a person reviews b while the run goes
    summary = similar_in_project(project, det, source, [cup.id], [], targets, read)
    assert summary.kept == [b]
    assert project.objects(b) == [] and project.image(b).status == "reviewed"
    found_on_a = project.objects(a)
    assert found_on_a, "the tiny model must find something on a for this test to mean anything"
    assert not project.person_edited(a)  # a background run's entry, not a person's (training would trust it)
    # the person deletes one found box; a second run does not bring it back
    gone = found_on_a[0]
    project.edit_objects(a, {gone.id: None})
    again = similar_in_project(project, det, source, [cup.id], [], [a], read)
    assert again.objects == 0 and all(o.box != gone.box for o in project.objects(a))
    project.close()
