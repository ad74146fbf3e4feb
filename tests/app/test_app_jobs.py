"""Auto-label all as a background job of the server (ui/jobs.py), with the tiny models: the request that
starts it returns at once, another visitor's Detect gets through between two images, a person can
review while it runs, cancel stops it, starting again resumes, and the status outlives the tab."""

import re
import threading
import time

import numpy as np
import pytest
from PIL import Image

from gdino.store import ObjectState
from gdino.train.workdir import RUN_NAME
from ui import actions as h
from ui.app_config import AppConfig
from ui.jobs import FairLock
from ui.session import Sessions


@pytest.fixture
def app(tiny_hf, tmp_path):
    application = h.make_app(AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / "ws"))
    application.hub.detector()  # loaded once, as the app does at start
    yield application
    for project in application.sessions.open_projects():
        application.jobs.cancel(project.path)
        application.jobs.wait(project.path, timeout=120)
    application.sessions.close()


def _upload(app, state, tmp_path, n, seed=0):
    folder = tmp_path / f"up{seed}"
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        Image.fromarray(np.random.default_rng(seed * 100 + i).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    h.add_uploads(app, state, paths)


SETTINGS = dict(mode="classes", classes_text="cat, remote control", prompt_text="", box_threshold=0.05,
                text_threshold=0.25, masks=False)


def test_a_job_runs_beside_other_visitors_and_its_owner(app, tmp_path):
    a, b = Sessions.new_state(), Sessions.new_state()
    _upload(app, a, tmp_path, 12, seed=1)
    _upload(app, b, tmp_path, 1, seed=2)
    settings = h.settings_from_inputs(**SETTINGS)
    started = time.monotonic()
    assert "0 / 12" in h.start_auto_label(app, a, settings)  # returns at once: the job is a thread
    assert time.monotonic() - started < 5
    job = app.jobs.get(app.sessions.project_dir(a))
    while job.done < 1:
        time.sleep(0.02)
    # another visitor's Detect goes between two of the job's images, not after the whole job
    assert h.detect_image(app, b, h.current_image(app, b), settings).startswith("found")
    assert job.running and job.done < job.total, "the visitor's Detect waited for the whole job"
    # the owner reviews an image the job has not reached yet: the job leaves it as the person decided
    last = app.sessions.project(a).images(order="name")[-1]
    h.set_status(app, a, last.id, "reviewed")
    assert "running" in h.job_status(app, a)
    app.jobs.wait(app.sessions.project_dir(a), timeout=300)
    assert h.job_status(app, a).endswith("done") and job.done == 12 and job.kept == 1
    project = app.sessions.project(a)
    assert project.image(last.id).status == "reviewed" and project.image(last.id).num_objects == 0
    assert {r.status for r in project.images() if r.id != last.id} == {"auto"}


def test_cancel_then_start_again_resumes(app, tmp_path):
    state = Sessions.new_state()
    _upload(app, state, tmp_path, 8)
    settings = h.settings_from_inputs(**SETTINGS)
    h.start_auto_label(app, state, settings)
    job = app.jobs.get(app.sessions.project_dir(state))
    while job.done < 2:
        time.sleep(0.02)
    assert "cancelling" in h.cancel_auto_label(app, state)
    app.jobs.wait(app.sessions.project_dir(state), timeout=120)
    assert job.state == "cancelled" and "start it again" in h.job_status(app, state)
    left = len(app.sessions.project(state).images(status="unlabeled"))
    assert 0 < left < 8
    assert f"0 / {left}" in h.start_auto_label(app, state, settings)  # only what is left
    app.jobs.wait(app.sessions.project_dir(state), timeout=300)
    assert app.sessions.project(state).images(status="unlabeled") == []
    assert h.start_auto_label(app, state, settings) == "nothing to do: every image is labeled already"


def test_the_status_outlives_the_tab(app, tmp_path):
    state = Sessions.new_state()
    _upload(app, state, tmp_path, 3)
    with app.jobs.model_lock:  # the job waits for its first image while the page reloads
        h.start_auto_label(app, state, h.settings_from_inputs(**SETTINGS))
        job = app.jobs.get(app.sessions.project_dir(state))
        reloaded = {"token": state["token"], "opened": None, "image_id": None}  # the same browser after a reload
        assert h.job_status(app, reloaded) == "auto-label all: 0 / 3 image(s), 0 object(s) - running"
        assert h.start_auto_label(app, reloaded, h.settings_from_inputs(**SETTINGS)) == job.text()  # joins it
        assert app.jobs.get(app.sessions.project_dir(state)) is job
        assert h.job_status(app, Sessions.new_state()) == ""  # another visitor has no job
    app.jobs.wait(app.sessions.project_dir(state), timeout=120)
    assert job.state == "done" and job.done == 3


def test_the_fair_lock_serves_in_order():
    lock, order = FairLock(), []
    lock.__enter__()  # held, so that the three below queue up in a known order

    def take(k):
        with lock:
            order.append(k)

    threads = []
    for k in range(3):
        threads.append(threading.Thread(target=take, args=(k,)))
        threads[-1].start()
        time.sleep(0.05)
    lock.__exit__()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2]


