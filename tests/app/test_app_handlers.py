"""The app's actions as plain functions, with the tiny models: no browser needed."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_sam import save_tiny_sam

from gdino.prompts import PromptError
from gdino.store import ObjectState, ProjectError
from ui import actions as h
from ui.app_config import AppConfig, parse_args
from ui.session import Sessions


@pytest.fixture
def app(tiny_hf, tmp_path):
    cfg = AppConfig(model=str(tiny_hf[1]), sam=str(save_tiny_sam(tmp_path / "sam.pth")), workspace=tmp_path / "ws",
                    allow_dirs=(tmp_path / "allowed",))
    (tmp_path / "allowed").mkdir()
    application = h.make_app(cfg)
    yield application
    application.sessions.close()


def images(tmp_path, n=2, size=(120, 160)):
    paths = []
    for i in range(n):
        p = tmp_path / f"photo{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--sam", "--project", "--device", "--host", "--port", "--share", "--allow-dir"):
        assert flag in out


def test_upload_detect_and_navigate(app, tmp_path):
    state = Sessions.new_state()
    assert h.add_uploads(app, state, images(tmp_path)) == "added 2 image(s)"
    rows = h.rows(app, state, "all")
    assert [r[1] for r in rows] == ["photo0.png", "photo1.png"] and {r[2] for r in rows} == {"unlabeled"}
    first = h.current_image(app, state)
    settings = h.settings_from_inputs("classes", "cat, remote control", "", 0.2, 0.25, True)
    assert h.detect_image(app, state, first, settings).startswith("found")
    value, info = h.view_image(app, state, first)
    assert (value["width"], value["height"]) == (160, 120) and len(value["objects"]) > 0
    with Image.open(value["image"]["path"]) as picture:  # the file the canvas shows: upright, full size
        assert picture.size == (160, 120)
    assert value["image"]["meta"] == {"_type": "gradio.FileData"}
    assert {o["class_name"] for o in value["objects"]} <= {"cat", "remote control"}
    assert [c["name"] for c in value["classes"]] == app.sessions.project(state).classes
    assert "status **auto**" in info and "running on" in app.hub.status
    state["image_id"] = first
    assert h.step(app, state, "all", +1) != first and h.step(app, state, "all", -1) != first


def test_untrained_model_is_said_plainly(app, tmp_path):
    app.hub.detector()
    assert "is not a published model" in app.hub.status


def test_bad_uploads_are_refused_with_a_message(app, tmp_path):
    state = Sessions.new_state()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"garbage")
    message = h.add_uploads(app, state, [str(text), str(broken), *images(tmp_path, 1)])
    assert message.startswith("added 1 image(s)") and "notes.txt: not an image" in message and "broken.jpg" in message
    with pytest.raises(ProjectError, match="no files"):
        h.add_uploads(app, state, [])


def test_empty_prompt_and_empty_export(app):
    state = Sessions.new_state()
    with pytest.raises(PromptError, match="no classes"):
        h.settings_from_inputs("classes", "  ", "", 0.3, 0.25, False)
    with pytest.raises(PromptError, match="prompt is empty"):
        h.settings_from_inputs("free text", "", " ", 0.3, 0.25, False)
    with pytest.raises(ProjectError, match="nothing to export"):
        h.export(app, state, "coco", False)


def edit(app, state, image_id, **payload):
    value, shown = h.canvas_edit(app, state, {"image_id": image_id, "seq": 1, **payload})
    assert shown == image_id
    return value


def test_canvas_edits_are_applied_and_answered_with_the_new_state(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    project.add_classes(["cat", "dog"])
    (a,) = project.edit_objects(image_id, new=[ObjectState("cat", (10, 10, 50, 50), score=0.9, source="model")])
    value = edit(app, state, image_id, kind="move", object_id=a.id, dx=2, dy=0)
    assert value["objects"][0]["box"] == [12, 10, 52, 50] and value["seq"] == 1 and value["can_undo"]
    value = edit(app, state, image_id, kind="add", box=[100, 5, 150, 40], class_name="bird")
    new = value["objects"][1]
    assert value["selected"] == new["id"] and new["class_name"] == "bird" and "bird" in project.classes
    value = edit(app, state, image_id, kind="relabel", object_ids=[a.id], class_name="dog")
    assert [o["class_name"] for o in value["objects"]] == ["dog", "bird"]
    value = edit(app, state, image_id, kind="delete", object_ids=[new["id"]])
    assert [o["id"] for o in value["objects"]] == [a.id]
    value = edit(app, state, image_id, kind="undo")
    assert [o["id"] for o in value["objects"]] == [a.id, new["id"]] and value["can_redo"]
    refused = edit(app, state, image_id, kind="move", object_id=999, dx=1, dy=1)
    assert "that box is gone" in refused["message"] and len(refused["objects"]) == 2  # nothing changed


def test_a_payload_naming_another_projects_objects_changes_nothing(app, tmp_path):
    a, b = Sessions.new_state(), Sessions.new_state()
    h.add_uploads(app, a, images(tmp_path, 1))
    h.add_uploads(app, b, images(tmp_path, 1))
    mine, theirs = h.current_image(app, a), h.current_image(app, b)
    assert mine == theirs  # ids are per project: the same number names an image in each
    project_b = app.sessions.project(b)
    project_b.add_classes(["cat"])
    (obj,) = project_b.edit_objects(theirs, new=[ObjectState("cat", (1, 1, 9, 9))])
    for payload in ({"kind": "delete", "image_id": theirs, "object_ids": [obj.id]},
                    {"kind": "relabel", "image_id": theirs, "object_ids": [obj.id], "class_name": "dog"},
                    {"kind": "delete", "image_id": 12345, "object_ids": [obj.id]}, "junk"):
        value, _ = h.canvas_edit(app, a, payload)
        assert value["message"] and value["objects"] == []
    assert project_b.objects(theirs) == [obj]


def test_canvas_masks_reach_the_page_as_a_palette_overlay(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    app.sessions.project(state).add_classes(["cat"])
    value = edit(app, state, image_id, kind="stroke", object_id=None, points=[[20, 20], [60, 30]], radius=4.0,
                 erase=False, class_name="cat")
    (obj,) = value["objects"]
    assert obj["has_mask"] and value["selected"] == obj["id"]
    with Image.open(value["overlay"]["path"]) as overlay:
        assert overlay.mode == "P" and overlay.size == (160, 120)
        index = np.asarray(overlay)
    from gdino.masks import rle_to_mask
    assert np.array_equal(index == 1, rle_to_mask(app.sessions.project(state).objects(image_id)[0].mask))
    moved = edit(app, state, image_id, kind="move", object_id=obj["id"], dx=5, dy=0)
    assert moved["overlay"]["path"] != value["overlay"]["path"]  # a new file per change of the masks
    same = edit(app, state, image_id, kind="relabel", object_ids=[obj["id"]], class_name="dog")
    assert same["overlay"]["path"] == moved["overlay"]["path"]  # masks unchanged: the same file


def test_review_skip_and_least_confident_order(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 3))
    ids = [r[0] for r in h.rows(app, state, "all")]
    project = app.sessions.project(state)
    project.add_classes(["cat"])
    project.replace_model_objects(ids[0], [{"box": (1, 1, 9, 9), "class_name": "cat", "score": 0.9}])
    project.replace_model_objects(ids[1], [{"box": (1, 1, 9, 9), "class_name": "cat", "score": 0.4}])
    assert [r[0] for r in h.rows(app, state, "least confident first")][:2] == [ids[1], ids[0]]
    h.set_status(app, state, ids[2], "skipped")
    assert [r[0] for r in h.rows(app, state, "skipped")] == [ids[2]]
    h.set_status(app, state, ids[0], "reviewed")
    assert [r[0] for r in h.rows(app, state, "reviewed")] == [ids[0]]


def test_sam_clicks_chain_on_the_canvas(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    project.add_classes(["cat"])
    (obj,) = project.edit_objects(image_id, new=[ObjectState("cat", (20, 20, 90, 100))])
    value = edit(app, state, image_id, kind="click", object_id=obj.id, x=50, y=40, positive=True, class_name="cat")
    assert value["selected"] == obj.id and value["objects"][0]["has_mask"], value["message"]
    value = edit(app, state, image_id, kind="click", object_id=obj.id, x=30, y=30, positive=False, class_name="cat")
    assert value["objects"][0]["clicks"] == [[50, 40, True], [30, 30, False]]
    outside = edit(app, state, image_id, kind="click", object_id=obj.id, x=500, y=10, positive=True, class_name="cat")
    assert outside["message"] == "click on the picture"


def test_sessions_are_private_and_server_folders_need_allow_dir(app, tmp_path):
    a, b = Sessions.new_state(), Sessions.new_state()
    h.add_uploads(app, a, images(tmp_path, 1))
    assert h.rows(app, b, "all") == []  # another browser sees nothing of it
    with pytest.raises(ProjectError, match="outside the folders"):
        h.open_server_project(app, a, str(tmp_path / "elsewhere"))
    with pytest.raises(ProjectError, match="outside the folders"):
        h.add_server_folder(app, a, "/etc")
    folder = tmp_path / "allowed" / "shots"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "x.png")
    assert h.add_server_folder(app, a, str(folder)).startswith("added 1 image(s)")
    opened = h.open_server_project(app, a, str(tmp_path / "allowed" / "proj"))
    assert h.rows(app, opened, "all") == []
    with pytest.raises(ProjectError, match="no valid project id"):
        h.rows(app, {"token": "../../etc"}, "all")


def test_free_text_phrases_stay_phrases_until_mapped(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    project.add_classes(["pet"])
    settings = h.settings_from_inputs("free text", "", "a cat on the red couch", 0.2, 0.25, False)
    h.detect_image(app, state, image_id, settings)
    found = project.objects(image_id)
    assert found and all(o.phrase for o in found)
    assert project.classes == ["pet"]  # free text never grows the class list
    phrases = h.phrase_choices(app, state)
    assert phrases == sorted({o.class_name for o in found}) and phrases == project.phrases
    assert h.class_counts(app, state) == [["pet", 0]]
    # the export says what it left out, in the page's words
    message = h.export(app, state, "coco", False)[1]
    assert f"{len(found)} object(s) labeled with free-text phrases not mapped to a class were left out" in message
    first = phrases[0]
    count = sum(o.class_name == first for o in found)
    assert h.map_phrase(app, state, first, "pet") == f"{count} object(s) labeled {first!r} are now 'pet'"
    assert project.classes == ["pet"] and first not in project.phrases
    for phrase in project.phrases:
        h.map_phrase(app, state, phrase, "furniture")
    assert project.classes == ["pet", "furniture"] and project.phrases == []
    with pytest.raises(ProjectError, match="choose a found phrase"):
        h.map_phrase(app, state, None, "pet")
    with pytest.raises(ProjectError, match="type the class"):
        h.map_phrase(app, state, first, " ")


def test_moving_a_phrase_box_keeps_its_phrase_and_relabeling_makes_a_class(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    project.replace_model_objects(image_id, [{"box": (10, 10, 50, 50), "class_name": "a red couch", "score": 0.6},
                                             {"box": (60, 60, 100, 100), "class_name": "the man", "score": 0.5}],
                                  phrases=["a red couch", "the man"])
    couch, man = project.objects(image_id)
    edit(app, state, image_id, kind="move", object_id=couch.id, dx=2, dy=0)
    edit(app, state, image_id, kind="relabel", object_ids=[man.id], class_name="person")
    couch, man = project.objects(image_id)
    assert (couch.class_name, couch.phrase, couch.box) == ("a red couch", True, (12, 10, 52, 50))
    assert (man.class_name, man.phrase) == ("person", False)
    assert project.classes == ["person"] and project.phrases == ["a red couch"]


def test_a_failed_free_text_prompt_leaves_the_class_list_as_it_was(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    nothing = h.settings_from_inputs("free text", "", "a cat on the red couch", 1.0, 0.25, False)
    assert h.detect_image(app, state, image_id, nothing) == "found 0 object(s)"
    assert project.classes == [] and project.phrases == []


def test_prompt_is_saved_with_the_project(app):
    state = Sessions.new_state()
    h.save_prompt(app, state, "classes", "cat, dog", "", 0.4, 0.3, False)
    assert h.load_prompt(app, state)["classes_text"] == "cat, dog"


def test_examples_add_their_photo_once(app):
    state = Sessions.new_state()
    assert h.add_example(app, state, "cat.png").startswith("added the example cat.png")
    h.add_example(app, state, "cat.png")
    assert [r[1] for r in h.rows(app, state, "all")] == ["cat.png"]
    with pytest.raises(ProjectError, match="not one of the example photos"):
        h.add_example(app, state, "../../etc/passwd")


def test_space_files_list_every_runtime_dependency():
    """The Space installs requirements.txt, not pyproject: keep them in step."""
    import re
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = deps["dependencies"] + [d for d in deps["optional-dependencies"]["app"] if not d.startswith("gradio>")]
    have = {re.split(r"[<>=\[ ]", line)[0].lower() for line in (root / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert {re.split(r"[<>=\[ ]", d)[0].lower() for d in wanted} <= have
    front = (root / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front


# -- uploads: limits before storing, each file once, the visitor's own file names (issue 13/14) -----------


def _upload_copy(tmp_path, path, folder):
    """What gradio hands the handler: a copy of the visitor's file in a server folder of its own."""
    import shutil
    from pathlib import Path

    dest = tmp_path / "gradio_tmp" / folder / Path(path).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
    return str(dest)


