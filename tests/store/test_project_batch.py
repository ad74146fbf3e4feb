"""`Project.batch()`: many changes, one commit, each change still all or nothing (a savepoint); a kill or an
exception stores none of the batch. Checked with a real second process killed inside a batch."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from fault_harness import ROOT, count, integrity
from PIL import Image

from gdino.store import Project, ProjectError

OBJ = {"box": [1.0, 2.0, 10.0, 12.0], "class_name": "cat", "score": 0.9, "mask": None}


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "p", ["cat"]) as p:
        for k in range(4):
            p.add_image(np.full((20, 30, 3), k * 40, dtype=np.uint8), name=f"i{k}.png")
        yield p


def test_a_batch_commits_once_and_keeps_each_change_whole(project):
    ids = [r.id for r in project.images(order="added")]
    (before,) = project.replace_model_objects(ids[1], [OBJ], run={"before": 1})
    with project.batch():
        project.replace_model_objects(ids[0], [OBJ], run={"a": 1})
        with pytest.raises(ProjectError):  # fails inside its own savepoint: nothing of it stays
            project.replace_model_objects(ids[1], [OBJ, {**OBJ, "score": None}], run={"a": 1})  # fails after a write
        project.replace_model_objects(ids[2], [OBJ, OBJ], run={"a": 1})
        # another connection sees none of it before the block ends
        with Project.open(project.path) as other:
            assert sum(r.num_objects for r in other.images()) == 1
    counts = {r.id: (r.num_objects, r.status) for r in project.images()}
    assert counts[ids[0]] == (1, "auto") and counts[ids[2]] == (2, "auto")
    assert counts[ids[1]] == (1, "auto") and project.last_run(ids[1]) == {"before": 1}
    assert [o.id for o in project.objects(ids[1])] == [before.id]  # the failed call undone whole


def test_an_exception_out_of_the_block_stores_none_of_it(project):
    ids = [r.id for r in project.images(order="added")]
    with pytest.raises(RuntimeError), project.batch():
        project.replace_model_objects(ids[0], [OBJ], run={})
        project.set_status(ids[1], "reviewed")
        raise RuntimeError("stop")
    assert {(r.num_objects, r.status) for r in project.images()} == {(0, "unlabeled")}
    project.set_status(ids[1], "skipped")  # the project is usable after it
    assert project.image(ids[1]).status == "skipped"


KILLED_IN_BATCH = """
import sys, time
from gdino.store import Project
obj = {"box": [1.0, 2.0, 10.0, 12.0], "class_name": "cat", "score": 0.9, "mask": None}
with Project.open(sys.argv[1]) as p:
    ids = [r.id for r in p.images(order="added")]
    p.replace_model_objects(ids[0], [obj], run={})  # before the batch: committed
    with p.batch():
        for image_id in ids[1:]:
            p.replace_model_objects(image_id, [obj, obj], run={})
        print("in", flush=True)
        time.sleep(60)
"""


def test_a_process_killed_inside_a_batch_leaves_the_project_as_before_it(tmp_path):
    with Project.create(tmp_path / "p", ["cat"]) as p:
        for k in range(4):
            Image.new("RGB", (30, 20), (k * 40, 0, 0)).save(tmp_path / f"{k}.png")
            p.add_image(tmp_path / f"{k}.png")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_IN_BATCH, str(tmp_path / "p")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "in"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert integrity(tmp_path / "p") == "ok"
    assert count(tmp_path / "p", "SELECT COUNT(*) FROM objects") == 1  # only what was committed before the batch
    assert count(tmp_path / "p", "SELECT COUNT(*) FROM images WHERE status = 'auto'") == 1
    with Project.open(tmp_path / "p") as p:  # and the next writer is not blocked
        p.replace_model_objects(p.images(order="added")[1].id, [OBJ], run={})


def test_reads_inside_a_batch_see_its_changes(project, tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "new.png")
    with project.batch():
        record = project.add_image(tmp_path / "new.png", key="k")
        assert project.image_by_key("k").id == record.id and project.image(record.id).name == "new.png"
        assert len(project.images()) == 5
    assert project.image_by_key("k").id == record.id


def test_a_full_disk_inside_a_batch_stores_none_of_it_and_says_so(tmp_path):
    """SQLite ends the whole transaction on a full disk: the writes after it in the batch must not each commit
    on their own, and the batch must raise even if its caller went on past the failed write."""
    with Project.create(tmp_path / "p") as project:
        pages = project._db.connection.execute("PRAGMA page_count").fetchone()[0]
        project._db.connection.execute(f"PRAGMA max_page_count = {pages + 6}")  # a disk that fills part-way through
        outcomes = []
        with pytest.raises(ProjectError, match="none of this batch was stored"), project.batch():
            for i in range(60):
                try:
                    project.add_reference(f"s3://b/{'x' * 900}/{i}.png", 10, 10)
                    outcomes.append("ok")
                except ProjectError as err:  # as the Ray driver's store goes on after a failed row
                    outcomes.append(str(err))
        assert "ok" in outcomes and any("full" in o for o in outcomes if o != "ok"), outcomes[:3]
        assert all("none of it was stored" in o for o in outcomes[outcomes.index(next(o for o in outcomes if o != "ok")) + 1:])
        project._db.connection.execute("PRAGMA max_page_count = 1000000")
        assert project.images() == []
        project.add_reference("s3://b/after.png", 10, 10)  # the project works afterwards
    with Project.open(tmp_path / "p") as project:
        assert [r.name for r in project.images()] == ["after.png"]


def test_a_nested_batch_keeps_the_cause_of_a_lost_transaction(tmp_path):
    with Project.create(tmp_path / "p") as project:
        pages = project._db.connection.execute("PRAGMA page_count").fetchone()[0]
        project._db.connection.execute(f"PRAGMA max_page_count = {pages + 6}")
        with pytest.raises(ProjectError) as outer, project.batch():
            try:
                with project.batch():
                    for i in range(60):
                        with contextlib.suppress(ProjectError):
                            project.add_reference(f"s3://b/{'x' * 900}/{i}.png", 10, 10)
            except ProjectError as err:
                assert "full" in str(err), err
                raise
        assert "full" in str(outer.value)
        project._db.connection.execute("PRAGMA max_page_count = 1000000")
        assert project.images() == []
