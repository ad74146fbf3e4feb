"""Fault injection: seeded random SIGKILLs of real `gdino` processes while they add, label, import and
export (at least 10 kills a phase here, 5 for adding and labeling; `python bench/fault_injection.py` runs
hundreds). After each
kill: PRAGMA integrity_check is ok, no image is in the project twice, no image holds part of its objects,
an interrupted import left all or nothing, and the previous export is intact; after a final
uninterrupted run the project equals one that was never interrupted. See tests/support/fault_harness.py."""

from pathlib import Path

import pytest
from fault_harness import export_kills, import_kills, label_kills

KILLS = 10
SIMILAR_KILLS = 3  # each a process that loads the tiny SAM 3 (~6 s here)
LABEL_KILLS = 5  # each a `gdino label` process that starts and loads the model: 20 cost 3.7 minutes of the suite


def test_kills_while_adding_and_labeling(tiny_hf, tmp_path):
    kills = label_kills(tmp_path, tiny_hf[1], LABEL_KILLS, seed=1)
    assert kills["adding"] >= LABEL_KILLS and kills["labeling"] >= LABEL_KILLS


def test_kills_while_importing(tmp_path):
    assert import_kills(tmp_path, KILLS, seed=2) >= KILLS


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_kills_while_exporting(tmp_path, as_zip):
    assert export_kills(tmp_path, KILLS, seed=3, as_zip=as_zip) >= KILLS