def test_uploading_the_same_files_again_adds_each_once(app, tmp_path):
    state = Sessions.new_state()
    first = images(tmp_path, 2)
    assert h.add_uploads(app, state, [_upload_copy(tmp_path, p, "a") for p in first]) == "added 2 image(s)"
    (tmp_path / "more").mkdir()
    more = images(tmp_path / "more", 3)  # the box re-sends the first two (same content) with one new file
    again = [_upload_copy(tmp_path, p, "b") for p in first] + [_upload_copy(tmp_path, more[2], "c")]
    message = h.add_uploads(app, state, again)
    assert message.startswith("added 1 image(s); already in the project, not added again: photo0.png")
    assert len(app.sessions.project(state).images()) == 3


def test_a_zip_uploaded_twice_is_imported_once(app, tmp_path):
    import zipfile

    state = Sessions.new_state()
    zpath = tmp_path / "photos.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in images(tmp_path, 3):
            zf.write(p, f"photos/{p.rsplit('/', 1)[-1]}")
    assert h.add_uploads(app, state, [_upload_copy(tmp_path, zpath, "a")]).startswith("added 3 image(s)")
    message = h.add_uploads(app, state, [_upload_copy(tmp_path, zpath, "b")])
    assert message.startswith("added 0 image(s)") and "not added again" in message
    assert len(app.sessions.project(state).images()) == 3


