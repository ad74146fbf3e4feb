"""Exports that real tools accept (pycocotools, COCOeval), round trips through import, upright images."""

import contextlib
import io
import json
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gdino.formats import dataset_from_project, export_dataset, export_zip, split_images
from gdino.formats.importing import import_coco, import_yolo, import_zip
from gdino.masks import mask_area, mask_to_rle, rle_to_mask
from gdino.safezip import UnsafeZipError
from gdino.store import ObjectState, Project

H, W = 120, 160


def donut_mask():
    yy, xx = np.mgrid[:H, :W]
    r2 = (yy - 60) ** 2 + (xx - 60) ** 2
    m = (r2 < 40**2) & ~(r2 < 15**2)
    return m


def two_part_mask():
    m = np.zeros((H, W), bool)
    m[10:30, 110:150] = True
    m[80:110, 120:140] = True
    return m


def box_of(mask):
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


@pytest.fixture
def project(tmp_path):
    """Three images: two labeled (masks with a hole, a two-part mask, a box-only object), one negative."""
    rng = np.random.default_rng(0)
    p = Project.create(tmp_path / "proj", classes=["cat", "dog", "car"])
    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    a, b, c = (p.add_image(x) for x in paths)
    donut, parts = donut_mask(), two_part_mask()
    p.edit_objects(a.id, new=[ObjectState("cat", box_of(donut), score=0.9, source="model", mask=mask_to_rle(donut))])
    p.edit_objects(a.id, new=[ObjectState("car", box_of(parts), mask=mask_to_rle(parts))])
    p.edit_objects(b.id, new=[ObjectState("dog", (10.5, 20.25, 70.75, 90.5))])  # no mask
    for image in (a, b, c):
        p.set_status(image.id, "reviewed")
    yield p
    p.close()


def coco_quiet(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def evaluate(coco, kind):
    anns = coco.loadAnns(coco.getAnnIds())
    results = []
    for a in anns:
        r = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0, "bbox": a["bbox"]}
        if kind == "segm":
            r["segmentation"] = coco.annToRLE(a)
        results.append(r)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(results)
        ev = COCOeval(coco, dt, kind)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
def test_coco_export_loads_and_evaluates_to_ap_1(project, tmp_path, segmentation):
    out = export_dataset(dataset_from_project(project), tmp_path / "coco", "coco", segmentation=segmentation)
    path = out / "annotations" / "instances_train.json"
    coco = coco_quiet(path)
    assert len(coco.getImgIds()) == 3  # the negative image is listed, with no annotations
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog", "car"]
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 3 and all(a["iscrowd"] == 0 for a in anns)
    by_cat = {coco.loadCats(a["category_id"])[0]["name"]: a for a in anns}
    assert by_cat["cat"]["area"] == mask_area(donut_mask())  # the mask's pixels, not the box's area
    assert by_cat["dog"]["area"] == pytest.approx(60.25 * 70.25) and by_cat["dog"]["segmentation"] == []
    for name, mask in (("cat", donut_mask()), ("car", two_part_mask())):
        assert np.array_equal(coco.annToMask(by_cat[name]).astype(bool), mask)  # every part, the hole kept
    if segmentation == "polygon":
        assert isinstance(by_cat["car"]["segmentation"], list) and len(by_cat["car"]["segmentation"]) == 2
    assert evaluate(coco, "bbox") == pytest.approx(1.0)
    masked = {k: v for k, v in coco.anns.items() if v["segmentation"]}
    coco.dataset["annotations"] = list(masked.values())
    seg_only = tmp_path / "seg_only.json"
    seg_only.write_text(json.dumps(coco.dataset))
    assert evaluate(coco_quiet(seg_only), "segm") == pytest.approx(1.0)


def test_coco_ids_are_stable(project, tmp_path):
    a = export_dataset(dataset_from_project(project), tmp_path / "a", "coco")
    b = export_dataset(dataset_from_project(project), tmp_path / "b", "coco")
    assert (a / "annotations/instances_train.json").read_text() == (b / "annotations/instances_train.json").read_text()


def objects_by_class(project):
    out = {}
    for image in project.images(order="name"):
        for o in project.objects(image.id):
            out.setdefault(image.name, []).append(o)
    return out


def assert_same_objects(src, dst, masks=True, box_tol=0.5):
    a, b = objects_by_class(src), objects_by_class(dst)
    assert a.keys() == b.keys()
    for name in a:
        xs = sorted(a[name], key=lambda o: (o.class_name, o.box))
        ys = sorted(b[name], key=lambda o: (o.class_name, o.box))
        assert [o.class_name for o in xs] == [o.class_name for o in ys]
        for x, y in zip(xs, ys, strict=True):
            assert np.allclose(x.box, y.box, atol=box_tol), (x.box, y.box)
            if masks and x.mask is not None:
                mx, my = rle_to_mask(x.mask), rle_to_mask(y.mask)
                assert (mx & my).sum() / (mx | my).sum() >= 0.98


def test_coco_round_trip(project, tmp_path):
    out = export_dataset(dataset_from_project(project), tmp_path / "coco", "coco")
    with Project.create(tmp_path / "back") as back:
        report = import_coco(back, out / "annotations/instances_train.json")
        assert report.problems == [] and report.images == 3 and report.objects == 3
        assert back.classes == ["cat", "dog", "car"]
        assert_same_objects(project, back)
        assert {im.status for im in back.images()} == {"auto", "reviewed"}  # scored labels come back to review


