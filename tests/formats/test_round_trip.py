"""Round trip at size: the project's own COCO, YOLO and YOLO-seg zips (200 images, 20 objects each, masks
with holes) import back to the same objects, classes, boxes (within 1e-3 px) and masks (pixel equal).
The COCO file is far over 100 KB with "categories" written last (an import that sniffed the first
100,000 characters once read such a file as no dataset at all)."""

import zipfile

import numpy as np
import pytest
from fault_harness import labeled_project

from gdino.formats import dataset_from_project, export_zip
from gdino.formats.importing import import_zip
from gdino.masks import rle_to_mask
from gdino.store import Project

N_IMAGES, N_OBJECTS = 200, 20


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return labeled_project(tmp_path_factory.mktemp("round_trip"), N_IMAGES, N_OBJECTS, seed=5)


def _objects(project: Project) -> dict[str, list]:
    out = {}
    for record in project.images(order="name"):
        objs = project.objects(record.id)
        out[record.name] = sorted(((o.class_name, o.box, None if o.mask is None else rle_to_mask(o.mask)) for o in objs),
                                  key=lambda t: (t[0], tuple(round(v, 2) for v in t[1])))
    return out


@pytest.mark.parametrize("fmt", ["coco", "yolo", "yolo-seg"])
def test_own_export_imports_back_the_same(source, tmp_path, fmt):
    with Project.open(source) as project:
        zpath = export_zip(dataset_from_project(project), tmp_path / f"{fmt}.zip", fmt)
        expected, classes = _objects(project), project.classes
    if fmt == "coco":
        with zipfile.ZipFile(zpath) as zf:
            text = zf.read("annotations/instances_train.json").decode()
        assert len(text) > 100_000 and text.index('"categories"') > 100_000
    with Project.create(tmp_path / "back") as back:
        report = import_zip(back, zpath)
        got = _objects(back)
        assert back.classes == classes
        assert {r.status for r in back.images()} == {"reviewed"}
    assert (report.images, report.objects) == (N_IMAGES, N_IMAGES * N_OBJECTS)
    assert got.keys() == expected.keys()
    for name in expected:
        assert len(got[name]) == N_OBJECTS
        for (cls_a, box_a, mask_a), (cls_b, box_b, mask_b) in zip(expected[name], got[name], strict=True):
            assert cls_a == cls_b
            np.testing.assert_allclose(box_b, box_a, atol=1e-3, rtol=0)
            if fmt == "yolo":
                assert mask_b is None  # YOLO detection carries boxes only
            else:
                assert np.array_equal(mask_a, mask_b)