def test_upload_limits_are_checked_before_anything_is_stored(tiny_hf, tmp_path):
    import zipfile

    cfg = AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / "ws", max_upload_files=3,
                    max_upload_mb=1, max_upload_total_mb=2, max_upload_members=4)
    app = h.make_app(cfg)
    state = Sessions.new_state()
    try:
        pics = images(tmp_path, 4)
        uploads = [_upload_copy(tmp_path, p, "many") for p in pics]
        with pytest.raises(ProjectError, match="4 files at once; the limit is 3"):
            h.add_uploads(app, state, uploads)
        big = tmp_path / "big.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)).save(big)  # ~1.9 MB
        with pytest.raises(ProjectError, match=r"big.png is 2 MB, more than the limit of 1 MB per file"):
            h.add_uploads(app, state, [_upload_copy(tmp_path, big, "big")])
        zips = []
        for k in range(2):  # 3 + 3 members: each zip is under the limit of 4, the upload is not
            z = tmp_path / f"part{k}.zip"
            (tmp_path / f"z{k}").mkdir()
            with zipfile.ZipFile(z, "w") as zf:
                for p in images(tmp_path / f"z{k}", 3):
                    zf.write(p, p.rsplit("/", 1)[-1])
            zips.append(_upload_copy(tmp_path, z, f"zip{k}"))
        with pytest.raises(ProjectError, match="more than 4 files in all .reached at part1.zip"):
            h.add_uploads(app, state, zips)
        project = app.sessions.project(state)
        assert project.images() == [] and not project.path.exists()  # refused before the project was made
        leftover = [p for p in (tmp_path / "gradio_tmp").rglob("*") if p.is_file()]
        assert leftover == [], "a refused upload leaves its copies on the server"
    finally:
        app.sessions.close()


