"""Export a project (or any Dataset) to COCO, YOLO detect, YOLO segment or Pascal VOC, as a folder or
one zip. Images are written next to the labels, upright: a photo stored with an EXIF rotation is
re-encoded upright, so every trainer reads pixels that match the labels."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

from ..processing import to_rgb
from .coco import coco_records, write_coco
from .dataset import Dataset, LabeledImage, LabeledObject, split_images
from .voc import voc_xml, write_voc
from .yolo import data_yaml, write_labels, yolo_lines

FORMATS = ("coco", "yolo", "yolo-seg", "voc")


def dataset_from_project(project, *, reviewed_only: bool = False) -> Dataset:
    """The project's labels as a Dataset: all images (negatives included), or only reviewed ones.
    Skipped images are never exported. File names are made unique by stem (YOLO and VOC name label
    files after the image stem)."""
    classes = tuple(project.classes)
    index = {name: i for i, name in enumerate(classes)}
    images, stems = [], set()
    for record in project.images(order="name"):
        if record.status == "skipped" or (reviewed_only and record.status != "reviewed"):
            continue
        objects = tuple(LabeledObject(class_id=index[o.class_name], box=tuple(o.box), mask=o.mask, score=o.score, id=o.id)
                        for o in project.objects(record.id))
        name = _unique_name(record.name, stems)
        images.append(LabeledImage(file_name=name, path=Path(record.path), width=record.width, height=record.height,
                                   objects=objects, id=record.id))
    return Dataset(classes=classes, images=tuple(images))


def _unique_name(name: str, stems: set[str]) -> str:
    path = Path(Path(name).name)
    stem, n = path.stem, 1
    while stem.lower() in stems:
        n += 1
        stem = f"{path.stem}_{n}"
    stems.add(stem.lower())
    return stem + path.suffix


def export_dataset(dataset: Dataset, out_dir: str | Path, fmt: str, *, val_fraction: float = 0.0, seed: int = 0,
                   copy_images: bool = True, segmentation: str = "polygon") -> Path:
    """Write `dataset` in `fmt` under out_dir (created). Layouts:
    coco:         annotations/instances_<split>.json, images/<split>/
    yolo(-seg):   data.yaml, images/<split>/, labels/<split>/<stem>.txt
    voc:          Annotations/<stem>.xml, JPEGImages/, ImageSets/Main/<split>.txt
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = split_images(dataset.images, val_fraction, seed)
    for split, images in splits.items():
        if fmt == "coco":
            write_coco(coco_records(dataset, images, segmentation), out / "annotations" / f"instances_{split}.json")
            image_dir = out / "images" / split
        elif fmt in ("yolo", "yolo-seg"):
            image_dir = out / "images" / split
            for image in images:
                write_labels(yolo_lines(image, segmentation=fmt == "yolo-seg"),
                             out / "labels" / split / (Path(image.file_name).stem + ".txt"))
        else:
            image_dir = out / "JPEGImages"
            for image in images:
                write_voc(voc_xml(image, dataset.classes), out / "Annotations" / (Path(image.file_name).stem + ".xml"))
            lists = out / "ImageSets" / "Main"
            lists.mkdir(parents=True, exist_ok=True)
            (lists / f"{split}.txt").write_text("".join(Path(im.file_name).stem + "\n" for im in images))
        if copy_images:
            for image in images:
                write_image_upright(image, image_dir / image.file_name)
    if fmt in ("yolo", "yolo-seg"):
        (out / "data.yaml").write_text(data_yaml(dataset.classes, list(splits)))
    return out


def write_image_upright(image: LabeledImage, dest: Path) -> Path:
    """Copy the file as it is, unless it carries an EXIF rotation: then write the upright pixels."""
    if image.path is None:
        raise ValueError(f"{image.file_name}: no image file to export")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(image.path) as f:
        orientation = f.getexif().get(0x0112, 1)
        fmt = f.format
    if orientation in (None, 1):
        shutil.copyfile(image.path, dest)
        return dest
    upright = to_rgb(image.path)
    if fmt == "JPEG":
        upright.save(dest, format="JPEG", quality=95)
    else:
        upright.save(dest, format=fmt or "PNG")
    return dest


def export_zip(dataset: Dataset, zip_path: str | Path, fmt: str, **options) -> Path:
    """export_dataset into one zip file (for the browser's download)."""
    zip_path = Path(zip_path)
    with tempfile.TemporaryDirectory() as tmp:
        root = export_dataset(dataset, Path(tmp) / "export", fmt, **options)
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(root.rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(root).as_posix())
    return zip_path
