"""`gdino import-results` without Ray: shards written by hand (`gdino.results.write_shard`, or pyarrow for an
older layout), imported into projects: shards of the earlier layout (no width/height), a damaged row among
good ones (listed; the others stored; no file left behind), a key that names no image."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from gdino.cli import main
from gdino.project import Project
from gdino.results import COLUMNS, NEW_IMAGE, make_row, write_shard

RUN = {"classes": ["cat"], "box_threshold": 0.3}
CAT = {"box": [1.0, 1.0, 9.0, 9.0], "class_name": "cat", "score": 0.9, "mask": None}


def pictures(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        path = folder / f"p{k}.png"
        Image.fromarray(np.full((20, 30, 3), 30 * k, np.uint8)).save(path)
        paths.append(path)
    return paths


def test_shards_of_the_earlier_layout_import(tmp_path, capsys):
    paths = pictures(tmp_path / "in", 2)
    rows = [make_row(NEW_IMAGE, str(p), p.name, objects=[CAT], run=RUN) for p in paths]
    old = [c for c in COLUMNS if c not in ("width", "height")]
    (tmp_path / "res").mkdir()
    pq.write_table(pa.Table.from_pylist([{c: r[c] for c in old} for r in rows]), tmp_path / "res" / "part-old.parquet")
    assert main(["import-results", str(tmp_path / "res"), "--into", str(tmp_path / "p")]) == 0, capsys.readouterr()
    with Project.open(tmp_path / "p") as project:
        assert sorted((r.name, r.num_objects, r.status) for r in project.images()) == [("p0.png", 1, "auto"),
                                                                                     ("p1.png", 1, "auto")]


def test_a_damaged_row_is_listed_and_the_rest_of_its_shard_stored_with_no_file_left_behind(tmp_path, capsys):
    paths = pictures(tmp_path / "in", 3)
    rows = [make_row(NEW_IMAGE, str(p), p.name, objects=[CAT], run=RUN) for p in paths]
    rows[1]["run"] = json.dumps({"classes": 5})  # a run of the wrong shape
    write_shard(str(tmp_path / "res"), rows)
    assert main(["import-results", str(tmp_path / "res"), "--into", str(tmp_path / "p")]) == 1
    out = capsys.readouterr()
    assert "p1.png: a damaged result row" in out.out and "Traceback" not in out.err, out
    with Project.open(tmp_path / "p") as project:
        stored = {r.name: r.num_objects for r in project.images()}
        files = sorted(p.name for p in (tmp_path / "p" / "images").iterdir())
    assert stored == {"p0.png": 1, "p1.png": 0, "p2.png": 1}  # p1 added, its labels not: a re-run redoes it
    assert files == ["p0.png", "p1.png", "p2.png"]  # every file in images/ belongs to an image


def test_a_key_that_names_no_image_never_lands_on_an_object_store_image(tmp_path, capsys):
    with Project.create(tmp_path / "p", ["cat"]) as project:
        cloud = project.add_reference("s3://b/photos/cat.png?region=us-east-1", 40, 30)
    row = make_row(7, "None", "None", objects=[CAT], run=RUN)  # a key equal to str(None)
    write_shard(str(tmp_path / "res"), [row])
    assert main(["import-results", str(tmp_path / "res"), "--into", str(tmp_path / "p")]) == 1
    assert "None" in capsys.readouterr().out
    with Project.open(tmp_path / "p") as project:
        assert project.objects(cloud.id) == [] and project.image(cloud.id).status == "unlabeled"


def test_a_uri_row_spelled_otherwise_lands_on_the_image_the_project_has(tmp_path, capsys):
    with Project.create(tmp_path / "p", ["cat"]) as project:
        have = project.add_reference("s3://bucket/photos/a.png?endpoint_override=h:9000&scheme=http", 40, 30)
    row = make_row(NEW_IMAGE, "S3://bucket/photos/a.png?scheme=http&endpoint_override=h:9000", "a.png", objects=[CAT],
                   run=RUN, size=(40, 30))
    write_shard(str(tmp_path / "res"), [row])
    assert main(["import-results", str(tmp_path / "res"), "--into", str(tmp_path / "p")]) == 0, capsys.readouterr()
    with Project.open(tmp_path / "p") as project:
        assert [(r.id, r.num_objects) for r in project.images()] == [(have.id, 1)]


def test_a_results_uri_with_credentials_is_refused_without_repeating_them(tmp_path, capsys):
    assert main(["import-results", "s3://AKIA:hunter2@bucket/res", "--into", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "credentials" in err, err
    assert main(["import-results", "ftp://host/res", "--into", str(tmp_path / "p")]) == 2
    assert "not a store" in capsys.readouterr().err