def test_broken_uploads_are_named_as_the_visitor_named_them(app, tmp_path):
    state = Sessions.new_state()
    good = images(tmp_path, 1, size=(300, 400))[0]
    from pathlib import Path

    data = Path(good).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    uploads = [_upload_copy(tmp_path, p, "x") for p in (cut, empty)]
    message = h.add_uploads(app, state, uploads)
    assert message.startswith("added 0 image(s)")
    assert "cut.png: " in message and "truncated" in message and "empty.jpg: " in message and "empty" in message
    assert "gradio_tmp" not in message and str(tmp_path) not in message
    assert app.sessions.project(state).images() == []


# -- the review flow -------------------------------------------------------------------------------------


def test_hand_drawn_boxes_count_as_labeled(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 2))
    project = app.sessions.project(state)
    first, second = (r.id for r in project.images(order="name"))
    edit(app, state, first, kind="add", box=[10, 10, 60, 50], class_name="cat")
    assert project.image(first).status == "auto"
    settings = h.settings_from_inputs("classes", "cat, remote control", "", 0.2, 0.25, False)
    h.start_auto_label(app, state, settings)  # the background job (tests/app/test_app_jobs.py)
    app.jobs.wait(project.path, timeout=300)
    objects = project.objects(first)
    assert [(o.class_name, o.box, o.source) for o in objects] == [("cat", (10, 10, 60, 50), "manual")]
    assert project.image(second).status == "auto"  # the other one was auto-labeled


def test_marking_moves_to_the_next_image_within_the_filter(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 4))
    ids = [r.id for r in app.sessions.project(state).images(order="name")]
    assert h.mark_and_step(app, state, "unlabeled", ids[1], "reviewed") == ids[2]  # not back to the first
    assert h.mark_and_step(app, state, "unlabeled", ids[3], "skipped") == ids[0]  # wraps around
    assert [row[0] for row in h.rows(app, state, "unlabeled")] == [ids[0], ids[2]]


# -- broken images, classes the user owns, honest status --------------------------------------------------


