"""The store, exports and the command line under faults: busy, full and read-only disks, truncated and
vanished images, repeated exports, removal, the source-key migration, and what the command says."""

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fault_harness import env, labeled_project, run, write_images
from PIL import Image

from gdino.formats import dataset_from_project, export_dataset
from gdino.formats.export import ExportError
from gdino.formats.importing import import_folder
from gdino.processing import ImageError
from gdino.store import ObjectState, Project, ProjectError, connection
from gdino.store.schema import MIGRATIONS


def _png(path: Path, seed: int = 0, size=(32, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _mount(what: list[str]) -> bool:
    return subprocess.run(["mount", *what], capture_output=True).returncode == 0


# -- adding ------------------------------------------------------------------------------------------------


def test_a_truncated_image_is_refused_when_added(tmp_path):
    good = _png(tmp_path / "good.png", size=(300, 400))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with Project.create(tmp_path / "p") as project:
        with pytest.raises(ImageError, match="cut.png"):
            project.add_image(cut)
        with pytest.raises(ImageError, match="cut.png"):
            project.add_image(cut, copy=False)
        assert project.images() == []
        assert [p.name for p in (tmp_path / "p" / "images").iterdir()] == []


def test_the_same_key_adds_an_image_once(tmp_path):
    a = _png(tmp_path / "a.png")
    with Project.create(tmp_path / "p") as project:
        first = project.add_image(a, key=str(a))
        again = project.add_image(a, key=str(a))
        assert again.id == first.id and len(project.images()) == 1
        assert project.image_by_key(str(a)).id == first.id
        project.remove_image(first.id)
        assert project.image_by_key(str(a)) is None  # the key goes with the image


def test_two_processes_adding_the_same_files_add_each_once(tmp_path):
    photos = write_images(tmp_path / "photos", 30)
    Project.create(tmp_path / "p").close()
    script = ("import sys\nfrom gdino.store import Project\n"
              "with Project.open(sys.argv[1]) as p:\n"
              "    for path in sys.argv[2:]:\n"
              "        p.add_image(path, key=path)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "p"), *map(str, order)], env=env())
             for order in (photos, photos[::-1])]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    with Project.open(tmp_path / "p") as project:
        names = sorted(r.name for r in project.images())
    assert names == sorted(p.name for p in photos)


def test_old_source_notes_migrate_to_unique_keys(tmp_path):
    """A project written by the previous schema (sources kept as settings) opens with its keys kept."""
    folder = tmp_path / "old"
    (folder / "images").mkdir(parents=True)
    db = sqlite3.connect(folder / "project.sqlite")
    for statements in MIGRATIONS[:3]:
        for sql in statements:
            db.execute(sql)
    db.execute("PRAGMA user_version = 3")
    _png(folder / "images" / "a.png")
    db.execute("INSERT INTO images (name, path, copied, width, height) VALUES ('a.png', 'images/a.png', 1, 40, 32)")
    db.execute("INSERT INTO settings (key, value) VALUES ('cli.source:/data/a.png', '1')")
    db.execute("INSERT INTO settings (key, value) VALUES ('cli.source:/data/gone.png', '99')")  # no such image
    db.execute("INSERT INTO settings (key, value) VALUES ('prompt', '\"cat\"')")
    db.commit()
    db.close()
    with Project.open(folder) as project:
        assert project.schema_version == len(MIGRATIONS)
        assert project.image_by_key("/data/a.png").name == "a.png"
        assert project.image_by_key("/data/gone.png") is None
        assert project.setting("cli.source:/data/a.png") is None
        assert project.setting("prompt") == "cat"


def test_remove_images_and_gdino_rm(tmp_path):
    source = labeled_project(tmp_path, 4, 2)
    files = sorted((source / "images").iterdir())
    done = run("rm", source, "img_000.png", "IMG_001*")
    assert done.returncode == 0, done.stderr
    assert "removed 2 image(s)" in done.stdout
    with Project.open(source) as project:
        assert sorted(r.name for r in project.images()) == ["img_002.png", "img_003.png"]
        assert project.stats()["objects"] == 4
    assert sorted((source / "images").iterdir()) == files[2:]
    missing = run("rm", source, "nope.png")
    assert missing.returncode == 2 and "no image matches 'nope.png'" in missing.stderr
    dry = run("rm", source, "--status", "reviewed", "--dry-run")
    assert dry.returncode == 0 and "would remove 2 image(s)" in dry.stdout
    with Project.open(source) as project:
        assert len(project.images()) == 2


def test_a_label_run_keeps_decisions_made_meanwhile(tmp_path):
    """replace_model_objects with if_status leaves an image a person marked since the run chose it."""
    with Project.create(tmp_path / "p", ["cat"]) as project:
        ids = [project.add_image(_png(tmp_path / f"{k}.png", k)).id for k in range(3)]
        project.set_status(ids[0], "skipped")
        project.set_status(ids[1], "reviewed")
        objs = [{"box": (1, 1, 9, 9), "class_name": "cat", "score": 0.9}]
        assert project.replace_model_objects(ids[0], objs, if_status=("unlabeled",)) is None
        assert project.replace_model_objects(ids[1], objs, if_status=("unlabeled",)) is None
        assert project.replace_model_objects(ids[2], objs, if_status=("unlabeled",)) is not None
        assert [project.image(i).status for i in ids] == ["skipped", "reviewed", "auto"]
        assert [project.image(i).num_objects for i in ids] == [0, 0, 1]


# -- faults of the disk and of other processes --------------------------------------------------------------


def test_a_busy_project_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch):
    Project.create(tmp_path / "p").close()
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_S", 0.3)
    holder = sqlite3.connect(tmp_path / "p" / "project.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with Project.open(tmp_path / "p") as project, pytest.raises(ProjectError, match="busy.*nothing was changed"):
            project.add_classes(["cat"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Project.open(tmp_path / "p") as project:
        assert project.add_classes(["cat"]) == ["cat"]  # once it is free, the same call works


def test_an_import_holds_no_lock_while_it_checks(tmp_path, monkeypatch):
    """Checking a dataset (decoding every image) takes long; other writers must get through meanwhile."""
    write_images(tmp_path / "data", 3)
    Project.create(tmp_path / "p").close()
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_S", 0.3)
    from gdino.formats import importing

    real = importing.decoded_size
    other_writes = []

    def decode_and_write(path, name=None):
        with Project.open(tmp_path / "p") as other:  # a second writer, while the import checks
            other.set_setting("other", len(other_writes))
            other_writes.append(name)
        return real(path, name)

    monkeypatch.setattr(importing, "decoded_size", decode_and_write)
    with Project.open(tmp_path / "p") as project:
        report = import_folder(project, tmp_path / "data")
    assert report.images == 3 and len(other_writes) == 3


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    if not _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]):
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    try:
        big = [_png(tmp_path / f"big{k}.png", k, size=(300, 400)) for k in range(4)]  # about 360 KB each
        with Project.create(disk / "p", ["cat"]) as project:
            kept = []
            with pytest.raises(ProjectError, match="disk .* is full"):
                for path in big:
                    kept.append(project.add_image(path).name)
            assert kept and len(kept) < len(big)
            assert [r.name for r in project.images()] == kept  # what was added before stays, whole
        done = run("info", disk / "p")
        assert done.returncode == 0 and f"images   {len(kept)}" in done.stdout
        done = run("label", tmp_path / "big3.png", "--classes", "cat", "--out", disk / "p", "--model", "/no/model")
        assert "Traceback" not in done.stderr
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_read_only_project_can_be_viewed_and_exported(tmp_path):
    source = labeled_project(tmp_path / "rw", 3, 2)
    view = tmp_path / "ro"
    view.mkdir()
    if not (_mount(["--bind", str(source), str(view)]) and _mount(["-o", "remount,bind,ro", str(view)])):
        subprocess.run(["umount", str(view)], check=False)
        pytest.skip("needs root to make a read-only bind mount (CI runs as root)")
    try:
        done = run("info", view)
        assert done.returncode == 0, done.stderr
        assert "images   3" in done.stdout
        done = run("export", view, "--format", "coco", "--out", tmp_path / "out")
        assert done.returncode == 0, done.stderr
        assert len(list((tmp_path / "out" / "images" / "train").iterdir())) == 3
        done = run("rm", view, "img_000.png")
        assert done.returncode == 2 and "read-only" in done.stderr and "Traceback" not in done.stderr
        with Project.open(view) as project:
            assert project.read_only
            with pytest.raises(ProjectError, match="read-only"):
                project.set_status(project.images()[0].id, "skipped")
            with pytest.raises(ProjectError, match="read-only"):
                project.add_image(_png(tmp_path / "x.png"))
    finally:
        subprocess.run(["umount", str(view)], check=False)


# -- exports -------------------------------------------------------------------------------------------------


def test_a_second_export_replaces_the_first_whole(tmp_path):
    source = labeled_project(tmp_path, 20, 1)
    with Project.open(source) as project:
        dataset = dataset_from_project(project)
    out = tmp_path / "yolo"
    export_dataset(dataset, out, "yolo", val_fraction=0.5)
    with pytest.raises(ExportError, match="not empty"):
        export_dataset(dataset, out, "yolo", val_fraction=0.2)
    export_dataset(dataset, out, "yolo", val_fraction=0.2, overwrite=True)
    train = {p.name for p in (out / "images" / "train").iterdir()}
    val = {p.name for p in (out / "images" / "val").iterdir()}
    assert not train & val and len(train | val) == 20 and len(val) == 4
    assert {p.stem for p in (out / "labels" / "val").iterdir()} == {Path(n).stem for n in val}
    done = run("export", source, "--format", "yolo", "--out", out)
    assert done.returncode == 2
    assert "--out" in done.stderr and "--overwrite" in done.stderr and "Traceback" not in done.stderr


def test_unreadable_images_are_left_out_of_an_export_and_listed(tmp_path):
    source = labeled_project(tmp_path, 5, 2, size=(120, 160))
    with Project.open(source) as project:
        records = {r.name: r for r in project.images()}
    records["img_001.png"].path.unlink()  # gone
    data = records["img_003.png"].path.read_bytes()
    records["img_003.png"].path.write_bytes(data[: len(data) // 2])  # truncated
    done = run("export", source, "--format", "coco", "--out", tmp_path / "coco")
    assert done.returncode == 1, done.stderr
    assert "exported 3 image(s)" in done.stdout
    assert re.search(r"img_001.png: its file is missing", done.stdout)
    assert re.search(r"img_003.png: could not read the file: .*truncated", done.stdout)
    assert str(source) not in done.stdout.split("left out")[1]
    import json

    coco = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert sorted(im["file_name"] for im in coco["images"]) == ["img_000.png", "img_002.png", "img_004.png"]
    assert len(coco["annotations"]) == 6
    assert sorted(p.name for p in (tmp_path / "coco" / "images" / "train").iterdir()) == [
        "img_000.png", "img_002.png", "img_004.png"]


# -- the command line ----------------------------------------------------------------------------------------


def test_duplicate_classes_are_refused_before_anything_is_loaded_or_copied(tmp_path):
    write_images(tmp_path / "photos", 3)
    done = run("label", tmp_path / "photos", "--classes", "cat, Cat", "--out", tmp_path / "p", "--model", "/no/model")
    assert done.returncode == 2
    assert "--classes" in done.stderr and "duplicate" in done.stderr
    assert "loading" not in done.stderr
    assert not (tmp_path / "p").exists()


def test_unknown_words_are_refused_before_any_file_is_copied(tiny_hf, tmp_path):
    write_images(tmp_path / "photos", 3)
    done = run("label", tmp_path / "photos", "--classes", "qqqxq", "--out", tmp_path / "p", "--model", tiny_hf[1],
               "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert "--classes" in done.stderr and "knows none of the words" in done.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("args", [
    ["info", "{tmp}/nothing"],
    ["export", "{tmp}/nothing", "--format", "coco", "--out", "{tmp}/x"],
    ["rm", "{tmp}/nothing", "a.png"],
    ["label", "--classes", "cat", "--out", "{tmp}/nothing"],
    ["label", "{tmp}/none/*.png", "--classes", "cat", "--out", "{tmp}/p"],
    ["import", "{tmp}/missing.zip", "--out", "{tmp}/p"],
    ["label", "{tmp}", "--classes", "cat,,dog", "--out", "{tmp}/p"],
])
def test_command_line_errors_speak_flags_not_python(tmp_path, args):
    done = run(*[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("gdino ")
    assert "Traceback" not in done.stderr
    assert not re.search(r"\b[A-Za-z_]+\.[a-z_]+\(|\w+=True|exist_ok|Project\.", done.stderr), message


def test_help_and_usage_errors_do_not_import_torch():
    code = ("import sys, gdino.cli\n"
            "gdino.cli.main(['--help'])\n"
            "gdino.cli.main(['label', '--classes', 'cat, cat', '--out', '/nonexistent/p'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "duplicate" in done.stderr


def test_import_command_reports_exactly_what_it_added(tmp_path):
    source = labeled_project(tmp_path / "src", 4, 3)
    done = run("export", source, "--format", "coco", "--out", tmp_path / "c.zip", "--zip")
    assert done.returncode == 0, done.stderr
    bad = tmp_path / "bad"
    write_images(bad, 2)
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    done = run("import", tmp_path / "c.zip", bad, "--out", tmp_path / "p")
    assert done.returncode == 1
    assert "imported 4 image(s), 12 object(s)" in done.stdout
    assert "refused, nothing of it was added" in done.stderr and "broken.png" in done.stderr
    assert str(tmp_path) not in done.stderr.split("refused")[1]
    with Project.open(tmp_path / "p") as project:
        assert project.stats()["images"] == 4 and project.stats()["objects"] == 12


def test_concurrent_label_commands_on_one_project_never_traceback(tmp_path):
    """Many short writers on one project at once: every one succeeds (writers wait for each other)."""
    write_images(tmp_path / "data", 2)
    Project.create(tmp_path / "p", ["cat"]).close()
    script = ("import sys\nfrom gdino.store import Project\n"
              "with Project.open(sys.argv[1]) as p:\n"
              "    for k in range(40):\n"
              "        p.set_setting('k' + sys.argv[2], k)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "p"), str(n)], env=env(),
                              stderr=subprocess.PIPE, text=True) for n in range(4)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, errors
    threads_ok = []

    def writer():
        with Project.open(tmp_path / "p") as p:
            for k in range(20):
                p.set_setting("thread", k)
        threads_ok.append(True)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(threads_ok) == 3
    assert os.path.isfile(tmp_path / "p" / "project.sqlite")


# -- found by review: each reproduced first -----------------------------------------------------------------


def test_an_export_never_replaces_the_project_or_its_images(tmp_path):
    source = labeled_project(tmp_path / "t", 3, 1)  # t/photos (the originals), t/source_project
    for out in (source.parent, source, source / "images", source / "exports"):
        done = run("export", source, "--format", "yolo", "--out", out, "--overwrite")
        assert done.returncode == 2, (out, done.stdout)
        assert "--out" in done.stderr and "Traceback" not in done.stderr
    with Project.open(source) as project:
        assert len(project.images()) == 3 and all(r.path.is_file() for r in project.images())
    assert len(list((source.parent / "photos").iterdir())) == 3


def test_a_killed_swap_without_exchange_gives_the_previous_export_back(tmp_path):
    """Where folders cannot be exchanged atomically, the previous export is moved aside first; if the
    process dies then, the next export moves it back instead of deleting it."""
    source = labeled_project(tmp_path, 2, 1)
    with Project.open(source) as project:
        dataset = dataset_from_project(project)
    out = tmp_path / "out"
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now belongs to no process
    aside = tmp_path / f".out.gdino-partial-{dead.pid}-old-deadbeef"
    aside.mkdir()
    (aside / "data.yaml").write_text("the previous export\n")
    with pytest.raises(ExportError, match="not empty"):
        export_dataset(dataset, out, "yolo")
    assert (out / "data.yaml").read_text() == "the previous export\n" and not aside.exists()


def test_importing_the_same_source_twice_adds_it_once(tmp_path):
    source = labeled_project(tmp_path / "src", 3, 2)
    done = run("export", source, "--format", "coco", "--out", tmp_path / "c.zip", "--zip")
    assert done.returncode == 0, done.stderr
    write_images(tmp_path / "plain", 2)
    for _ in range(2):
        done = run("import", tmp_path / "c.zip", tmp_path / "plain", "--out", tmp_path / "p")
        assert done.returncode == 0, done.stderr
    assert "imported 0 image(s), 0 object(s)" in done.stdout and "not added again" in done.stdout
    with Project.open(tmp_path / "p") as project:
        assert project.stats()["images"] == 5 and project.stats()["objects"] == 6


def test_removing_an_image_spares_a_copy_added_meanwhile(tmp_path, monkeypatch):
    """remove_images deletes the file after its commit; an identical image added in between (it takes
    over the same name) keeps its file."""
    from contextlib import contextmanager

    src = _png(tmp_path / "cat.png")
    a = Project.create(tmp_path / "p", ["cat"])
    b = Project.open(tmp_path / "p")  # another process or app thread
    try:
        removed = a.add_image(src)
        real_write, commits = a._db.write, []

        @contextmanager
        def write():
            with real_write() as db:
                yield db
            commits.append(1)
            if len(commits) == 1:  # the removal has just committed; its file is not deleted yet
                again = b.add_image(src)
                b.edit_objects(again.id, new=[ObjectState("cat", (1, 1, 5, 5))])

        monkeypatch.setattr(a._db, "write", write)
        a.remove_images([removed.id])
        [record] = b.images()
        assert record.num_objects == 1 and record.path.is_file()
    finally:
        a.close()
        b.close()


class _OneCat:
    """A stand-in detector that finds one "cat" in every image (the store's behaviour is under test)."""

    def detect_batch(self, images, classes, **kwargs):
        import supervision as sv

        return [sv.Detections(xyxy=np.array([[2.0, 2.0, 20.0, 20.0]]), confidence=np.array([0.9]),
                              class_id=np.array([0]), data={"class_name": np.array(["cat"])}) for _ in images]


def test_a_run_survives_images_and_classes_removed_under_it(tmp_path):
    from gdino.labeling import LabelSettings, label_images

    with Project.create(tmp_path / "p") as project:
        ids = [project.add_image(_png(tmp_path / f"{k}.png", k)).id for k in range(4)]

        def read(image_id):  # while the model looks at each image, a person changes the project
            pixels = project.image(image_id).path
            if image_id == ids[0]:
                project.remove_image(image_id)
            elif image_id == ids[1]:
                project.set_status(image_id, "skipped")
            elif image_id == ids[2] and "cat" in project.classes:
                project.remove_class("cat", delete_objects=True)
            return pixels

        summary = label_images(project, _OneCat(), ids, LabelSettings(classes=["cat", "dog"]), images=read,
                               if_status=("unlabeled",), add_all_classes=False)
        assert summary.gone == [ids[0]] and summary.kept == [ids[1]] and sorted(summary.labeled) == ids[2:]
        assert project.classes == ["cat"]  # back with the objects that use it; "dog" never found
        assert [project.image(i).num_objects for i in ids[1:]] == [0, 1, 1]


def test_a_dropped_result_adds_no_class(tmp_path):
    from gdino.labeling import LabelSettings, label_images

    with Project.create(tmp_path / "p") as project:
        image_id = project.add_image(_png(tmp_path / "a.png")).id

        def read(i):
            project.set_status(i, "reviewed")  # decided while the model ran
            return project.image(i).path

        summary = label_images(project, _OneCat(), [image_id], LabelSettings(classes=["cat"]), images=read,
                               if_status=("unlabeled",), add_all_classes=False)
        assert summary.kept == [image_id] and project.classes == []


def test_a_hand_drawn_box_and_the_labeled_status_are_one_write(tmp_path):
    with Project.create(tmp_path / "p", ["cat"]) as project:
        image_id = project.add_image(_png(tmp_path / "a.png")).id
        project.edit_objects(image_id, new=[ObjectState("cat", (1, 1, 9, 9))])
        assert project.image(image_id).status == "auto"
        late = project.replace_model_objects(image_id, [{"box": (2, 2, 8, 8), "class_name": "cat", "score": 0.5}],
                                             if_status=("unlabeled",))  # a batch run's result, arriving late
        assert late is None and [o.source for o in project.objects(image_id)] == ["manual"]


def test_gdino_info_into_a_closed_pipe_is_not_an_error(tmp_path):
    source = labeled_project(tmp_path, 40, 1)
    done = subprocess.run(f"{sys.executable} -m gdino.cli info {source} --images | head -1", shell=True, env=env(),
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.startswith("project") and "Broken pipe" not in done.stderr and "error" not in done.stderr


def test_long_and_undecodable_file_names_are_added_under_a_safe_name(tmp_path):
    """A 254-byte name twice (the second gets "_1": over the file system's 255 bytes unless shortened) and a
    name that is not UTF-8, as a folder on disk can hold them."""
    long_name = "x" * 250 + ".png"  # 254 bytes: with "_1" 256, over the limit
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    first = _png(tmp_path / "a" / long_name, 1)
    second = _png(tmp_path / "b" / long_name, 2)
    third = _png(tmp_path / "c" / odd, 3)
    with Project.create(tmp_path / "p") as project:
        names = [project.add_image(path).name for path in (first, second, third)]
        assert all(len(n.encode()) <= 255 for n in names) and names[0].endswith(".png")
        assert names[1] != names[0] and names[2] == "caf\ufffd.png"
        assert all(r.path.is_file() for r in project.images())


def test_abandoned_temporary_copies_are_cleaned_when_a_project_opens(tmp_path):
    Project.create(tmp_path / "p").close()
    images = tmp_path / "p" / "images"
    old, fresh = images / ".adding-old", images / ".adding-fresh"
    old.write_bytes(b"left by a killed import")
    fresh.write_bytes(b"another process is adding this one right now")
    day_ago = time.time() - 2 * 86_400
    os.utime(old, (day_ago, day_ago))
    Project.open(tmp_path / "p").close()
    assert not old.exists() and fresh.exists()
