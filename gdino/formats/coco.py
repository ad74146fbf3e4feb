"""COCO detection / instance segmentation: records (pure) and files (thin)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..masks import MAX_POLYGON_VERTICES, mask_area, mask_to_polygons, mask_to_rle, polygons_to_mask, rle_to_mask
from .dataset import Dataset, LabeledImage, LabeledObject
from .problems import Problems
from .validate import DatasetError, ImportLimits, class_name_of, image_size, number, on_image, polygons, rle, xywh_box


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
    """Polygons when they rasterize back to exactly the mask and have at most MAX_POLYGON_VERTICES points
    (beyond that it is hair or noise, and RLE is both smaller and exact); otherwise RLE."""
    if kind == "polygon" and mask.any():
        polygons = mask_to_polygons(mask, max_vertices=MAX_POLYGON_VERTICES)
        if polygons is not None and np.array_equal(polygons_to_mask(polygons, *mask.shape), mask):
            return [[round(v, 2) for v in p] for p in polygons]
    return mask_to_rle(mask)


def write_coco(records: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def read_coco(path: Path, limits: ImportLimits | None = None, name: str | None = None) -> tuple[list[str], list[dict]]:
    """A COCO JSON file -> (class names in category-id order, per image {file_name, width, height, objects}).
    objects: {class_id, box (xyxy), mask (RLE or None), score}. `name` is how messages call the file.
    Refuses anything malformed or hostile with one DatasetError that names the file and the fields."""
    limits = limits or ImportLimits()
    return parse_coco(load_json(Path(path), limits, name or Path(path).name), name or Path(path).name, limits)


def load_json(path: Path, limits: ImportLimits, name: str):
    """Parse a JSON file within the size limit; RecursionError (deep nesting) and bad text are DatasetErrors."""
    try:
        size = path.stat().st_size
        if size > limits.max_json_bytes:
            raise DatasetError(f"{name} is {size / 1e6:.0f} MB, more than the {limits.max_json_bytes / 1e6:.0f} MB "
                               "limit for one COCO file")
        return json.loads(path.read_bytes())
    except DatasetError:
        raise
    except RecursionError:
        raise DatasetError(f"{name} is nested too deeply to be a dataset file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        raise DatasetError(f"{name} is not valid JSON ({err}); fix it or leave it out") from None


def is_coco(data) -> bool:
    """Whether parsed JSON is meant as a COCO file (what the importer then validates in full): "images" with
    "categories" or "annotations", so that a COCO file missing one of them is refused, not left out."""
    return isinstance(data, dict) and "images" in data and ("categories" in data or "annotations" in data)


def parse_coco(data, name: str, limits: ImportLimits) -> tuple[list[str], list[dict]]:
    """Parsed COCO JSON -> (class names, images), every field checked; see read_coco."""
    problems = Problems(limits.max_problems, f"{name} cannot be imported")
    if not isinstance(data, dict):
        raise DatasetError(f"{name} is not a COCO file: it must be a JSON object with 'images' and 'categories'")
    for key in ("images", "categories", "annotations"):
        if key == "annotations" and key not in data:
            continue
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{name}: '{key}' must be a list, got {_kind(data.get(key))}")
    if len(data["images"]) > limits.max_images:
        raise DatasetError(f"{name} lists {len(data['images'])} images, more than the limit of {limits.max_images}")
    annotations = data.get("annotations", [])
    if len(annotations) > limits.max_objects:
        raise DatasetError(f"{name} holds {len(annotations)} annotations, more than the limit of {limits.max_objects}")

    if len(data["categories"]) > 10_000:
        raise DatasetError(f"{name} lists {len(data['categories'])} categories, more than the limit of 10000")
    class_of, names, seen = {}, [], set()
    for k, cat in enumerate(data["categories"]):
        with problems.at():
            where = f"{name}: categories[{k}]"
            if not isinstance(cat, dict):
                raise DatasetError(f"{where} must be an object with 'id' and 'name'")
            cid = cat.get("id")
            if isinstance(cid, bool) or not isinstance(cid, (int, str)) or cid in class_of:
                raise DatasetError(f"{where}.id must be a unique number, got {cid!r}")
            label = class_name_of(cat.get("name"), f"{where}.name")
            if label.casefold() in seen:
                raise DatasetError(f"{where}: the category name {label!r} is used twice")
            seen.add(label.casefold())
            class_of[cid] = len(names)
            names.append(label.strip())
    images: dict = {}
    for k, im in enumerate(data["images"]):
        with problems.at():
            where = f"{name}: images[{k}]"
            if not isinstance(im, dict):
                raise DatasetError(f"{where} must be an object with id, file_name, width and height")
            iid = im.get("id")
            if isinstance(iid, bool) or not isinstance(iid, (int, str)) or iid in images:
                raise DatasetError(f"{where}.id must be a unique number, got {iid!r}")
            file_name = im.get("file_name")
            if not isinstance(file_name, str) or not file_name.strip() or len(file_name) > 1024:
                raise DatasetError(f"{where}.file_name must be a non-empty text, got {file_name!r:.60}")
            width, height = image_size(im.get("width"), im.get("height"), where)
            images[iid] = {"file_name": file_name, "width": width, "height": height, "objects": [], "where": where}
    problems.raise_if_any()  # the annotations refer to these
    # categories sorted by id, as COCO tools list them; class ids follow that order
    order = sorted(class_of, key=lambda c: (isinstance(c, str), c))
    position = {cid: i for i, cid in enumerate(order)}
    for k, ann in enumerate(annotations):
        with problems.at():
            where = f"{name}: annotations[{k}]"
            if not isinstance(ann, dict):
                raise DatasetError(f"{where} must be an object")
            image = images.get(ann.get("image_id")) if isinstance(ann.get("image_id"), (int, str)) else None
            if image is None:
                raise DatasetError(f"{where}.image_id {ann.get('image_id')!r:.40} is not the id of any image")
            cid = ann.get("category_id")
            if isinstance(cid, bool) or not isinstance(cid, (int, str)) or cid not in class_of:
                raise DatasetError(f"{where}.category_id {cid!r:.40} is not the id of any category")
            w, h = image["width"], image["height"]
            box = on_image(xywh_box(ann.get("bbox"), f"{where}.bbox", w, h), f"{where}.bbox", w, h)
            score = ann.get("score")
            if score is not None:
                score = number(score, f"{where}.score")
            mask = _segmentation_mask(ann.get("segmentation"), f"{where}.segmentation", w, h, limits)
            image["objects"].append({"class_id": position[cid], "box": box, "mask": mask, "score": score})
    problems.raise_if_any()
    for image in images.values():
        del image["where"]
    return [names[class_of[c]] for c in order], list(images.values())


def _segmentation_mask(seg, where: str, width: int, height: int, limits: ImportLimits) -> dict | None:
    """A checked COCO segmentation -> compressed RLE, or None for none."""
    if seg is None or seg == []:
        return None
    if isinstance(seg, dict):
        checked = rle(seg, where, width, height)
        return _geometry(lambda: mask_to_rle(rle_to_mask(checked)), where)  # normalize to compressed counts
    polys = polygons(seg, where, width, height, limits.max_vertices)
    return _geometry(lambda: mask_to_rle(polygons_to_mask(polys, height, width)), where)


def _geometry(make, where: str):
    """Run a gdino.masks conversion on checked values; what it still refuses (e.g. an outline too long to
    rasterize) is a DatasetError naming the place, like every other problem."""
    try:
        return make()
    except ValueError as err:
        raise DatasetError(f"{where}: {err}") from None


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__
