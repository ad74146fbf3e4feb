"""YOLO detection and segmentation labels: records (pure) and files (thin).

One text file per image, one line per object: `class cx cy w h` (detection) or `class x1 y1 x2 y2 ...`
(segmentation), normalized to [0, 1]. An image without objects gets an empty file (a negative).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..masks import MAX_POLYGON_VERTICES, mask_to_polygon, polygons_to_mask
from .dataset import LabeledImage
from .problems import Problems
from .validate import DatasetError, ImportLimits, on_image


def yolo_lines(image: LabeledImage, segmentation: bool = False) -> list[str]:
    """The label lines of one image. Segmentation: the mask as one polygon per object (several parts
    and holes joined, so a multi-part mask stays one object); an object without a mask uses its box."""
    w, h = image.width, image.height
    lines = []
    for obj in image.objects:
        x0, y0, x1, y1 = obj.box
        if not segmentation:
            values = [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
        else:
            mask = obj.mask_array()
            polygon = _polygon(mask) if mask is not None and mask.any() else [x0, y0, x1, y0, x1, y1, x0, y1]
            values = [v / (w if i % 2 == 0 else h) for i, v in enumerate(polygon)]
        lines.append(" ".join([str(obj.class_id)] + [f"{min(max(v, 0.0), 1.0):.6f}" for v in values]))
    return lines


def inexact_masks(image: LabeledImage, lines: list[str]) -> list[tuple[int | None, float]]:
    """(object id, IoU) of the objects whose mask the written lines (`yolo_lines(image, segmentation=True)`)
    do not give back exactly, read as a YOLO reader rasterizes a polygon: masks past MAX_POLYGON_VERTICES, whose
    outlines were simplified and holes dropped. One polygon per object is all YOLO has; COCO keeps them exact."""
    w, h = image.width, image.height
    found = []
    for obj, line in zip(image.objects, lines, strict=True):
        mask = obj.mask_array()
        if mask is None or not mask.any():
            continue
        values = [float(v) for v in line.split()[1:]]
        polygon = [v * (w if i % 2 == 0 else h) for i, v in enumerate(values)]
        back = polygons_to_mask([polygon], h, w)
        iou = float((mask & back).sum() / (mask | back).sum())
        if iou < 1.0:
            found.append((obj.id, iou))
    return found


def _polygon(mask) -> list[float]:
    """The mask as one exact polygon, or past MAX_POLYGON_VERTICES points (hair, noise: YOLO has no RLE)
    the outlines of its parts simplified with OpenCV until they fit, holes dropped."""
    exact = mask_to_polygon(mask, max_vertices=MAX_POLYGON_VERTICES)
    if exact is not None:
        return exact
    import cv2
    import numpy as np

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    epsilon = 0.5
    while True:
        parts = [cv2.approxPolyDP(c, epsilon, True).reshape(-1, 2) for c in contours]
        parts = [p for p in parts if len(p) >= 3] or [np.array([[0, 0], [1, 0], [1, 1]])]
        if sum(map(len, parts)) <= MAX_POLYGON_VERTICES:
            break
        epsilon *= 2
    anchor = parts[0][0]
    path = [parts[0], anchor[None]]
    for part in parts[1:]:  # joined by bridges walked there and back, as mask_to_polygon joins parts
        path += [part, part[:1], anchor[None]]
    return [float(v) + 0.5 for v in np.concatenate(path).reshape(-1)]  # pixel centres -> COCO coordinates


def data_yaml(classes: tuple[str, ...], splits: list[str]) -> str:
    """Ultralytics' dataset file; names quoted so any class name survives."""
    val = "val" if "val" in splits else "train"
    names = "\n".join(f"  {i}: {_quote(name)}" for i, name in enumerate(classes))
    return f"path: .\ntrain: images/train\nval: images/{val}\nnc: {len(classes)}\nnames:\n{names}\n"


def _quote(text: str) -> str:
    """A YAML double-quoted scalar that reads back as exactly `text`: backslash and quote escaped, and every
    character YAML would not keep as it is (control characters, line breaks, which a quoted scalar folds
    into spaces, noncharacters) written as an escape. Class names never hold those (the store's rule);
    a project from before the rule may."""
    return '"' + "".join(_escaped(c) for c in text) + '"'