def test_an_image_that_becomes_unreadable_shows_a_placeholder_and_can_be_removed(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 3))
    project = app.sessions.project(state)
    records = project.images(order="name")
    project.add_classes(["cat"])
    project.edit_objects(records[0].id, new=[ObjectState("cat", (5, 5, 40, 40))])
    data = records[0].path.read_bytes()
    records[0].path.write_bytes(data[: len(data) // 3])  # damaged on disk after it was added
    value, info = h.view_image(app, state, records[0].id)  # sorts first: the page opens on it
    with Image.open(value["image"]["path"]) as picture:  # the grey placeholder, of the image's size
        assert picture.size == (160, 120)
    assert len(value["objects"]) == 1
    assert "cannot be read" in info and "Remove image" in info
    assert [row[1] for row in h.rows(app, state, "all")] == [r.name for r in records]  # the rest still lists
    nxt, message = h.remove_image(app, state, "all", records[0].id)
    assert nxt == records[1].id and message == f"removed {records[0].name} and its 1 object(s)"
    assert [r.id for r in project.images(order="name")] == [records[1].id, records[2].id]
    assert not records[0].path.exists()


def test_a_prompt_adds_only_the_classes_it_found(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    nothing = h.settings_from_inputs("classes", "bird, truck", "", 1.0, 0.25, False)  # nothing scores above 1
    assert h.detect_image(app, state, image_id, nothing) == "found 0 object(s)"
    assert project.classes == []
    some = h.settings_from_inputs("classes", "cat, remote control, bird", "", 0.05, 0.25, False)
    h.detect_image(app, state, image_id, some)
    found = {o.class_name for o in project.objects(image_id)}
    assert found and project.classes == [c for c in ("cat", "remote control", "bird") if c in found]


def test_class_manager_renames_merges_and_deletes_with_counts(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    project = app.sessions.project(state)
    project.add_classes(["cat", "kitty", "dog"])
    for k, name in enumerate(["cat", "kitty", "kitty", "dog"]):
        project.edit_objects(image_id, new=[ObjectState(name, (k * 10, 0, k * 10 + 8, 8), score=0.5, source="model")])
    assert h.class_counts(app, state) == [["cat", 1], ["kitty", 2], ["dog", 1]]
    assert h.rename_class(app, state, "dog", "hound") == "renamed 'dog' to 'hound' (1 object(s))"
    assert h.rename_class(app, state, "kitty", "Cat") == "merged 'kitty' into 'cat': 2 object(s) moved"
    assert h.class_counts(app, state) == [["cat", 3], ["hound", 1]]
    assert {o.source for o in project.objects(image_id)} == {"model"}  # merged objects keep their source
    with pytest.raises(ProjectError, match="1 object.s. use the class 'hound'"):
        h.delete_class(app, state, "hound", False)
    assert h.delete_class(app, state, "hound", True) == "deleted the class 'hound' and its 1 object(s)"
    assert h.class_counts(app, state) == [["cat", 3]]


def test_status_says_which_model_is_missing_and_which_flag_fixes_it(tiny_hf, tmp_path):
    from gdino.ops import compiled

    app = h.make_app(AppConfig(model=str(tiny_hf[1]), sam=str(tmp_path / "no_such_sam.pth"), workspace=tmp_path / "ws"))
    try:
        problems = app.hub.check_at_start()
        assert len(problems) == 1 and "SAM is unavailable" in problems[0] and "--sam" in problems[0]
        assert "SAM unavailable, masks off" in app.hub.status and "detector" in app.hub.status
        assert not app.hub.masks_available
        assert h.load_prompt(app, Sessions.new_state())["masks"] is False  # masks default off when SAM is missing
        state = compiled._state["cpu"]
        saved = dict(state)
        try:  # the line follows the kernel build as it happens, not as it was when the model loaded
            state.update(tried=False, module=None, error=None)
            assert "being built" in app.hub.status
            state.update(tried=True, module=None, error="no C++ compiler found")
            assert "no C++ compiler found" in app.hub.status and "being built" not in app.hub.status
        finally:
            state.update(saved)
    finally:
        app.sessions.close()


# -- found by review: each reproduced first ---------------------------------------------------------------


def test_page_messages_carry_no_server_paths(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    record = app.sessions.project(state).images()[0]
    record.path.unlink()  # the file went away on the server
    settings = h.settings_from_inputs("classes", "cat", "", 0.2, 0.25, False)
    with pytest.raises(ValueError) as caught:
        h.detect_image(app, state, record.id, settings)
    assert str(app.config.workspace) in str(caught.value)  # what the library says, for the log
    shown = h.page_words(app, state, caught.value)
    assert "'photo0.png'" in shown and str(tmp_path) not in shown and "/tmp" not in shown


def test_open_projects_are_capped_but_a_job_keeps_its_own(app, tmp_path, monkeypatch):
    from ui import session

    monkeypatch.setattr(session, "MAX_OPEN", 3)
    def opened(state):  # a project exists once something is stored in it
        app.sessions.project(state).add_classes(["cat"])
        return app.sessions.project(state)

    busy = Sessions.new_state()
    kept = opened(busy)
    monkeypatch.setattr(app.sessions, "_in_use", lambda directory: directory == kept.path)
    others = [opened(Sessions.new_state()) for _ in range(6)]
    still = app.sessions.open_projects()
    assert len(still) <= 3 + 1 and kept in still and others[-1] in still
    assert kept.images() == []  # still open for its job
    with pytest.raises(ProjectError, match="closed"):
        others[0].images()  # closed; the visitor's next action opens it again
    assert app.sessions.project({"token": others[0].path.name, "opened": None, "image_id": None}).images() == []


def test_jobs_are_found_through_a_linked_workspace(tiny_hf, tmp_path):
    real = tmp_path / "real_ws"
    real.mkdir()
    (tmp_path / "ws_link").symlink_to(real, target_is_directory=True)
    app = h.make_app(AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / "ws_link"))
    try:
        state = Sessions.new_state()
        h.add_uploads(app, state, images(tmp_path, 2))
        settings = h.settings_from_inputs("classes", "cat", "", 0.2, 0.25, False)
        with app.jobs.model_lock:  # the job waits: it is running while we look
            h.start_auto_label(app, state, settings)
            assert h.job_status(app, state).endswith("running")
            assert "cancelling" in h.cancel_auto_label(app, state)
        app.jobs.wait(app.sessions.project(state).path, timeout=120)
    finally:
        app.sessions.close()


def test_delete_class_never_deletes_objects_it_was_not_told_to(app, tmp_path, monkeypatch):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    project = app.sessions.project(state)
    project.add_classes(["dog"])
    project.edit_objects(h.current_image(app, state), new=[ObjectState("dog", (1, 1, 9, 9), score=0.7, source="model")])
    real_stats = project.stats
    # the page's view of the counts is from before a detection of "dog" landed
    monkeypatch.setattr(project, "stats", lambda: {**real_stats(), "classes": {"dog": 0}})
    with pytest.raises(ProjectError, match="used by 1 object"):
        h.delete_class(app, state, "dog", False)
    assert [o.class_name for o in project.objects(h.current_image(app, state))] == ["dog"]


def test_an_export_zip_is_named_without_the_project_id(app, tmp_path):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 2))
    path, message = h.export(app, state, "coco", False)
    assert path.endswith("/gdino-coco.zip") and state["token"] not in path
    assert message == "exported 2 image(s) as coco"


def test_a_stored_edit_whose_picture_cannot_be_drawn_is_not_reported_as_refused(app, tmp_path, monkeypatch):
    import errno

    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    image_id = h.current_image(app, state)
    app.sessions.project(state).add_classes(["cat"])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(app.canvas_files, "overlay", full)  # the disk fills after the edit committed
    with pytest.raises(h.NotShownError, match="saved, but the picture could not be refreshed"):
        h.canvas_edit(app, state, {"kind": "stroke", "image_id": image_id, "seq": 3, "object_id": None,
                                   "points": [[20, 20], [60, 30]], "radius": 4.0, "erase": False, "class_name": "cat"})
    assert len(app.sessions.project(state).objects(image_id)) == 1  # it is stored


@pytest.mark.parametrize("image_id", [2**63, 2**70, -1])
def test_out_of_range_ids_get_a_message(app, tmp_path, image_id):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    value, _ = h.canvas_edit(app, state, {"kind": "undo", "image_id": image_id, "seq": 1})
    assert value["message"] == "that image is not in this project any more"


def test_canvas_files_of_dead_servers_go_and_a_read_failure_is_not_remembered(tmp_path, monkeypatch):
    import subprocess
    import sys

    from ui import canvas_view
    from ui.canvas_view import CanvasFiles

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    old = tmp_path / "gdino-canvas-old"
    (old / "abc").mkdir(parents=True)
    (old / "server.pid").write_text(dead.stdout.strip())  # that process has exited
    live = tmp_path / "gdino-canvas-live"
    live.mkdir()
    (live / "server.pid").write_text(str(os.getpid()))  # a server still running

    def mkdtemp(prefix):  # the new server's folder beside them
        (tmp_path / f"{prefix}new").mkdir()
        return str(tmp_path / f"{prefix}new")

    monkeypatch.setattr(canvas_view.tempfile, "mkdtemp", mkdtemp)
    files = CanvasFiles()
    assert not old.exists() and live.exists()

    picture = tmp_path / "p.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(picture)
    record = type("Record", (), {"id": 1, "path": picture, "uri": None, "location": picture, "width": 40, "height": 30})()
    real = canvas_view.read_image
    monkeypatch.setattr(canvas_view, "read_image", lambda path: (_ for _ in ()).throw(OSError("a hiccup")))
    assert files.image("tok", record)[1] is False
    monkeypatch.setattr(canvas_view, "read_image", real)
    path, readable = files.image("tok", record)  # readable again: not remembered as broken
    assert readable and Image.open(path).size == (40, 30)
    files.close()
    assert not files.root.exists()


# ------------------------------------------------------------------------------------ the model choice

@pytest.fixture
def two_model_app(tiny_hf, tokenizer, tmp_path):
    """The server's default (tiny Grounding DINO) and one more offered model (tiny MM-Grounding-DINO)."""
    from tiny_models import make_mm_hf_model, save_hf

    mm = save_hf(make_mm_hf_model("tiny", seed=0), tokenizer, tmp_path / "mm")
    cfg = AppConfig(model=str(tiny_hf[1]), models=(str(mm), "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"),
                    max_loaded_models=1, sam="none", workspace=tmp_path / "ws")
    application = h.make_app(cfg)
    yield application, str(tiny_hf[1]), str(mm)
    application.sessions.close()


def stored_objects(project):
    return {image.name: sorted((o.class_name, tuple(round(v, 3) for v in o.box), o.source) for o in project.objects(image.id))
            for image in project.images()}


def test_the_page_offers_the_recommended_checkpoints_by_default():
    cfg = parse_args(["--model", "/models/mine"])
    offered = cfg.offered_models()
    assert offered[0] == "/models/mine" and "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det" in offered
    assert "iSEE-Laboratory/llmdet_tiny" in offered
    assert parse_args(["--model", "/models/mine", "--models", "none"]).offered_models() == ("/models/mine",)
    assert parse_args(["--models", "a/b, c/d"]).offered_models()[1:] == ("a/b", "c/d")
    lines = {m: line for line, m in h.model_choices(h.App(cfg, None, None, None, None, None))}
    assert "COCO 50.6" in lines["openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"]
    assert lines["/models/mine"].endswith("[server default]")
    with pytest.raises(SystemExit):
        parse_args(["--max-loaded-models", "0"])


def test_switching_models_keeps_the_project_and_the_next_detection_uses_the_new_one(two_model_app, tmp_path):
    app, default, mm = two_model_app
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path))
    project = app.sessions.project(state)
    first, second = [i.id for i in project.images()]
    settings = h.settings_from_inputs("classes", "cat, remote control", "", 0.2, 0.25, False)
    h.detect_image(app, state, first, settings)
    project.edit_objects(second, new=[ObjectState("cat", [10, 10, 50, 60])])  # a person's box
    before = stored_objects(project)
    assert h.project_model(app, state) == default and list(app.hub._detectors) == [default]

    assert "now uses" in h.choose_model(app, state, mm)
    assert stored_objects(project) == before  # choosing a model changes no label
    assert h.project_model(app, state) == mm
    h.detect_image(app, state, second, settings)
    assert list(app.hub._detectors) == [mm]  # the project's model ran; --max-loaded-models 1 dropped the other
    after = stored_objects(project)
    assert after[project.image(first).name] == before[project.image(first).name]
    assert ("cat", (10.0, 10.0, 50.0, 60.0), "manual") in after[project.image(second).name]

    # the choice is the project's: a new visit of the same project (a restart) finds it
    app.sessions.close()
    again = h.make_app(app.config)
    try:
        assert h.project_model(again, state) == mm
    finally:
        again.sessions.close()


