"""`gdino label` on images in an object store (a real S3 endpoint: moto's server, read by pyarrow), the plain
engine: the project refers to each image by its URI (nothing copied), labels them as it labels the same
files from a local folder, lists the corrupt one, resumes without duplicates, and exports them fetched."""

from __future__ import annotations

import contextlib
import io

from fault_harness import duplicate_sources
from PIL import Image
from project_compare import GOOD, assert_same_project

from gdino.cli import main
from gdino.store import Project


def label_args(model, images, out, *more) -> list[str]:
    return ["label", str(images), "--classes", "cat, remote control", "--out", str(out), "--model", str(model),
            "--device", "cpu", "--box-threshold", "0.2", "--precision", "exact", *map(str, more)]  # as plain_labeled


def test_label_an_object_store_folder_like_a_local_one(tiny_hf, plain_labeled, object_store, tmp_path, capsys):
    """The same folder labeled from its local copy (conftest's plain_labeled) and from the object store."""
    object_store.put_tree(plain_labeled["images"], "photos/set1")
    uri = object_store.uri("photos/set1")

    assert main(label_args(tiny_hf[1], uri, tmp_path / "remote")) == 1
    printed = capsys.readouterr()
    assert "broken.jpg" in printed.out and f"labeled {GOOD + 1} image(s)" in printed.out, printed
    assert "Traceback" not in printed.err
    assert_same_project(plain_labeled["project"], tmp_path / "remote")
    with Project.open(tmp_path / "remote") as project:
        records = project.images()
        assert all(r.uri is not None and r.uri.startswith("s3://photos/set1/") and r.path is None for r in records)
        assert project.find_image("rotated.jpg").uri.split("?")[0] == "s3://photos/set1/a/rotated.jpg"
    assert not (tmp_path / "remote" / "images").exists() or not any((tmp_path / "remote" / "images").iterdir())

    # again: the labeled images are skipped (by their URI), the corrupt one is tried again
    assert main(label_args(tiny_hf[1], uri, tmp_path / "remote")) == 1
    assert f"skipped {GOOD + 1} already labeled" in capsys.readouterr().out
    # the same folder spelled otherwise (the query reordered, the scheme in capitals): the same images
    respelled = "S3://photos/set1/?" + "&".join(reversed(object_store.query().split("&")))
    assert main(label_args(tiny_hf[1], respelled, tmp_path / "remote")) == 1
    assert f"skipped {GOOD + 1} already labeled" in capsys.readouterr().out
    assert duplicate_sources(tmp_path / "remote") == 0

    # export fetches the pixels; pycocotools reads the annotations; the rotated photo is written upright
    assert main(["export", str(tmp_path / "remote"), "--format", "coco", "--out", str(tmp_path / "coco")]) == 0
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "coco" / "annotations" / "instances_train.json"))
    assert len(coco.getImgIds()) == GOOD + 1
    for info in coco.loadImgs(coco.getImgIds()):
        with Image.open(tmp_path / "coco" / "images" / "train" / info["file_name"]) as im:
            assert im.size == (info["width"], info["height"])
    assert Image.open(tmp_path / "coco" / "images" / "train" / "rotated.jpg").size == (48, 32)


def test_an_unknown_store_is_a_usage_error(tmp_path, capsys):
    code = main(["label", "nosuchscheme://b/x", "--classes", "cat", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "nosuchscheme:// is not a store gdino reads" in err and "s3://" in err, err