# what PyYAML reads as it is in a quoted scalar: its printable characters, less line breaks (folded into spaces)
_YAML_KEEPS = re.compile("[\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escaped(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if _YAML_KEEPS.fullmatch(char):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def write_labels(lines: list[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def read_yolo_labels(path: Path, width: int, height: int, num_classes: int, *, name: str | None = None,
                     limits: ImportLimits | None = None) -> list[dict]:
    """A label file -> objects {class_id, box (xyxy px), mask (RLE or None)}. Lines with more than four
    numbers are polygons (segmentation); their box is the polygon's extent. `name` is how messages call
    the file. Every number is checked (finite, within one image size past the edges) before any
    geometry; problems raise one DatasetError listing them."""
    limits = limits or ImportLimits()
    name = name or Path(path).name
    size = Path(path).stat().st_size
    if size > limits.max_label_bytes:
        raise DatasetError(f"{name} is {size / 1e6:.1f} MB, more than the {limits.max_label_bytes / 1e6:.0f} MB limit "
                           "for one label file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{name} is not a text file of YOLO label lines") from None
    return parse_yolo_labels(text, name, width, height, num_classes, limits)


def parse_yolo_labels(text: str, name: str, width: int, height: int, num_classes: int,
                      limits: ImportLimits) -> list[dict]:
    """The text of a label file -> objects; see read_yolo_labels."""
    from ..masks import mask_to_rle

    problems = Problems(limits.max_problems, f"{name} cannot be imported")
    objects = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(objects) >= limits.max_objects:  # before rasterizing more polygons than one import may hold
            raise DatasetError(f"{name} holds more than {limits.max_objects} objects, the limit for one import")
        with problems.at():
            where = f"{name}:{number}"
            try:
                cls, values = int(parts[0]), [float(v) for v in parts[1:]]
            except ValueError:
                raise DatasetError(f"{where}: not a YOLO label line (class then numbers): {line[:60]!r}") from None
            if not 0 <= cls < num_classes:
                raise DatasetError(f"{where}: class {cls} is not one of data.yaml's {num_classes} names (0 to "
                                   f"{num_classes - 1})")
            if len(values) > 2 * limits.max_vertices:
                raise DatasetError(f"{where}: more than {limits.max_vertices} points")
            for k, v in enumerate(values):
                if not (math.isfinite(v) and -1.0 <= v <= 2.0):
                    raise DatasetError(f"{where}: value {k + 1} is {v:g}; YOLO values are fractions of the image "
                                       "size, between 0 and 1")
            if len(values) == 4:
                cx, cy, bw, bh = values
                if not (bw > 0 and bh > 0):
                    raise DatasetError(f"{where}: the box's width and height must be above 0")
                box = ((cx - bw / 2) * width, (cy - bh / 2) * height, (cx + bw / 2) * width, (cy + bh / 2) * height)
                on_image(box, where, width, height)
                objects.append({"class_id": cls, "box": box, "mask": None})
            elif len(values) >= 6 and len(values) % 2 == 0:
                xs = [v * width for v in values[0::2]]
                ys = [v * height for v in values[1::2]]
                if max(xs) <= min(xs) or max(ys) <= min(ys):
                    raise DatasetError(f"{where}: the polygon has no area")
                on_image((min(xs), min(ys), max(xs), max(ys)), where, width, height)
                polygon = [c for xy in zip(xs, ys, strict=True) for c in xy]
                try:
                    mask = polygons_to_mask([polygon], height, width)
                except ValueError as err:  # what gdino.masks still refuses, e.g. an outline too long to rasterize
                    raise DatasetError(f"{where}: {err}") from None
                objects.append({"class_id": cls, "box": (min(xs), min(ys), max(xs), max(ys)),
                                "mask": mask_to_rle(mask)})
            else:
                raise DatasetError(f"{where}: expected 4 numbers (a box) or an even number of at least 6 (a polygon), "
                                   f"got {len(values)}")
    problems.raise_if_any()
    return objects