@pytest.mark.parametrize("fmt", ["yolo", "yolo-seg"])
def test_yolo_round_trip(project, tmp_path, fmt):
    out = export_dataset(dataset_from_project(project), tmp_path / fmt, fmt)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "cat", 1: "dog", 2: "car"} and data["nc"] == 3
    labels = sorted((out / "labels/train").glob("*.txt"))
    assert [p.name for p in labels] == ["img0.txt", "img1.txt", "img2.txt"]
    assert (out / "labels/train/img2.txt").read_text() == ""  # the negative: an empty file on purpose
    lines = (out / "labels/train/img0.txt").read_text().splitlines()
    assert len(lines) == 2  # the two-part mask is one object (one line)
    with Project.create(tmp_path / "back") as back:
        report = import_yolo(back, out)
        assert report.problems == [] and report.images == 3
        # YOLO keeps boxes only (detect) or polygons (segment); a box-only object's polygon is its box
        assert_same_objects(project, back, masks=fmt == "yolo-seg")


def test_voc_export(project, tmp_path):
    out = export_dataset(dataset_from_project(project), tmp_path / "voc", "voc")
    root = ET.parse(out / "Annotations/img1.xml").getroot()
    assert root.findtext("size/width") == str(W) and root.findtext("object/name") == "dog"
    box = [int(root.findtext(f"object/bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
    assert box == [11, 21, 71, 90]  # 1-based first/last pixel of (10.5, 20.25, 70.75, 90.5), rounded
    assert (out / "ImageSets/Main/train.txt").read_text().split() == ["img0", "img1", "img2"]
    assert (out / "JPEGImages/img0.png").is_file()


def test_exif_rotated_images_are_exported_upright(tmp_path):
    stored = Image.fromarray(np.random.default_rng(1).integers(0, 255, (80, 200, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    with Project.create(tmp_path / "p", classes=["cat"]) as p:
        rec = p.add_image(path)
        assert (rec.width, rec.height) == (80, 200)
        p.edit_objects(rec.id, new=[ObjectState("cat", (5, 10, 60, 150))])
        out = export_dataset(dataset_from_project(p), tmp_path / "out", "yolo")
    with Image.open(out / "images/train/phone.jpg") as exported:
        assert exported.size == (80, 200) and exported.getexif().get(0x0112, 1) == 1


def test_reviewed_only_split_and_zip(project, tmp_path):
    first = project.images(order="name")[0]
    project.set_status(first.id, "auto")
    reviewed = dataset_from_project(project, reviewed_only=True)
    assert [im.file_name for im in reviewed.images] == ["img1.png", "img2.png"]
    everything = dataset_from_project(project)
    s1, s2 = split_images(everything.images, 0.34, seed=7), split_images(everything.images, 0.34, seed=7)
    assert [im.file_name for im in s1["val"]] == [im.file_name for im in s2["val"]] and len(s1["val"]) == 1
    zpath = export_zip(everything, tmp_path / "export.zip", "coco", val_fraction=0.34, seed=7)
    with zipfile.ZipFile(zpath) as zf:
        names = set(zf.namelist())
    assert {"annotations/instances_train.json", "annotations/instances_val.json"} <= names
    assert sum(n.startswith("images/") for n in names) == 3
    with Project.create(tmp_path / "back") as back:
        report = import_zip(back, zpath)
        assert report.images == 3 and report.problems == []
        assert_same_objects(project, back)


def test_empty_project_exports_valid_files(tmp_path):
    with Project.create(tmp_path / "empty", classes=["cat"]) as p:
        for fmt in ("coco", "yolo", "yolo-seg", "voc"):
            out = export_dataset(dataset_from_project(p), tmp_path / fmt, fmt)
            assert out.is_dir()
        coco = coco_quiet(tmp_path / "coco/annotations/instances_train.json")
        assert coco.getImgIds() == [] and len(coco.getCatIds()) == 1


def test_renamed_class_keeps_its_objects(project, tmp_path):
    project.rename_class("dog", "puppy")
    out = export_dataset(dataset_from_project(project), tmp_path / "coco", "coco")
    coco = coco_quiet(out / "annotations/instances_train.json")
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "puppy", "car"]
    assert len(coco.getAnnIds(catIds=[2])) == 1


def test_hostile_zip_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with Project.create(tmp_path / "p") as p, pytest.raises(UnsafeZipError, match="escape"):
        import_zip(p, bad)
    assert not (tmp_path / "escape.txt").exists()


def test_unknown_format(project, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tfrecord'"):
        export_dataset(dataset_from_project(project), tmp_path / "x", "tfrecord")


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_unmapped_phrases_are_left_out_of_exports_and_counted(project, tmp_path, fmt):
    a = project.images(order="name")[0]
    project.replace_model_objects(a.id, [{"box": (1, 1, 30, 30), "class_name": "a cat sitting", "score": 0.7},
                                         {"box": (2, 2, 40, 40), "class_name": "a cat sitting", "score": 0.6}],
                                  phrases=["a cat sitting"])
    project.set_status(a.id, "reviewed")
    left_out: dict = {}
    dataset = dataset_from_project(project, left_out=left_out)
    assert left_out == {"a cat sitting": 2}
    assert dataset.classes == ("cat", "dog", "car")
    out = export_dataset(dataset, tmp_path / fmt, fmt)
    if fmt == "coco":
        coco = coco_quiet(out / "annotations/instances_train.json")
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog", "car"]
        assert len(coco.getAnnIds()) == 2  # a's hand-made car and b's dog (the run replaced a's model cat)
    else:
        assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "cat", 1: "dog", 2: "car"}