def test_auto_label_all_with_free_text_keeps_phrases_out_of_the_class_list(app, tmp_path):
    state = Sessions.new_state()
    _upload(app, state, tmp_path, 3)
    project = app.sessions.project(state)
    free_text = dict(SETTINGS, mode="free text", prompt_text="a cat on the red couch")
    h.start_auto_label(app, state, h.settings_from_inputs(**free_text))
    app.jobs.wait(app.sessions.project_dir(state), timeout=120)
    objects = [o for r in project.images() for o in project.objects(r.id)]
    assert objects and all(o.phrase for o in objects)
    assert project.classes == [] and sorted(project.phrases) == sorted({o.class_name for o in objects})


# ------------------------------------------------------------------------------------ training as a job

def _reviewed(app, state, tmp_path, n=4, seed=5):
    """n uploaded pictures with a person's boxes, marked reviewed."""
    _upload(app, state, tmp_path, n, seed=seed)
    project = app.sessions.project(state)
    project.add_classes(["cat", "remote control"])
    for n, record in enumerate(project.images(order="name")):
        k = n % 20  # boxes that fit (the same ones as before for up to 20 images)
        project.edit_objects(record.id, new=[ObjectState("cat", [4 + k, 6, 30, 40]),
                                             ObjectState("remote control", [20, 2, 44, 20 + k])])
        project.set_status(record.id, "reviewed")
    return project


def _wait(job, timeout=300):
    job.thread.join(timeout)
    assert not job.running, "the training job did not end in time"


def test_training_runs_as_a_job_then_its_model_labels_the_project(app, tmp_path):
    a, b = Sessions.new_state(), Sessions.new_state()
    project = _reviewed(app, a, tmp_path)
    _upload(app, b, tmp_path, 1, seed=9)
    started = time.monotonic()
    line = h.start_training(app, a, 3, True)
    assert line.startswith("training: epoch 0 / 3") and time.monotonic() - started < 5  # a thread
    job = app.jobs.get(project.path)
    while job.done < 1 and job.running:
        time.sleep(0.02)
    # another visitor's Detect goes between two training steps
    settings = h.settings_from_inputs(**SETTINGS)
    assert h.detect_image(app, b, h.current_image(app, b), settings).startswith("found")
    assert job.running, "the visitor's Detect waited for the whole training"
    _wait(job)
    assert job.state == "done", job.error
    text = h.job_status(app, a)
    assert "training done: held-out mAP@0.5" in text and "(fine-tuned)" in text and str(tmp_path) not in text
    [model] = h.trained_models(project)
    assert model.startswith("models/finetuned-") and (project.path / model / "model.safetensors").is_file()
    lines = dict((m, line) for line, m in h.model_choices(app, a))
    assert lines[model].startswith("fine-tuned here: finetuned-") and "3 images" in lines[model]

    assert "now uses fine-tuned here" in h.use_trained_model(app, a)
    assert h.project_model(app, a) == model and project.setting("model") == model
    unlabeled = project.add_image(np.zeros((40, 40, 3), np.uint8), name="new.png")
    assert h.detect_image(app, a, unlabeled.id, settings).startswith("found")
    assert str(project.path / model) in app.hub._detectors  # the fine-tuned model labeled it
    assert h.project_model(app, b) == app.config.model  # another project is not affected
    # every visitor sees the status line: it never shows a project's folder (its name is the project's link)
    assert "a project's fine-tuned model" in app.hub.status and str(project.path) not in app.hub.status
    assert project.path.name not in app.hub.status


def test_a_cancelled_training_resumes_with_the_same_settings(app, tmp_path):
    a = Sessions.new_state()
    project = _reviewed(app, a, tmp_path)
    h.start_training(app, a, 40, True)
    job = app.jobs.get(project.path)
    partial = job.out.with_name(job.out.name + ".partial") / "checkpoint.pt"
    while not partial.exists() and job.running:
        time.sleep(0.05)
    assert "stopping" in h.cancel_auto_label(app, a)
    _wait(job)
    assert job.state == "cancelled" and "train again with the same settings to resume" in job.text()
    assert h.trained_models(project) == [] and partial.exists()
    # the labels changed meanwhile: the stopped run cannot go on, and training starts over instead of failing
    first = project.images(order="name")[0]
    project.edit_objects(first.id, new=[ObjectState("cat", [1, 1, 9, 9])])
    with pytest.raises(h.ProjectError, match="no fine-tuned model yet"):
        h.use_trained_model(app, a)

    h.start_training(app, a, 40, True)  # the same settings: the same folder
    again = app.jobs.get(project.path)
    assert again is not job and again.out == job.out
    while again.done < 1 and again.running:
        time.sleep(0.05)
    assert again.running, again.error  # started over, not failed on the other run's checkpoint
    app.jobs.cancel(project.path)
    _wait(again)
    h.start_training(app, a, 2, True)  # other settings: a new run beside it
    third = app.jobs.get(project.path)
    assert third.out != job.out
    _wait(third)
    assert third.state == "done" and h.trained_models(project) == [f"models/{third.out.name}"]


