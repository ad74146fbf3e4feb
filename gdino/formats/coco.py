"""COCO detection / instance segmentation: records (pure) and files (thin)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..masks import mask_area, mask_to_polygons, mask_to_rle, polygons_to_mask, rle_to_mask
from .dataset import Dataset, LabeledImage, LabeledObject


def coco_records(dataset: Dataset, images: list[LabeledImage], segmentation: str = "polygon") -> dict:
    """The COCO JSON of `images` as a dict.

    segmentation: "polygon" (every part; holes kept; RLE for a mask whose polygons would not
    rasterize back to the same pixels) or "rle". Objects without a mask get an empty segmentation.
    area is the mask's pixel count, or the box area when there is no mask; iscrowd is always 0.
    Image and annotation ids are the project's, so they stay the same from one export to the next;
    category ids are 1-based positions in the class list.
    """
    if segmentation not in ("polygon", "rle"):
        raise ValueError(f"segmentation must be 'polygon' or 'rle', got {segmentation!r}")
    out_images, annotations = [], []
    next_ann = 1 + max((o.id or 0 for im in dataset.images for o in im.objects), default=0)
    for index, image in enumerate(images):
        image_id = image.id if image.id is not None else index + 1
        out_images.append({"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height})
        for obj in image.objects:
            ann_id = obj.id
            if ann_id is None:
                ann_id, next_ann = next_ann, next_ann + 1
            annotations.append(_annotation(obj, image, image_id, ann_id, segmentation))
    categories = [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(dataset.classes)]
    return {"info": {"description": "exported by gdino"}, "licenses": [], "images": out_images,
            "annotations": annotations, "categories": categories}


def _annotation(obj: LabeledObject, image: LabeledImage, image_id: int, ann_id: int, segmentation: str) -> dict:
    x0, y0, x1, y1 = obj.box
    ann = {"id": ann_id, "image_id": image_id, "category_id": obj.class_id + 1,
           "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
           "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0, "segmentation": []}
    if obj.score is not None:
        ann["score"] = round(float(obj.score), 5)
    mask = obj.mask_array()
    if mask is not None:
        if mask.shape != (image.height, image.width):
            raise ValueError(f"{image.file_name}: an object's mask is {mask.shape}, the image is "
                             f"{(image.height, image.width)}")
        ann["area"] = float(mask_area(mask))
        ann["segmentation"] = _segmentation(mask, segmentation)
    return ann


def _segmentation(mask: np.ndarray, kind: str):
    if kind == "polygon" and mask.any():
        polygons = mask_to_polygons(mask)
        if np.array_equal(polygons_to_mask(polygons, *mask.shape), mask):
            return [[round(v, 2) for v in p] for p in polygons]
    return mask_to_rle(mask)


def write_coco(records: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def read_coco(path: Path) -> tuple[list[str], list[dict]]:
    """A COCO JSON -> (class names in category-id order, per image {file_name, width, height, objects}).
    objects: {class_id, box (xyxy), mask (RLE or None), score}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"could not read the COCO file {path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("categories"), list):
        raise ValueError(f"{path} is not a COCO file: it needs 'images' and 'categories' lists")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    class_of = {c["id"]: i for i, c in enumerate(cats)}
    images = {im["id"]: {"file_name": im["file_name"], "width": int(im["width"]), "height": int(im["height"]),
                         "objects": []} for im in data["images"]}
    for ann in data.get("annotations", []):
        image = images.get(ann.get("image_id"))
        if image is None or ann.get("category_id") not in class_of:
            raise ValueError(f"{path}: annotation {ann.get('id')} refers to an unknown image or category")
        x, y, w, h = (float(v) for v in ann["bbox"])
        seg = ann.get("segmentation")
        mask = None
        if isinstance(seg, dict):
            mask = mask_to_rle(rle_to_mask(seg))  # normalize to compressed counts
        elif isinstance(seg, list) and seg:
            mask = mask_to_rle(polygons_to_mask(seg, image["height"], image["width"]))
        image["objects"].append({"class_id": class_of[ann["category_id"]], "box": (x, y, x + w, y + h),
                                 "mask": mask, "score": ann.get("score")})
    return [c["name"] for c in cats], list(images.values())
