"""What the page shows, computed from the project: the image with mask overlays, its boxes, lists."""

from __future__ import annotations

import colorsys

import numpy as np

from gdino.masks import rle_to_mask
from gdino.processing import ImageError, to_rgb


def class_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class position (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


PHRASE_COLOR = (150, 150, 150)  # objects labeled with a free-text phrase not mapped to a class yet


def label_color(obj, classes: list[str]) -> tuple[int, int, int]:
    return PHRASE_COLOR if obj.phrase else class_color(classes.index(obj.class_name))


def overlay(rgb: np.ndarray, objects, classes: list[str], alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 image with each object's mask blended in its class colour."""
    out = rgb.astype(np.float32)
    for obj in objects:
        if obj.mask is None:
            continue
        m = rle_to_mask(obj.mask)
        color = np.array(label_color(obj, classes), dtype=np.float32)
        out[m] = out[m] * (1 - alpha) + color * alpha
    return out.round().astype(np.uint8)


def placeholder(width: int, height: int, longest: int = 800) -> np.ndarray:
    """A grey checkerboard standing in for an image whose file cannot be read: the page keeps working (and
    shows its boxes) instead of failing. Scaled down to at most `longest` px per side."""
    scale = min(1.0, longest / max(width, height))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    yy, xx = np.mgrid[:h, :w]
    return np.where(((yy // 32 + xx // 32) % 2)[..., None] == 0, 200, 170).astype(np.uint8).repeat(3, axis=2)


def readable_rgb(record) -> np.ndarray | None:
    """The image's upright pixels, or None when its file is missing or cannot be decoded any more."""
    try:
        return np.asarray(to_rgb(record.path))
    except (ImageError, OSError):
        return None


def annotator_value(project, image_id: int) -> dict:
    """The value of the box editor: the upright image (masks blended in) and one box per object.
    Box coordinates are pixels of the upright image, the frame the project stores. An image whose file
    cannot be read shows as a placeholder of its size, with its boxes."""
    record = project.image(image_id)
    rgb = readable_rgb(record)
    if rgb is None:
        rgb = placeholder(record.width, record.height, longest=max(record.width, record.height))
    objects = project.objects(image_id)
    classes = project.classes
    boxes = [{"label": o.class_name, "color": label_color(o, classes),
              "xmin": round(o.box[0]), "ymin": round(o.box[1]), "xmax": round(o.box[2]), "ymax": round(o.box[3])}
             for o in objects]
    return {"image": overlay(rgb, objects, classes), "boxes": boxes}


STATUS_ORDER = ("all", "unlabeled", "auto", "reviewed", "skipped", "least confident first")


def image_rows(project, view: str = "all") -> list[list]:
    """Rows [id, name, status, objects, lowest score] for the image list, filtered / ordered by `view`."""
    if view == "least confident first":
        records = [r for r in project.images(order="confidence") if r.status != "skipped"]
    elif view in (None, "", "all"):
        records = project.images(order="name")
    else:
        records = project.images(status=view, order="name")
    return [[r.id, r.name, r.status, r.num_objects, "" if r.min_score is None else round(r.min_score, 3)]
            for r in records]


def object_choices(project, image_id: int | None) -> list[tuple[str, int]]:
    if image_id is None:
        return []
    return [(f"#{o.id} {o.class_name}" + (" (phrase)" if o.phrase else "") + (f" {o.score:.2f}" if o.score is not None else "")
             + (" (mask)" if o.mask else ""),
             o.id) for o in project.objects(image_id)]