def test_a_model_the_server_does_not_offer_is_refused(two_model_app):
    app, default, _ = two_model_app
    state = Sessions.new_state()
    for bad in ("/etc/passwd", "someone/else", None, ""):
        with pytest.raises(ProjectError, match="not offered by this server"):
            h.choose_model(app, state, bad)
    assert h.project_model(app, state) == default
    with pytest.raises(ValueError, match="does not offer"):
        app.hub.detector("/etc/passwd")
    assert app.hub._detectors == {}  # nothing was loaded


def test_a_model_that_cannot_be_downloaded_is_said_in_the_pages_words(two_model_app, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read once at import: offline even with a network
    app, default, _ = two_model_app
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path, 1))
    project = app.sessions.project(state)
    image = project.images()[0].id
    hub_id = "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"
    h.choose_model(app, state, hub_id)
    settings = h.settings_from_inputs("classes", "cat", "", 0.2, 0.25, False)
    with pytest.raises(ValueError) as failure:
        h.detect_image(app, state, image, settings)
    message = str(failure.value)
    assert "could not be downloaded" in message and "--models" in message and "gdino.load_model" not in message
    assert project.image(image).status == "unlabeled" and project.objects(image) == []
    h.choose_model(app, state, default)  # back to a model that loads: the project works as before
    assert h.detect_image(app, state, image, settings).startswith("found")


