"""YOLO detection and segmentation labels: records (pure) and files (thin).

One text file per image, one line per object: `class cx cy w h` (detection) or `class x1 y1 x2 y2 ...`
(segmentation), normalized to [0, 1]. An image without objects gets an empty file (a negative).
"""

from __future__ import annotations

from pathlib import Path

from ..masks import mask_to_polygon, polygons_to_mask
from .dataset import LabeledImage


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
            polygon = mask_to_polygon(mask) if mask is not None and mask.any() else [x0, y0, x1, y0, x1, y1, x0, y1]
            values = [v / (w if i % 2 == 0 else h) for i, v in enumerate(polygon)]
        lines.append(" ".join([str(obj.class_id)] + [f"{min(max(v, 0.0), 1.0):.6f}" for v in values]))
    return lines


def data_yaml(classes: tuple[str, ...], splits: list[str]) -> str:
    """Ultralytics' dataset file; names quoted so any class name survives."""
    val = "val" if "val" in splits else "train"
    names = "\n".join(f"  {i}: {_quote(name)}" for i, name in enumerate(classes))
    return f"path: .\ntrain: images/train\nval: images/{val}\nnc: {len(classes)}\nnames:\n{names}\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_labels(lines: list[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def read_yolo_labels(path: Path, width: int, height: int, num_classes: int) -> list[dict]:
    """A label file -> objects {class_id, box (xyxy px), mask (RLE or None)}. Lines with more than four
    numbers are polygons (segmentation); their box is the polygon's extent."""
    from ..masks import mask_to_rle

    objects = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, values = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError as err:
            raise ValueError(f"{path}:{number}: not a YOLO label line: {line!r}") from err
        if not 0 <= cls < num_classes:
            raise ValueError(f"{path}:{number}: class {cls} is not in data.yaml's {num_classes} names")
        if len(values) == 4:
            cx, cy, bw, bh = values
            box = ((cx - bw / 2) * width, (cy - bh / 2) * height, (cx + bw / 2) * width, (cy + bh / 2) * height)
            objects.append({"class_id": cls, "box": box, "mask": None})
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs = [v * width for v in values[0::2]]
            ys = [v * height for v in values[1::2]]
            polygon = [c for xy in zip(xs, ys, strict=True) for c in xy]
            mask = polygons_to_mask([polygon], height, width)
            objects.append({"class_id": cls, "box": (min(xs), min(ys), max(xs), max(ys)), "mask": mask_to_rle(mask)})
        else:
            raise ValueError(f"{path}:{number}: expected 4 numbers (box) or an even number >= 6 (polygon)")
    return objects