def test_ctrl_c_stops_an_import_at_once_and_adds_nothing(tmp_path):
    """Ctrl-C (SIGINT) during the long check of a big import ends it at once, exit code 130, with nothing of the
    dataset added. The import is frozen (SIGSTOP) as soon as it has begun, Ctrl-C is sent, and it goes on: what
    it then spends is measured in its own CPU time (not the wall clock, which the machine's load stretches),
    against the CPU time of the same import uninterrupted."""
    import os
    import signal
    import subprocess
    import time

    from fault_harness import ROOT, env, gdino_cmd, objects_by_image, write_images

    def cpu(pid: int) -> float:  # user + system seconds of a live process
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def finish(proc: subprocess.Popen) -> tuple[int, float, str]:  # exit code, CPU seconds in all, stderr
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode, usage.ru_utime + usage.ru_stime, err

    photos = write_images(tmp_path / "photos", 120, seed=5, size=(600, 800))  # decoding them all takes a while
    full = tmp_path / "full"
    whole = subprocess.Popen(gdino_cmd("import", photos[0].parent, "--out", full), env=env(), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    code, whole_cpu, err = finish(whole)
    assert code == 0 and len(objects_by_image(full)) == 120, err

    project = tmp_path / "interrupted"
    proc = subprocess.Popen(gdino_cmd("import", photos[0].parent, "--out", project), env=env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # only against a hang: the test waits for the event, not for time
    while not (project / "project.sqlite").exists():  # the project is made: the check of the dataset begins
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGSTOP)
    before = cpu(proc.pid)
    os.kill(proc.pid, signal.SIGINT)  # pending until it goes on
    os.kill(proc.pid, signal.SIGCONT)
    code, total_cpu, err = finish(proc)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    after = total_cpu - before
    assert after < (whole_cpu - before) / 3, f"Ctrl-C took {after:.2f} CPU s to stop an import of {whole_cpu:.2f} CPU s"
    assert objects_by_image(project) == {}


EDITOR = """
import random, sys
from pathlib import Path
from gdino.store import Project, ProjectError
from ui.edits import EditError, apply, parse
project = Project.open(Path(sys.argv[1]))
image = project.images()[0].id
rng = random.Random(int(sys.argv[2]))
Path(sys.argv[3]).touch()  # started
while True:
    objects = project.objects(image)
    pick = rng.random()
    if not objects or pick < 0.25:
        x, y = rng.uniform(0, 300), rng.uniform(0, 200)
        payload = {"kind": "add", "box": [x, y, x + rng.uniform(5, 300), y + rng.uniform(5, 250)],
                   "class_name": rng.choice(["cat", "dog", "new%d" % rng.randint(0, 3)])}
    elif pick < 0.4:
        payload = {"kind": "stroke", "object_id": rng.choice(objects).id, "radius": rng.uniform(1, 40),
                   "points": [[rng.uniform(0, 640), rng.uniform(0, 480)] for _ in range(30)],
                   "erase": rng.random() < 0.3, "class_name": "cat"}
    elif pick < 0.5:
        payload = {"kind": "move", "object_id": rng.choice(objects).id, "dx": rng.uniform(-30, 30), "dy": rng.uniform(-30, 30)}
    elif pick < 0.6:
        payload = {"kind": "delete", "object_ids": [o.id for o in rng.sample(objects, min(len(objects), 3))]}
    elif pick < 0.7:
        payload = {"kind": "relabel", "object_ids": [rng.choice(objects).id], "class_name": rng.choice(["cat", "dog"])}
    else:
        payload = {"kind": rng.choice(["undo", "undo", "redo"])}
    try:
        apply(project, parse({**payload, "image_id": image}))
    except (ProjectError, EditError):
        pass
"""


def test_kills_while_editing_on_the_canvas(tmp_path):
    """SIGKILL a process applying random canvas edits (add, stroke, move, delete, relabel, undo, redo) at
    seeded random moments: each time the database is intact, and the whole history undoes and redoes
    without a conflict, back to what was stored (every edit and its undo entry committed together or not)."""
    import random
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    import numpy as np
    from fault_harness import ROOT, env
    from PIL import Image

    from gdino.store import Project

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photo)
    with Project.create(tmp_path / "proj", ["cat", "dog"]) as project:
        image = project.add_image(photo).id
    rng = random.Random(4)
    longest = 0  # the most entries undone in one check: the kills did land among edits
    for trial in range(6):
        started = tmp_path / f"started{trial}"
        child = subprocess.Popen([sys.executable, "-c", EDITOR, str(tmp_path / "proj"), str(trial), str(started)],
                                 env=env(), cwd=ROOT)
        while not started.exists():
            assert child.poll() is None, "the editing process ended by itself"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.2, 1.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        with sqlite3.connect(tmp_path / "proj" / "project.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        with Project.open(tmp_path / "proj") as project:
            stored = project.objects(image)
            redone = 0  # a conflict in any step would raise: an edit without its entry, or the reverse
            while project.redo(image):
                redone += 1
            top = project.objects(image)
            undone = 0
            while project.undo(image):
                undone += 1
            longest = max(longest, undone)
            for _ in range(undone):
                assert project.redo(image)
            assert project.objects(image) == top
            for _ in range(redone):
                assert project.undo(image)
            assert project.objects(image) == stored
    assert longest > 5


def test_the_label_check_tells_a_missing_object_from_a_last_bit_difference():
    """The kill check compares each image's objects with the uninterrupted run's: the same object may come back
    a little off (two processes were seen to differ, fault_harness._close), but an object missing, added, of
    another class or moved is caught."""
    from fault_harness import same_objects

    cat = ("cat", 7.83, 0.0, 17.38, 7.88, 0.9423, "model")
    remote = ("remote control", 5.33, 6.36, 7.74, 8.83, 0.098, "model")
    assert same_objects([cat, remote], [remote, cat])
    assert same_objects([("cat", 7.84, 0.0, 17.38, 7.88, 0.9430, "model"), remote], [cat, remote])  # as seen in CI
    assert not same_objects([cat], [cat, remote])  # part of the objects
    assert not same_objects([cat, remote, cat], [cat, remote])
    assert not same_objects([("cat", 7.93, 0.0, 17.38, 7.88, 0.9423, "model"), remote], [cat, remote])  # moved
    assert not same_objects([("cat", 7.83, 0.0, 17.38, 7.88, 0.9523, "model"), remote], [cat, remote])  # rescored
    assert not same_objects([("dog", *cat[1:]), remote], [cat, remote])
    assert not same_objects([(*cat[:-1], "person"), remote], [cat, remote])


def test_kills_while_finding_similar_across_the_project(tmp_path):
    """The app's project-wide find similar (its code path, in a process of its own) SIGKILLed while it adds what it
    found: every image holds nothing new or exactly what the uninterrupted run added, as one undo step; a rerun
    completes it (tests/support/fault_harness.py: similar_kills)."""
    from fault_harness import similar_kills
    from sam3_models import save_tiny_sam3

    model = save_tiny_sam3(tmp_path / "sam3", confident=True)
    assert similar_kills(tmp_path, model, SIMILAR_KILLS, seed=4) >= SIMILAR_KILLS
