"""The image tree the engine tests label (nested folders, an EXIF-rotated photo, a corrupt file, hidden
files), and the comparison of two projects: same classes, same images by name, same objects within 1e-4."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from gdino.store import Project

GOOD = 48  # images that label fine, plus one EXIF-rotated photo and one corrupt file: 50 inputs


def source_folder(root: Path) -> Path:
    """GOOD random pictures in nested folders, a rotated photo (a/rotated.jpg, shown 48 x 32), a corrupt
    file (c/broken.jpg), and hidden files that are not inputs."""
    rng = np.random.default_rng(0)
    for k in range(GOOD):
        sub = ["", "a", "a/b", "c/d/e"][k % 4]
        path = root / sub / f"img_{k:02d}.{'png' if k % 3 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 32 wide and 48 high, shown rotated: 48 x 32
    Image.fromarray(rng.integers(0, 255, (48, 32, 3), dtype=np.uint8)).save(root / "a" / "rotated.jpg", exif=exif)
    (root / "c" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 8)
    (root / ".thumbnails").mkdir()
    (root / ".thumbnails" / "img_00.jpg").write_bytes((root / "img_00.jpg").read_bytes())
    (root / "a" / "._rotated.jpg").write_bytes(b"AppleDouble")
    return root



def snapshot(project_dir: Path) -> tuple[list[str], dict]:
    """(classes, {image name: (status, width, height, last run, objects sorted)})."""
    with Project.open(project_dir) as project:
        images = {}
        for r in project.images(order="name"):
            objects = sorted((o.class_name, o.source, o.box, o.score, o.mask) for o in project.objects(r.id))
            images[r.name] = (r.status, r.width, r.height, project.last_run(r.id), objects)
        return project.classes, images


def assert_same_project(a: Path, b: Path, only=None) -> None:
    """b holds what a holds (only: the images of a for which only(name) is true)."""
    classes_a, images_a = snapshot(a)
    classes_b, images_b = snapshot(b)
    if only is not None:
        images_a = {name: v for name, v in images_a.items() if only(name)}
    assert classes_a == classes_b
    assert images_a.keys() == images_b.keys()
    for name, (status, width, height, run, objects) in images_a.items():
        other = images_b[name]
        assert (status, width, height, run) == other[:4], name
        assert len(objects) == len(other[4]), name
        for (cls, source, box, score, mask), (cls2, source2, box2, score2, mask2) in zip(objects, other[4], strict=True):
            assert (cls, source, mask) == (cls2, source2, mask2), name
            assert all(math.isclose(u, v, abs_tol=1e-4) for u, v in zip(box, box2, strict=True)), (name, box, box2)
            assert math.isclose(score, score2, abs_tol=1e-4), name