def test_training_reads_only_what_the_server_may_read(app, tmp_path):
    """A project whose database references files outside the folders this server may read (a project folder
    prepared elsewhere, opened from an allowed folder): training, like labeling, refuses to read them, and
    says so without the outside path."""
    state = Sessions.new_state()
    project = app.sessions.project(state)
    project.add_classes(["cat"])
    private = tmp_path / "private"
    private.mkdir()
    for i in range(2):
        secret = private / f"secret{i}.png"
        Image.fromarray(np.full((120, 160, 3), 40 * i, np.uint8)).save(secret)
        record = project.add_image(secret, copy=False)  # the record names the outside file itself
        project.edit_objects(record.id, new=[ObjectState("cat", [2, 2, 40, 40])])
        project.set_status(record.id, "reviewed")
    h.start_training(app, state, 1, True)
    job = app.jobs.get(project.path)
    job.thread.join(300)
    assert job.state == "failed"
    text = h.job_status(app, state)
    assert "leads outside the folders this server may read" in text and str(private) not in text, text
    assert not any((project.path / "models").glob("finetuned-*[0-9]"))


def test_training_keeps_files_not_decoded_pictures(app, tmp_path, monkeypatch):
    """The app's training reads each image through the server's rules at every epoch: its examples hold the
    checked file, never the decoded picture (a training set of photos held decoded would fill memory)."""
    from gdino.train import trainer

    seen = []

    def spy(project, **kwargs):
        data = real(project, **kwargs)
        seen.extend(e.path for e in data.examples)
        raise KeyboardInterrupt  # enough: stop before any model work

    real = trainer.examples_from_project
    monkeypatch.setattr(trainer, "examples_from_project", spy)
    state = Sessions.new_state()
    assert h.add_uploads(app, state, images(tmp_path)) == "added 2 image(s)"
    project = app.sessions.project(state)
    project.add_classes(["cat"])
    for record in project.images():
        project.edit_objects(record.id, new=[ObjectState("cat", [2, 2, 40, 40])])
        project.set_status(record.id, "reviewed")
    h.start_training(app, state, 1, True)
    app.jobs.get(project.path).thread.join(120)
    assert len(seen) == 2 and all(isinstance(p, Path) and p.is_file() for p in seen), seen