def test_training_refuses_what_it_cannot_do_in_the_pages_words(app, tmp_path):
    a = Sessions.new_state()
    _upload(app, a, tmp_path, 2)
    with pytest.raises(h.ProjectError, match="no reviewed images to train on"):
        h.start_training(app, a, 12, False)
    for bad in (0, 501, "many", None):
        with pytest.raises(h.ProjectError, match="epochs"):
            h.start_training(app, a, bad, False)


def test_only_the_projects_own_finished_models_are_offered(app, tmp_path):
    a = Sessions.new_state()
    app.sessions.project(a).add_classes(["cat"])  # the project exists once something is stored in it
    project = app.sessions.project(a)
    models = project.path / "models"
    models.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (outside / "gdino_training.json").write_text("{}")
    (models / "finetuned-20250101-000000").symlink_to(outside)  # a link out of the project is never offered
    (models / "finetuned-20250101-000001.partial").mkdir()  # an unfinished run neither
    (models / "finetuned-20250101-000002").mkdir()  # nor a folder without the model card
    (models / "other").mkdir()  # nor a name training never writes
    for f in ("config.json", "gdino_training.json"):
        (models / "other" / f).write_text("{}")
    (models / ".finetuned-20250101-000003.tmp").mkdir()  # a save killed half way
    assert h.trained_models(project) == []
    for bad in ("models/finetuned-20250101-000000", str(outside), "models/finetuned-20250101-000001.partial",
                "models/other", "models/../models", "/etc", None, 3):
        with pytest.raises(h.ProjectError, match="not offered"):
            h.choose_model(app, a, bad)
    project.set_setting("model", "models/other")  # a stored choice the project may not use falls back
    assert h.project_model(app, a) == app.config.model


def test_a_hostile_training_setting_cannot_steer_where_training_writes(app, tmp_path):
    a = Sessions.new_state()
    project = _reviewed(app, a, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    for hostile in ({"name": str(victim), "epochs": 1, "fast": True, "base": app.config.model},
                    {"name": "../../victim", "epochs": 1, "fast": True, "base": app.config.model},
                    "not a dict", ["a", "list"]):
        project.set_setting("training", hostile)
        h.start_training(app, a, 1, True)
        job = app.jobs.get(project.path)
        _wait(job)
        assert job.out.parent == project.path / "models" and RUN_NAME.fullmatch(job.out.name), job.out
        assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
        time.sleep(1.1)  # the next run gets a name of its own (second resolution)


def test_one_training_at_a_time_on_the_server(app, tmp_path):
    a, b = Sessions.new_state(), Sessions.new_state()
    _reviewed(app, a, tmp_path, seed=5)
    _reviewed(app, b, tmp_path, seed=6)
    h.start_training(app, a, 30, True)
    with pytest.raises(ValueError, match="another project is training"):
        h.start_training(app, b, 1, True)
    job = app.jobs.cancel(app.sessions.project(a).path)
    _wait(job)


def test_a_finished_training_without_measurable_boxes_is_said(tmp_path):
    from types import SimpleNamespace

    from gdino.train.evaluate import MapResult
    from ui.jobs import TrainJob

    empty = MapResult(None, None, {}, {}, 1, 0, 3)
    job = TrainJob(epochs=2, out=tmp_path, state="done", result=SimpleNamespace(base=empty, tuned=empty, val_images=1))
    assert "no held-out images to measure" in job.text()


def test_cancel_stops_the_measuring_of_the_held_out_images(app, tmp_path):
    """Training measures the base model on the held-out images before its first step (and the fine-tuned one
    after its last); a cancel then stops within an image, not after all of them, and the page says what runs."""
    a = Sessions.new_state()
    project = _reviewed(app, a, tmp_path, n=60)  # about a fifth held out
    h.start_training(app, a, 3, True)
    job = app.jobs.get(project.path)
    while job.measuring is None and job.running:
        time.sleep(0.002)
    line = h.job_status(app, a)
    assert re.search(r"epoch 0 / 3, measuring the base model on the held-out images \(\d+ / \d+\)", line), line
    assert "stopping" in h.cancel_auto_label(app, a)
    _wait(job)
    assert job.state == "cancelled" and job.measuring[1] < job.measuring[2]  # stopped mid-way
    assert "measuring" not in job.text() and "train again with the same settings to resume" in job.text()
