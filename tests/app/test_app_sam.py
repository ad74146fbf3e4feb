"""The app's SAM (issue 27): `--sam` and `--sams`, the SAM menu per project, clicks and Detect with the project's
SAM and its embedding store, the next image's prefetch, the status line, and `--sam none`. Tiny random SAM 1
models (tests/support/tiny_sam.py), two of them with different weights, so which one ran shows in its masks and
its counts; every expected mask comes from a Segmenter of our own loaded from the same file, never from the app."""

import sqlite3
import threading

import numpy as np
import pytest
from PIL import Image
from tiny_sam import save_tiny_sam

from gdino.sam import catalog
from gdino.sam.segmenter import Segmenter
from gdino.sam.store import project_store
from gdino.sources import read_image
from gdino.store import ObjectState, ProjectError
from gdino.store.connection import DB_NAME
from ui import actions as h
from ui.app_config import AppConfig, parse_args
from ui.models import sam_words
from ui.session import Sessions


def images(folder, n, size=(96, 128)):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"photo{i}.png"
        Image.fromarray(np.random.default_rng(10 + i).integers(0, 255, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture
def sams(tmp_path):
    """Two tiny SAM files of different weights; the second in a folder of its own, with the same file name as a
    third that does not exist (two menu entries with one file name, and a SAM that cannot load)."""
    (tmp_path / "b").mkdir()
    return save_tiny_sam(tmp_path / "sam.pth", seed=0), save_tiny_sam(tmp_path / "b" / "other.pth", seed=1)


@pytest.fixture
def app(tiny_hf, sams, tmp_path):
    a, b = sams
    cfg = AppConfig(model=str(tiny_hf[1]), sam=str(a), sams=(str(b), str(tmp_path / "gone" / "other.pth")),
                    workspace=tmp_path / "ws", device="cpu")
    application = h.make_app(cfg)
    yield application
    application.prefetch.wait_idle(60)
    application.sessions.close()


def project_with(app, tmp_path, n=3):
    state = Sessions.new_state()
    h.add_uploads(app, state, images(tmp_path / "up", n))
    project = app.sessions.project(state)
    return state, project, [r[0] for r in h.rows(app, state, "all")]


def labels_dump(project) -> list[str]:
    """Every row of the project's database but its settings, as SQL text (byte-for-byte what is stored)."""
    with sqlite3.connect(project.path / DB_NAME) as db:
        return [line for line in db.iterdump() if 'INTO "settings"' not in line]


def click(app, state, image_id, x, y, seq=1, refine=None):
    value, shown = h.canvas_edit(app, state, {"kind": "click", "image_id": image_id, "seq": seq, "object_id": None,
                                              "x": x, "y": y, "positive": True, "class_name": "cat"}, refine=refine)
    assert shown == image_id and value["message"] is None, value["message"]
    return value


def pixels_of(app, project, image_id):
    return read_image(app.sessions.image_path(project, project.image(image_id)))


def own_mask(path, pixels, x, y):
    """The mask our own Segmenter of that file gives for one positive click (what the app must store)."""
    return Segmenter.from_pretrained(str(path), device="cpu").refine(pixels, points=[(x, y)], labels=[1]).mask


def stored_mask(project, image_id):
    from gdino.masks import rle_to_mask

    [obj] = project.objects(image_id)
    return rle_to_mask(obj.mask)


# ------------------------------------------------------------------------------------------ the command line

def test_the_default_sam_is_the_catalogs_for_the_device_and_help_names_every_sam(capsys):
    config = parse_args([])
    assert config.sam is None and config.sams is None
    assert config.sam_for("cpu") == catalog.default_name("cpu") and config.sam_for("cuda") == catalog.default_name("cuda")
    assert config.offered_sams("cpu") == tuple(dict.fromkeys((catalog.default_name("cpu"), *catalog.NAMES)))
    assert parse_args(["--sam", "sam2.1-tiny", "--sams", "none"]).offered_sams("cpu") == ("sam2.1-tiny",)
    assert parse_args(["--sam", "none"]).offered_sams("cuda") == ()
    assert parse_args(["--sams", "vit_l, /x/y.pt"]).offered_sams("cpu") == (catalog.default_name("cpu"), "vit_l", "/x/y.pt")
    with pytest.raises(SystemExit):
        parse_args(["--max-loaded-sams", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in catalog.NAMES:
        assert name in out
    assert "--sams" in out and "--max-loaded-sams" in out


def test_sam_words_name_the_family_and_never_a_folder():
    assert sam_words("sam2.1-tiny") == "SAM 2.1 tiny" and sam_words("vit_b") == "SAM 1 vit_b"
    assert sam_words("edgetam") == "EdgeTAM" and sam_words("/srv/models/sam_vit_b_01ec64.pth") == "SAM sam_vit_b_01ec64.pth"


def test_sam3_is_offered_by_its_name_and_its_errors_keep_their_words():
    """--sams sam3: the menu's key is the name (not its description), and a loading error keeps facebook/sam3 and
    the `hf download` line whole (the page's words replace a spec in the message with its key)."""
    from ui.models import ModelHub, sam_said_plainly

    config = parse_args(["--sam", "sam2.1-tiny", "--sams", "sam3", "--device", "cpu"])
    assert config.offered_sams("cpu") == ("sam2.1-tiny", "sam3")
    keys = ModelHub(config).sam_keys
    key = next(k for k, spec in keys.items() if spec == "sam3")
    assert key == "sam3" and keys == {"sam2.1-tiny": "sam2.1-tiny", "sam3": "sam3"}
    assert sam_words("sam3") == "SAM 3 (gated)"
    err = ValueError("could not get SAM 3 ('facebook/sam3') from the Hugging Face Hub (OfflineModeIsEnabled). SAM 3 is "
                     "gated: accept Meta's SAM License on https://huggingface.co/facebook/sam3 and log in; offline, "
                     "download it (`hf download facebook/sam3`) and pass that folder with `--sam FOLDER`")
    text = sam_said_plainly(key, "sam3", err)
    assert "https://huggingface.co/facebook/sam3 " in text and "`hf download facebook/sam3`" in text
    assert "(gated)'" not in text and "facebook/SAM" not in text
    assert text.startswith("SAM 3 (gated) could not be loaded:")


# ------------------------------------------------------------------------------------------ the menu

def test_the_menu_offers_the_servers_sams_by_name_never_by_path(app, sams, tmp_path):
    choices = h.sam_choices(app)
    assert choices == [("SAM sam.pth [server default]", "sam.pth"), ("SAM other.pth", "other.pth"),
                       ("SAM other.pth", "other.pth (2)")]
    assert not any(str(tmp_path) in line or str(tmp_path) in key for line, key in choices)
    state, project, _ = project_with(app, tmp_path, 1)
    assert h.project_sam(app, state) == "sam.pth"
    for bad in (str(sams[1]), "vit_b", None, "", "../other.pth"):  # a path, a name not offered here, junk
        with pytest.raises(ProjectError, match="not offered by this server"):
            h.choose_sam(app, state, bad)
    assert h.project_sam(app, state) == "sam.pth"


def test_choosing_a_sam_changes_no_label_and_clicks_then_use_it(app, sams, tmp_path):
    state, project, ids = project_with(app, tmp_path, 2)
    project.add_classes(["cat"])
    project.edit_objects(ids[1], new=[ObjectState("cat", (5, 5, 60, 50))])
    click(app, state, ids[0], 40, 30)  # with the server's SAM: a mask stored
    before = labels_dump(project)
    assert "the project now uses SAM other.pth" in h.choose_sam(app, state, "other.pth")
    assert labels_dump(project) == before  # byte for byte: no label changed
    assert h.project_sam(app, state) == "other.pth"

    first = stored_mask(project, ids[0])
    pixels = pixels_of(app, project, ids[0])
    np.testing.assert_array_equal(first, own_mask(sams[0], pixels, 40, 30))
    project.edit_objects(ids[0], {project.objects(ids[0])[0].id: None})
    click(app, state, ids[0], 40, 30, seq=2)
    mine = own_mask(sams[1], pixels, 40, 30)
    np.testing.assert_array_equal(stored_mask(project, ids[0]), mine)
    assert not np.array_equal(mine, first)  # the two SAMs differ here: the click did use the new one
    assert app.hub.loaded_segmenter("other.pth").encoder_calls == 1

    # the choice is the project's: a restart finds it; another project keeps the server's
    app.sessions.close()
    again = h.make_app(app.config)
    try:
        assert h.project_sam(again, state) == "other.pth"
        other, _, _ = project_with(again, tmp_path / "second", 1)
        assert h.project_sam(again, other) == "sam.pth"
    finally:
        again.sessions.close()


def test_detect_and_auto_label_with_masks_use_the_projects_sam_and_keep_its_embeddings(app, tmp_path):
    state, project, ids = project_with(app, tmp_path, 2)
    h.choose_sam(app, state, "other.pth")
    settings = h.settings_from_inputs("classes", "cat, remote control", "", 0.05, 0.05, True)
    assert h.detect_image(app, state, ids[0], settings).startswith("found")
    assert any(o.mask is not None for o in project.objects(ids[0]))  # the tiny detector found boxes: SAM ran
    assert app.hub.loaded_segmenter("sam.pth") is None  # the server's SAM was never loaded
    seg = app.hub.loaded_segmenter("other.pth")
    assert seg.encoder_calls == 1
    assert len(list(project_store(project.path).folder.glob("*.safetensors"))) == 1
    click(app, state, ids[0], 20, 20)  # the image Detect embedded: only the decoder runs
    assert seg.encoder_calls == 1
    assert h.start_auto_label(app, state, settings).startswith("auto-label all")  # the other image, in a job
    assert app.jobs.wait(project.path, 120).state == "done"
    assert seg.encoder_calls == 2 and app.hub.loaded_segmenter("sam.pth") is None
    assert len(list(project_store(project.path).folder.glob("*.safetensors"))) == 2
    click(app, state, ids[1], 20, 20, seq=2)
    assert seg.encoder_calls == 2


def test_a_click_on_an_image_labeled_by_gdino_label_sam_runs_only_the_decoder(tiny_hf, sams, tmp_path):
    """`gdino label --sam` (a real process) kept the image's embedding in the project; the app serving that project
    (--project) answers the first click on it with SAM's decoder only."""
    import subprocess
    import sys

    [picture] = images(tmp_path / "up", 1)
    proj = tmp_path / "proj"
    done = subprocess.run([sys.executable, "-m", "gdino.cli", "label", picture, "--classes", "cat, remote control",
                           "--out", str(proj), "--model", str(tiny_hf[1]), "--sam", str(sams[0]), "--device", "cpu",
                           "--box-threshold", "0.05", "--text-threshold", "0.05"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(list(project_store(proj).folder.glob("*.safetensors"))) == 1  # the boxes' masks: one embedding
    app = h.make_app(AppConfig(model=str(tiny_hf[1]), sam=str(sams[0]), project=proj, workspace=tmp_path / "ws",
                               device="cpu"))
    try:
        state = Sessions.new_state()
        project = app.sessions.project(state)
        [image] = project.images()
        project.edit_objects(image.id, {o.id: None for o in project.objects(image.id)})
        click(app, state, image.id, 64, 48)
        seg = app.hub.loaded_segmenter()
        assert (seg.encoder_calls, seg.store_hits) == (0, 1)
        np.testing.assert_array_equal(stored_mask(project, image.id),
                                      own_mask(sams[0], pixels_of(app, project, image.id), 64, 48))
    finally:
        app.sessions.close()


def test_a_sam_that_cannot_load_is_said_with_its_name_and_the_flag(app, tmp_path):
    state, project, ids = project_with(app, tmp_path, 2)
    h.choose_sam(app, state, "other.pth (2)")
    value, _ = h.canvas_edit(app, state, {"kind": "click", "image_id": ids[0], "seq": 1, "object_id": None, "x": 5,
                                          "y": 5, "positive": True, "class_name": "cat"})
    said = value["message"]
    assert "SAM other.pth could not be loaded" in said and "--sam" in said and str(tmp_path) not in said
    status = h.status_line(app, state)
    assert "SAM other.pth could not be loaded" in status and str(tmp_path) not in status
    assert project.objects(ids[0]) == []
    assert h.prefetch_next(app, {**state, "image_id": ids[0]}, "all") is None  # no load tried in the background
    assert app.hub.masks_available  # the server's own SAM is fine


def test_the_status_line_says_which_sam_runs_and_where(app, tmp_path):
    state, _, ids = project_with(app, tmp_path, 1)
    assert "SAM sam.pth on CPU (loads on first use)" in h.status_line(app, state)
    click(app, state, ids[0], 10, 10)
    assert "SAM sam.pth on CPU" in h.status_line(app, state).split(", ")
    h.choose_sam(app, state, "other.pth")
    assert "SAM other.pth on CPU (loads on first use)" in h.status_line(app, state)
    assert "SAM sam.pth on CPU" in app.hub.status  # the server's line names the server's SAM


def test_the_least_recently_used_sam_is_dropped(tiny_hf, sams, tmp_path):
    app = h.make_app(AppConfig(model=str(tiny_hf[1]), sam=str(sams[0]), sams=(str(sams[1]),), max_loaded_sams=1,
                               workspace=tmp_path / "ws", device="cpu"))
    try:
        first = app.hub.segmenter()
        assert app.hub.segmenter("sam.pth") is first
        app.hub.segmenter("other.pth")
        assert app.hub.loaded_segmenter("sam.pth") is None and app.hub.loaded_segmenter("other.pth") is not None
        with pytest.raises(ValueError, match="does not offer"):
            app.hub.segmenter(str(sams[1]))  # a path from a page never reaches the loader
    finally:
        app.sessions.close()


# ------------------------------------------------------------------------------------------ the prefetch

def store_keys(project) -> set[str]:
    return {p.stem for p in project_store(project.path).folder.glob("*.safetensors")}


def key_of(app, project, image_id, sam=None) -> str:
    """The store's key of the image's embedding, by our own Segmenter (the same weights)."""
    spec = app.hub.sam_keys[sam or app.hub.sam_default_key]
    rgb = np.asarray(pixels_of(app, project, image_id).convert("RGB"), dtype=np.uint8)
    return Segmenter.from_pretrained(spec, device="cpu").embedding_key(rgb)


def test_the_next_image_is_embedded_and_a_request_not_started_is_replaced(app, tmp_path):
    state, project, ids = project_with(app, tmp_path, 3)
    app.prefetch.hold()
    assert h.prefetch_next(app, {**state, "image_id": ids[0]}, "all") == ids[1]
    assert h.prefetch_next(app, {**state, "image_id": ids[1]}, "all") == ids[2]  # Next before it started
    assert app.prefetch.waiting() == [(str(project.path), ids[2], "sam.pth")]
    app.prefetch.release()
    assert app.prefetch.wait_idle(60)
    seg = app.hub.loaded_segmenter()
    assert seg.encoder_calls == 1 and store_keys(project) == {key_of(app, project, ids[2])}
    assert app.prefetch.embedded == [(str(project.path), ids[2], "sam.pth")] and app.prefetch.dropped == 1

    click(app, {**state, "image_id": ids[2]}, ids[2], 30, 30)  # the first click there: the decoder only
    assert seg.encoder_calls == 1
    h.prefetch_next(app, {**state, "image_id": ids[1]}, "all")  # embedded already: not even queued
    assert app.prefetch.waiting() == [] and app.prefetch.wait_idle(60) and seg.encoder_calls == 1
    app.prefetch.embedded.clear()  # (forgotten, as after 100 others:) the Segmenter's caches answer, no encoder call
    h.prefetch_next(app, {**state, "image_id": ids[1]}, "all")
    assert app.prefetch.wait_idle(60) and seg.encoder_calls == 1 and len(app.prefetch.embedded) == 1


def test_the_next_image_follows_the_windows_filter_and_the_projects_sam(app, tmp_path):
    state, project, ids = project_with(app, tmp_path, 3)
    h.set_status(app, state, ids[1], "reviewed")
    h.choose_sam(app, state, "other.pth")
    app.prefetch.hold()
    assert h.prefetch_next(app, {**state, "image_id": ids[0]}, "unlabeled") == ids[2]  # ids[1] is not in the list
    assert app.prefetch.waiting() == [(str(project.path), ids[2], "other.pth")]
    app.prefetch.release()
    assert app.prefetch.wait_idle(60)
    assert app.hub.loaded_segmenter("sam.pth") is None and app.hub.loaded_segmenter("other.pth").encoder_calls == 1
    assert store_keys(project) == {key_of(app, project, ids[2], "other.pth")}
    assert h.prefetch_next(app, {**state, "image_id": ids[0]}, "reviewed") == ids[1]  # Next shows the list's first
    assert h.prefetch_next(app, {**state, "image_id": ids[1]}, "reviewed") is None  # the list's only image, shown


def held_encoder(seg):
    """Hold `seg`'s image encoder (the backend's embed) on its next call: returns (started, go) events."""
    started, go = threading.Event(), threading.Event()
    embed = seg.backend.embed

    def held(rgb):
        started.set()
        assert go.wait(60)
        return embed(rgb)
    seg.backend.embed = held
    return started, go


def test_a_click_on_the_image_being_prefetched_waits_for_its_embedding(app, tmp_path):
    state, project, ids = project_with(app, tmp_path, 2)
    started, go = held_encoder(app.hub.segmenter())
    h.prefetch_next(app, {**state, "image_id": ids[0]}, "all")
    assert started.wait(60)  # the prefetch is inside the encoder
    clicked = threading.Thread(target=lambda: click(app, {**state, "image_id": ids[1]}, ids[1], 20, 20))
    clicked.start()  # it waits for that embedding, not computing its own
    go.set()
    clicked.join(60)
    assert not clicked.is_alive() and app.prefetch.wait_idle(60)
    assert app.hub.loaded_segmenter().encoder_calls == 1 and len(project.objects(ids[1])) == 1


def test_a_click_on_the_image_shown_does_not_wait_for_the_next_ones_prefetch(app, tmp_path):
    state, project, ids = project_with(app, tmp_path, 2)
    seg = app.hub.segmenter()
    click(app, {**state, "image_id": ids[0]}, ids[0], 20, 20)  # the image shown: embedded
    started, go = held_encoder(seg)
    try:
        h.prefetch_next(app, {**state, "image_id": ids[0]}, "all")
        assert started.wait(60)  # the next image's embedding is under way, held
        clicked = threading.Thread(target=lambda: click(app, {**state, "image_id": ids[0]}, ids[0], 40, 40, seq=2))
        clicked.start()
        clicked.join(60)  # answered while the prefetch is held (were it waiting for the model, it would still be)
        assert not clicked.is_alive() and len(project.objects(ids[0])) == 2
        assert seg.encoder_calls == 1 and not app.prefetch.wait_idle(0)
    finally:
        go.set()
    assert app.prefetch.wait_idle(60) and seg.encoder_calls == 2


def test_no_prefetch_while_a_job_runs_on_the_models(app, tmp_path):
    state, project, ids = project_with(app, tmp_path, 2)
    gate = threading.Event()

    def detector():  # the job's model load, held: the job is running
        assert gate.wait(60)
        raise ValueError("not needed here")
    app.jobs.start(project, detector, h.settings_from_inputs("classes", "cat", "", 0.3, 0.25, False))
    try:
        h.prefetch_next(app, {**state, "image_id": ids[0]}, "all")
        assert app.prefetch.wait_idle(60)
        assert app.prefetch.dropped == 1 and app.prefetch.embedded == [] and store_keys(project) == set()
        assert app.hub.loaded_segmenter() is None
    finally:
        gate.set()
        app.jobs.wait(project.path, 60)


def test_without_sam_the_app_works_and_nothing_is_prefetched(tiny_hf, tmp_path):
    app = h.make_app(AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / "ws"))
    try:
        state, project, ids = project_with(app, tmp_path, 2)
        assert h.sam_choices(app) == [] and h.project_sam(app, state) is None
        assert h.prefetch_next(app, {**state, "image_id": ids[0]}, "all") is None and app.prefetch.waiting() == []
        assert "masks off (--sam none)" in h.status_line(app, state)
        with pytest.raises(ProjectError, match="not offered"):
            h.choose_sam(app, state, "vit_b")
        value, _ = h.canvas_edit(app, state, {"kind": "click", "image_id": ids[0], "seq": 1, "object_id": None,
                                              "x": 5, "y": 5, "positive": True, "class_name": "cat"})
        assert "--sam" in value["message"] and project.objects(ids[0]) == []
        value, _ = h.canvas_edit(app, state, {"kind": "add", "image_id": ids[0], "seq": 2, "box": [1, 1, 30, 30],
                                              "class_name": "cat"})
        assert value["message"] is None and len(project.objects(ids[0])) == 1  # boxes work
    finally:
        app.sessions.close()


def test_a_click_reads_its_picture_once_and_again_when_the_file_changes(app, tmp_path):
    """The last pictures read stay decoded for the next click; a file replaced or rewritten is read again."""
    from ui.actions.labeling import image_reader

    state, project, ids = project_with(app, tmp_path, 2)
    read = image_reader(app, project)
    first = read(ids[0])
    assert read(ids[0]) is first
    path = project.image(ids[0]).path
    other = np.asarray(Image.open(project.image(ids[1]).path).convert("RGB"))
    replacement = path.with_name("replacement.png")
    Image.fromarray(other).save(replacement)
    replacement.replace(path)  # a new file under the same name
    assert np.array_equal(np.asarray(read(ids[0])), other)


def test_reviewing_with_next_reads_each_picture_once(app, tmp_path, monkeypatch):
    """A person clicks on an image, presses Next, clicks at once: the picture the prefetch read for the next image
    is still decoded when the click comes, though the click on the image before it came later (a cache that kept
    only the two last used dropped it: a 12-megapixel JPEG decoded again, ~0.2 s, on every first click)."""
    from ui.actions import labeling

    reads = []
    real = labeling.read_image
    monkeypatch.setattr(labeling, "read_image", lambda location: reads.append(location) or real(location))
    state, project, ids = project_with(app, tmp_path, 5)
    for k, image_id in enumerate(ids[:-1]):
        h.prefetch_next(app, {**state, "image_id": image_id}, "all")  # shown: the next one is read and embedded
        assert app.prefetch.wait_idle(60)
        click(app, {**state, "image_id": image_id}, image_id, 30 + k, 30, seq=k + 1)
    assert sorted(map(str, reads)) == sorted(str(project.image(i).path) for i in ids)  # each once