def test_a_projects_training_runs_are_laid_out_by_the_training_code(tmp_path):
    """gdino.train.workdir alone knows where a project's runs live and which folders count as finished runs."""
    import json

    from gdino.train import workdir

    assert workdir.models_folder(tmp_path) == tmp_path / "models" and workdir.trained_models(tmp_path) == []
    assert workdir.RUN_NAME.fullmatch(workdir.new_run_name())
    for name, files in (("finetuned-20260101-000000", ("gdino_training.json", "config.json")),
                        ("finetuned-20260202-000000", ("gdino_training.json", "config.json")),
                        ("finetuned-20260303-000000", ("config.json",)),  # unfinished: no card
                        ("mine", ("gdino_training.json", "config.json"))):  # not a run's name
        (tmp_path / "models" / name).mkdir(parents=True)
        for f in files:
            (tmp_path / "models" / name / f).write_text(json.dumps({"train_images": ["a.png"]}))
    (tmp_path / "models" / "finetuned-20260404-000000").symlink_to(tmp_path / "models" / "finetuned-20260101-000000")
    runs = workdir.trained_models(tmp_path)
    assert runs == ["models/finetuned-20260202-000000", "models/finetuned-20260101-000000"]  # newest first
    assert workdir.run_folder(tmp_path, runs[0]) == tmp_path / runs[0]
    assert workdir.run_folder(tmp_path, "models/mine") is None and workdir.run_folder(tmp_path, "IDEA/some-model") is None
    assert workdir.run_card(tmp_path, runs[0]) == {"train_images": ["a.png"]}
    assert workdir.is_run(runs[0]) and not workdir.is_run("IDEA-Research/grounding-dino-tiny")
    other = tmp_path / "other"
    other.mkdir()
    (other / "models").write_text("a file")
    assert workdir.models_folder(other) is None and workdir.trained_models(other) == []


def test_the_page_offers_the_exporters_formats_and_the_list_filters(app):
    """The page's export choices are gdino.formats.FORMATS and its "Show" menu the list filters, each from the one
    place that defines them (no list of the page's own)."""
    from gdino.formats import FORMATS
    from ui.layout import build
    from ui.render import LIST_FILTERS

    components = build(app).config["components"]
    choices = {c["props"].get("label"): [v for v, _ in c["props"]["choices"]] for c in components
               if c.get("type") in ("radio", "dropdown") and c["props"].get("label") in ("Format", "Show")}
    assert choices == {"Format": list(FORMATS), "Show": list(LIST_FILTERS)}


def test_precision_flag_reaches_every_detector_and_the_status_line(tiny_hf, tmp_path):
    from gdino.modeling.precision import fast_quantized_count, native_bfloat16
    from ui.app_config import parse_args

    assert parse_args(["--model", str(tiny_hf[1]), "--precision", "exact"]).precision == "exact"
    assert parse_args(["--model", str(tiny_hf[1])]).precision is None  # the device's default: fast on a CPU
    for asked, precision in (("exact", "exact"), ("fast", "fast"), (None, "fast")):
        app = h.make_app(AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / str(asked), device="cpu",
                                   precision=asked))
        try:
            detector = app.hub.detector()
            assert detector.model.precision == precision and (fast_quantized_count(detector.model) > 0) is (
                precision == "fast")
            kind = "bfloat16 products" if native_bfloat16() else "int8 weights"
            said = "precision: exact (float32)" if precision == "exact" else f"precision: fast ({kind} in "
            assert said in app.hub.status
        finally:
            app.sessions.close()
