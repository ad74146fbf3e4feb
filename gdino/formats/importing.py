"""Import labeled datasets into a project to continue labeling: COCO JSON + images, YOLO folders, and
zip uploads of either (extracted safely). Imported labels count as people's labels (source "manual");
an image comes in as "reviewed", or as "auto" when its labels carry scores (someone's predictions)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..processing import ImageError
from ..safezip import extract_zip
from .coco import read_coco
from .yolo import read_yolo_labels

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class ImportReport:
    images: int = 0
    objects: int = 0
    problems: list[str] = field(default_factory=list)  # what was not imported, and why


def import_coco(project, json_path: str | Path, images_dir: str | Path | None = None) -> ImportReport:
    """A COCO file and its images (default: next to the file, in images/ or the same folder)."""
    json_path = Path(json_path)
    classes, images = read_coco(json_path)
    roots = [Path(images_dir)] if images_dir else [json_path.parent / "images", json_path.parent,
                                                     json_path.parent.parent / "images"]
    project.add_classes(classes)
    report = ImportReport()
    for image in images:
        path = _find(image["file_name"], roots)
        if path is None:
            report.problems.append(f"{image['file_name']}: image file not found under {', '.join(map(str, roots))}")
            continue
        _add(project, path, (image["height"], image["width"]), classes, image["objects"], report)
    return report


def import_yolo(project, folder: str | Path) -> ImportReport:
    """A YOLO dataset folder: data.yaml (class names), images/..., labels/... (same relative paths)."""
    folder = Path(folder)
    classes = _yolo_names(folder)
    project.add_classes(classes)
    report = ImportReport()
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        label = _yolo_label_path(folder, path)
        try:
            record = project.add_image(path)
        except ImageError as err:
            report.problems.append(f"{path.name}: {err}")
            continue
        objects = []
        if label is not None:
            try:
                objects = read_yolo_labels(label, record.width, record.height, len(classes))
            except ValueError as err:
                report.problems.append(str(err))
        _add_objects(project, record, classes, objects, report)
    return report


def import_zip(project, zip_path: str | Path) -> ImportReport:
    """A zip of a COCO dataset (a .json with images and categories), a YOLO dataset (data.yaml), or
    plain images. Extracted with gdino.safezip: nothing outside the temporary folder, size limits."""
    with tempfile.TemporaryDirectory() as tmp:
        files = extract_zip(zip_path, tmp)
        coco = [f for f in files if f.suffix.lower() == ".json" and _looks_like_coco(f)]
        if coco:
            report = ImportReport()
            for f in coco:
                part = import_coco(project, f, _images_root(f, Path(tmp)))
                report.images += part.images
                report.objects += part.objects
                report.problems += part.problems
            return report
        yaml = [f for f in files if f.name in ("data.yaml", "dataset.yaml")]
        if yaml:
            return import_yolo(project, yaml[0].parent)
        report = ImportReport()
        for f in sorted(files):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    project.add_image(f)
                    report.images += 1
                except ImageError as err:
                    report.problems.append(f"{f.name}: {err}")
            else:
                report.problems.append(f"{f.name}: not an image, a COCO file or a data.yaml; ignored")
        return report


def _add(project, path: Path, size: tuple[int, int], classes, objects, report: ImportReport) -> None:
    try:
        record = project.add_image(path)
    except ImageError as err:
        report.problems.append(f"{path.name}: {err}")
        return
    if (record.height, record.width) != size:
        report.problems.append(f"{path.name}: the labels are for a {size[1]}x{size[0]} image but the file is "
                               f"{record.width}x{record.height} (upright); its labels were not imported")
        project.set_status(record.id, "unlabeled")
        report.images += 1
        return
    _add_objects(project, record, classes, objects, report)


def _add_objects(project, record, classes, objects, report: ImportReport) -> None:
    has_scores = any(obj.get("score") is not None for obj in objects)
    project.add_objects(record.id, [{"box": o["box"], "class_name": classes[o["class_id"]], "score": o.get("score"),
                                     "mask": o.get("mask")} for o in objects],
                        source="manual", status="auto" if has_scores else "reviewed")
    report.images += 1
    report.objects += len(objects)


def _find(file_name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        for candidate in (root / file_name, root / Path(file_name).name):
            if candidate.is_file():
                return candidate
    for root in roots:  # COCO exports often keep split folders (images/train/x.jpg)
        if root.is_dir():
            hits = list(root.rglob(Path(file_name).name))
            if hits:
                return hits[0]
    return None


def _looks_like_coco(path: Path) -> bool:
    head = path.read_text(errors="ignore")[:100_000]
    return '"categories"' in head and '"images"' in head


def _images_root(json_path: Path, top: Path) -> Path:
    for folder in (json_path.parent / "images", json_path.parent.parent / "images", top / "images"):
        if folder.is_dir():
            return folder
    return json_path.parent


def _yolo_names(folder: Path) -> list[str]:
    yaml_path = next((folder / n for n in ("data.yaml", "dataset.yaml") if (folder / n).is_file()), None)
    if yaml_path is None:
        raise ValueError(f"{folder} has no data.yaml: a YOLO dataset needs one with the class names")
    try:
        import yaml

        data = yaml.safe_load(yaml_path.read_text())
    except Exception as err:
        raise ValueError(f"could not read {yaml_path}: {err}") from err
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{yaml_path} has no class names (a 'names' list or mapping)")
    return [str(n) for n in names]


def _yolo_label_path(folder: Path, image: Path) -> Path | None:
    relative = image.relative_to(folder)
    parts = list(relative.parts)
    candidates = []
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        candidates.append(folder.joinpath(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt"))
    candidates.append(image.with_suffix(".txt"))
    return next((c for c in candidates if c.is_file()), None)


