"""A synthetic dataset to train on: grey pictures with coloured shapes, named by colour and shape."""

from pathlib import Path

import numpy as np

from gdino.store import ObjectState, Project

CLASSES = ["red square", "blue circle"]
_COLOURS = {"red square": (220, 30, 30), "blue circle": (30, 60, 220)}


def draw(rng: np.random.Generator, size: int = 160) -> tuple[np.ndarray, list[dict]]:
    """One picture (size x size RGB) with one to two shapes of each class; returns it and its boxes (xyxy px)."""
    image = np.full((size, size, 3), 128, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    objects = []
    taken = np.zeros((size, size), bool)
    for name in CLASSES:
        for _ in range(rng.integers(1, 3)):
            for _attempt in range(50):
                side = int(rng.integers(size // 6, size // 3))
                x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
                if not taken[y0:y0 + side, x0:x0 + side].any():
                    break
            else:
                continue
            taken[y0:y0 + side, x0:x0 + side] = True
            if name == "red square":
                image[y0:y0 + side, x0:x0 + side] = _COLOURS[name]
            else:
                r = side / 2
                inside = (xx - x0 - r + 0.5) ** 2 + (yy - y0 - r + 0.5) ** 2 <= r * r
                image[inside] = _COLOURS[name]
            objects.append({"box": [x0, y0, x0 + side, y0 + side], "class_name": name})
    return image, objects


def shapes_project(directory: Path, n: int = 8, seed: int = 0, status: str = "reviewed") -> Project:
    """A project of n reviewed shape pictures (manual labels)."""
    project = Project.create(directory, CLASSES)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, objects = draw(rng)
        record = project.add_image(image, name=f"shapes{i:02d}.png")
        project.edit_objects(record.id, new=[ObjectState(o["class_name"], o["box"], o.get("score"), mask=o.get("mask"))
                                             for o in objects])
        project.set_status(record.id, status)
    return project
