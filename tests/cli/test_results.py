"""`gdino import-results` without Ray: shards written by hand (`gdino.labeling.results.write_shard`, or pyarrow for an
older layout), imported into projects: shards of the earlier layout (no width/height), a damaged row among
good ones (listed; the others stored; no file left behind), a key that names no image."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gdino.cli import main
from gdino.labeling.results import COLUMNS, NEW_IMAGE, make_row, write_shard
from gdino.masks import mask_to_rle
from gdino.store import ObjectState, Project

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


# -- a row that lies about its image (issue 24, item 3) ----------------------------------------------------------
# Real processes: `gdino import-results` and `gdino export` as subprocesses, the images in a real S3 endpoint.

COCO_AND_FRIENDS = ("coco", "yolo-seg", "yolo", "voc")


def gdino(*args: str) -> subprocess.CompletedProcess:
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "gdino.cli", *args], capture_output=True, text=True, timeout=120,
                            env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def block_rle(height: int, width: int) -> dict:
    mask = np.zeros((height, width), bool)
    mask[10:20, 10:30] = True
    return mask_to_rle(mask)


def cat_with(mask) -> dict:
    return {"box": [10.0, 10.0, 30.0, 20.0], "class_name": "cat", "score": 0.9, "mask": mask}


def stored_images(project_dir: Path) -> list[tuple]:
    with sqlite3.connect(project_dir / "project.sqlite") as db:
        return db.execute("SELECT i.name, i.width, i.height, COUNT(o.id) FROM images i LEFT JOIN objects o ON "
                          "o.image_id = i.id GROUP BY i.id ORDER BY i.name").fetchall()


def load_coco(path: Path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def check_export(out: Path, fmt: str, names: list[str]) -> None:
    """The export holds exactly the images `names`, each with its one cat; pycocotools reads COCO."""
    if fmt == "coco":
        coco = load_coco(out / "annotations" / "instances_train.json")
        assert sorted(im["file_name"] for im in coco.loadImgs(coco.getImgIds())) == names
        assert len(coco.getAnnIds()) == len(names)
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert coco.annToMask(ann).shape == (48, 64) and ann["area"] == 200
    folder = "JPEGImages" if fmt == "voc" else "images/train"
    assert sorted(p.name for p in (out / folder).iterdir()) == names
    if fmt.startswith("yolo"):
        labels = sorted((out / "labels" / "train").iterdir())
        assert [p.stem + ".png" for p in labels] == names and all(len(p.read_text().splitlines()) == 1 for p in labels)


@pytest.fixture
def store_images(object_store):
    for name, seed in (("a.png", 1), ("b.png", 2)):
        object_store.put(f"bucket/photos/{name}", png_bytes(seed=seed))
    return lambda name: object_store.uri(f"bucket/photos/{name}")


def test_a_row_that_declares_a_giant_image_is_listed_and_every_export_goes_on(store_images, tmp_path):
    """100000x100000 declared (with a mask that size) for a 64x48 image: listed as failed, not stored; the good
    row beside it is; every export of the project then works."""
    giant = {"size": [100_000, 100_000], "counts": [100_000 * 100_000]}
    write_shard(str(tmp_path / "res"), [
        make_row(NEW_IMAGE, store_images("a.png"), "a.png", objects=[cat_with(giant)], run=RUN, size=(100_000, 100_000)),
        make_row(NEW_IMAGE, store_images("b.png"), "b.png", objects=[cat_with(block_rle(48, 64))], run=RUN, size=(64, 48))])
    result = gdino("import-results", str(tmp_path / "res"), "--into", str(tmp_path / "p"))
    assert result.returncode == 1, result
    assert re.search(r"failed 1 image.*\n  a\.png: .*100000x100000 pixels; an image is 1 to 50 megapixels", result.stdout)
    assert stored_images(tmp_path / "p") == [("b.png", 64, 48, 1)]
    for fmt in COCO_AND_FRIENDS:
        result = gdino("export", str(tmp_path / "p"), "--format", fmt, "--out", str(tmp_path / fmt))
        assert result.returncode == 0, result
        check_export(tmp_path / fmt, fmt, ["b.png"])


def test_a_row_whose_size_is_not_its_images_is_left_out_of_exports_when_fetched(store_images, tmp_path):
    """640x480 declared (a possible size, with a mask that size) for a 64x48 image: stored, as nothing says
    otherwise without fetching it; every export fetches it, compares, lists it and goes on."""
    write_shard(str(tmp_path / "res"), [
        make_row(NEW_IMAGE, store_images("a.png"), "a.png", objects=[cat_with(block_rle(480, 640))], run=RUN,
                 size=(640, 480)),
        make_row(NEW_IMAGE, store_images("b.png"), "b.png", objects=[cat_with(block_rle(48, 64))], run=RUN, size=(64, 48))])
    assert gdino("import-results", str(tmp_path / "res"), "--into", str(tmp_path / "p")).returncode == 0
    for fmt in COCO_AND_FRIENDS:
        result = gdino("export", str(tmp_path / "p"), "--format", fmt, "--out", str(tmp_path / fmt))
        assert result.returncode == 1, result
        assert "  a.png: the image is 64x48 (upright) but its labels are for a 640x480 image" in result.stdout, result
        assert "exported 1 image(s)" in result.stdout
        check_export(tmp_path / fmt, fmt, ["b.png"])


def test_a_mask_that_does_not_fit_its_row_is_listed_not_stored(tmp_path, capsys):
    """Masks must fit their image: a mask of another size, or one whose runs do not cover the image, fails its
    row (a local image: the project knows its size; a row that says another size fails too)."""
    paths = pictures(tmp_path / "in", 4)  # 30x20
    short = {"size": [20, 30], "counts": [10, 20]}
    rows = [make_row(NEW_IMAGE, str(paths[0]), "p0.png", objects=[cat_with(block_rle(48, 64))], run=RUN, size=(30, 20)),
            make_row(NEW_IMAGE, str(paths[1]), "p1.png", objects=[cat_with(short)], run=RUN, size=(30, 20)),
            make_row(NEW_IMAGE, str(paths[2]), "p2.png", objects=[CAT], run=RUN, size=(640, 480)),
            make_row(NEW_IMAGE, str(paths[3]), "p3.png", objects=[cat_with(block_rle(20, 30))], run=RUN, size=(30, 20))]
    write_shard(str(tmp_path / "res"), rows)
    assert main(["import-results", str(tmp_path / "res"), "--into", str(tmp_path / "p")]) == 1
    out = capsys.readouterr().out
    assert "p0.png: a damaged result row: object 0's mask cannot be stored: the mask is 48x64" in out
    assert "p1.png: a damaged result row: object 0's mask cannot be stored: an RLE's 'counts' cover 30" in out
    assert "p2.png: a damaged result row: the row is for a 640x480 image, the project's image is 30x20" in out
    assert [(name, n) for name, _, _, n in stored_images(tmp_path / "p")] == [("p0.png", 0), ("p1.png", 0), ("p2.png", 0),
                                                                           ("p3.png", 1)]


def test_an_export_lists_an_object_whose_mask_cannot_be_read_and_goes_on(store_images, tmp_path):
    """A project written before these checks (or edited by hand) may hold a mask no export can decode: COCO and
    YOLO-seg leave its image out, naming the object; YOLO boxes and VOC, which do not read masks, export it."""
    with Project.create(tmp_path / "p", ["cat"]) as project:
        for name in ("a.png", "b.png"):
            image = project.add_reference(store_images(name), 64, 48)
            project.edit_objects(image.id, new=[ObjectState("cat", (10, 10, 30, 20), mask=block_rle(48, 64))])
        bad = project.objects(project.find_image("a.png").id)[0].id
    with sqlite3.connect(tmp_path / "p" / "project.sqlite") as db:
        db.execute("UPDATE objects SET mask = ? WHERE id = ?", (json.dumps({"size": [48, 64], "counts": [10, 20]}), bad))
    for fmt in COCO_AND_FRIENDS:
        result = gdino("export", str(tmp_path / "p"), "--format", fmt, "--out", str(tmp_path / fmt))
        if fmt in ("coco", "yolo-seg"):
            assert result.returncode == 1, result
            assert f"  a.png: object {bad}'s mask cannot be read (an RLE's 'counts' cover" in result.stdout, result
            check_export(tmp_path / fmt, fmt, ["b.png"])
        else:
            assert result.returncode == 0, result
            check_export(tmp_path / fmt, fmt, ["a.png", "b.png"])
