"""Export a project (or any Dataset) to COCO, YOLO detect, YOLO segment or Pascal VOC, as a folder or
one zip. Images are written next to the labels, upright: a photo stored with an EXIF rotation is
re-encoded upright, so every trainer reads pixels that match the labels."""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ..checks import character_problem
from ..masks import check_rle
from ..processing import ImageError, open_image_file, to_rgb
from ..sources import local_file
from ..store.durable import fsync
from .coco import coco_records, write_coco
from .dataset import Dataset, LabeledImage, LabeledObject, split_images
from .voc import voc_xml, write_voc
from .yolo import data_yaml, inexact_masks, write_labels, yolo_lines

FORMATS = ("coco", "yolo", "yolo-seg", "voc")


def dataset_from_project(project, *, reviewed_only: bool = False, left_out: dict[str, int] | None = None,
                         not_exported: dict[str, list[str]] | None = None) -> Dataset:
    """The project's labels as a Dataset: all images (negatives included), or only reviewed ones.
    Skipped images are never exported: a person marked them "not for the dataset" (a blurred frame, a
    duplicate), and an image exported without its objects would teach a trainer they are background.
    `not_exported` gets {status: [image names]} of the images left out for their status, so that the
    caller can say so. File names are made unique by stem (YOLO and VOC name label
    files after the image stem). Objects labeled with a free-text phrase that is not mapped to a class yet
    are not exported (their phrase is no category); `left_out` gets {phrase: objects left out}."""
    classes = tuple(project.classes)
    index = {name: i for i, name in enumerate(classes)}
    images, stems = [], set()
    for record in project.images(order="name"):
        if record.status == "skipped" or (reviewed_only and record.status != "reviewed"):
            if not_exported is not None:
                not_exported.setdefault(record.status, []).append(record.name)
            continue
        objects = []
        for o in project.objects(record.id):
            if o.phrase:
                if left_out is not None:
                    left_out[o.class_name] = left_out.get(o.class_name, 0) + 1
                continue
            objects.append(LabeledObject(class_id=index[o.class_name], box=tuple(o.box), mask=o.mask, score=o.score, id=o.id))
        name = _unique_name(record.name, stems)
        images.append(LabeledImage(file_name=name, path=None if record.path is None else Path(record.path),
                                   width=record.width, height=record.height, objects=tuple(objects), id=record.id,
                                   uri=record.uri))
    return Dataset(classes=classes, images=tuple(images))


def _unique_name(name: str, stems: set[str]) -> str:
    """The image's file name in the export: unique by stem, and what the rule for class names refuses (a
    line break, a control character: image names may hold them) made "_", since VOC's lists are lines and
    its XML cannot hold control characters."""
    name = "".join("_" if character_problem(c) is not None else c for c in name)
    path = Path(Path(name).name)
    stem, n = path.stem, 1
    while stem.lower() in stems:
        n += 1
        stem = f"{path.stem}_{n}"
    stems.add(stem.lower())
    return stem + path.suffix


def export_dataset(dataset: Dataset, out_dir: str | Path, fmt: str, *, val_fraction: float = 0.0, seed: int = 0,
                   copy_images: bool = True, segmentation: str = "polygon", overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   skipped: list[tuple[str, str]] | None = None, keep: Sequence[Path] = (),
                   inexact: list[tuple[str, int | None, float]] | None = None) -> Path:
    """Write `dataset` in `fmt` as the folder out_dir. Layouts:
    coco:         annotations/instances_<split>.json, images/<split>/
    yolo(-seg):   data.yaml, images/<split>/, labels/<split>/<stem>.txt
    voc:          Annotations/<stem>.xml, JPEGImages/, ImageSets/Main/<split>.txt

    Atomic: the export is built in a hidden sibling folder and moved into place whole, so a kill at any
    moment leaves either the previous export intact or the new one complete, never a mix. An existing
    non-empty out_dir is refused (ExportError) unless overwrite=True, which replaces it whole.
    An image whose file is missing or unreadable is left out of the export (labels too) and appended to
    `skipped` as (file name, why); the others keep the split they would have had.
    progress(done, total) is called after each image.
    inexact: yolo-seg writes one polygon per object; the objects whose mask it does not give back exactly
    (`yolo.inexact_masks`) are appended as (file name, object id, IoU of the mask read back).
    keep: folders the export must never replace nor lie inside (the project's); the images' own files
    are always kept out of reach: a target holding one of them is refused, overwrite or not.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out_dir).absolute()
    _remove_stale(out)  # first: it may give a previous export back, which the check must then see
    _check_target(out, overwrite, "folder", _kept(dataset, keep))
    tmp = out.parent / f".{out.name}{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        _write_export(dataset, tmp, fmt, val_fraction, seed, copy_images, segmentation, progress, skipped, inexact)
        _swap_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class ExportError(ValueError):
    """An export that cannot be written where asked. `reason` says why in a few words; `overwritable` tells
    whether overwrite=True would allow it (a non-empty target) or not (a file, the project itself)."""

    def __init__(self, message: str, reason: str = "", overwritable: bool = False):
        super().__init__(message)
        self.reason = reason or message
        self.overwritable = overwritable


_PARTIAL = ".gdino-partial-"


def _kept(dataset: Dataset, keep: Sequence[Path]) -> list[Path]:
    """What an export target may neither be, hold nor lie inside: `keep` and every exported image's file."""
    return [*keep, *(image.path for image in dataset.images if image.path is not None)]


def _check_target(out: Path, overwrite: bool, kind: str, keep: Sequence[Path] = ()) -> None:
    """Refuse a target that is a file (folder exports) or a folder (zips), that is or holds or lies inside
    one of `keep` (the project, the images exported: replacing the target would delete them), or that
    exists and is not empty, unless overwrite."""
    if kind == "folder" and out.is_file():
        raise ExportError(f"{out} is a file; choose a folder to export into", "it is a file")
    if kind == "zip" and out.is_dir():
        raise ExportError(f"{out} is a folder; choose a .zip file name", "it is a folder")
    target = out.resolve()
    for path in keep:
        kept = Path(path).resolve()
        if kept == target or target in kept.parents:
            raise ExportError(f"{out} holds {kept.name}, which the export reads; choose a folder of its own",
                              f"it holds {kept.name}, which the export reads")
        if kind == "folder" and kept.is_dir() and kept in target.parents:
            raise ExportError(f"{out} is inside {kept}; choose a folder outside the project",
                              "it is inside the project")
    if overwrite or not out.exists():
        return
    if kind == "folder" and not any(out.iterdir()):
        return
    raise ExportError(f"{out} already exists{' and is not empty' if kind == 'folder' else ''}; choose another "
                      "place, or overwrite to replace it whole",
                      "it already exists" + (" and is not empty" if kind == "folder" else ""), overwritable=True)


def _remove_stale(out: Path) -> None:
    """Hidden partial exports left beside `out` by processes that were killed (their pid is gone). A
    previous export that a killed process had moved aside (file systems without an atomic exchange) is
    moved back when `out` is missing, not deleted."""
    if not out.parent.is_dir():
        return
    for path in sorted(out.parent.glob(f".{glob.escape(out.name)}{_PARTIAL}*")):
        pid = path.name[len(out.name) + 1 + len(_PARTIAL):].split("-")[0].split(".")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if "-old-" in path.name and not out.exists():
            os.rename(path, out)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _swap_into_place(new: Path, out: Path) -> None:
    """Move the finished folder `new` to `out`. An existing `out` is exchanged with it in one atomic step
    (renameat2 RENAME_EXCHANGE, Linux), then deleted; elsewhere it is moved aside first."""
    fsync(new)
    if not out.exists():
        os.rename(new, out)
    elif not _exchange(new, out):
        aside = out.parent / f".{out.name}{_PARTIAL}{os.getpid()}-old-{uuid.uuid4().hex[:8]}"
        os.rename(out, aside)
        os.rename(new, out)
        shutil.rmtree(aside, ignore_errors=True)
    fsync(out.parent)
    if new.exists():  # after an exchange: the previous export
        shutil.rmtree(new, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    # fails (not 0) e.g. on a file system without RENAME_EXCHANGE: the caller then moves `b` aside instead
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _write_export(dataset: Dataset, out: Path, fmt: str, val_fraction: float, seed: int, copy_images: bool,
                  segmentation: str, progress, skipped, inexact=None) -> None:
    splits = split_images(dataset.images, val_fraction, seed)
    total, done = len(dataset.images), 0
    written: dict[str, list[LabeledImage]] = {}
    for split, images in splits.items():  # the pixels first: an image that cannot be read leaves its labels out
        image_dir = out / ("JPEGImages" if fmt == "voc" else f"images/{split}")
        image_dir.mkdir(parents=True, exist_ok=True)
        written[split] = []
        for image in images:
            try:
                if fmt in ("coco", "yolo-seg"):
                    check_masks(image)
                if copy_images:
                    write_image_upright(image, image_dir / image.file_name)
                written[split].append(image)
            except (OSError, ValueError) as err:  # ImageError is a ValueError
                if skipped is not None:
                    skipped.append((image.file_name, _why(err, image)))
            done += 1
            if progress is not None:
                progress(done, total)
    for split, images in written.items():
        if fmt == "coco":
            write_coco(coco_records(dataset, images, segmentation), out / "annotations" / f"instances_{split}.json")
        elif fmt in ("yolo", "yolo-seg"):
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
            for image in images:
                lines = yolo_lines(image, segmentation=fmt == "yolo-seg")
                write_labels(lines, out / "labels" / split / (Path(image.file_name).stem + ".txt"))
                if fmt == "yolo-seg" and inexact is not None:
                    inexact.extend((image.file_name, i, iou) for i, iou in inexact_masks(image, lines))
        else:
            for image in images:
                write_voc(voc_xml(image, dataset.classes), out / "Annotations" / (Path(image.file_name).stem + ".xml"))
            lists = out / "ImageSets" / "Main"
            lists.mkdir(parents=True, exist_ok=True)
            (lists / f"{split}.txt").write_text("".join(Path(im.file_name).stem + "\n" for im in images))
    if fmt in ("yolo", "yolo-seg"):
        (out / "data.yaml").write_text(data_yaml(dataset.classes, list(splits)))


def check_masks(image: LabeledImage) -> None:
    """Every mask of the image decodes as a mask of its size, or ValueError naming the object: the image is
    then left out whole (listed), as one whose file cannot be read is, since without that object its labels
    would teach a trainer that the object is background."""
    for obj in image.objects:
        if obj.mask is not None:
            try:
                check_rle(obj.mask, image.height, image.width)
            except ValueError as err:
                which = f"object {obj.id}" if obj.id is not None else "an object"
                raise ValueError(f"{which}'s mask cannot be read ({err}); fix or delete that object") from None


def _why(err: Exception, image: LabeledImage) -> str:
    """Why an image was left out, without its server path (an object-store image's URI is the user's own)."""
    if image.uri is not None:
        return str(err)
    if image.path is None or isinstance(err, FileNotFoundError) or not image.path.exists():
        return "its file is missing"
    text = str(err).replace(f"the image {str(image.path)!r}", "the file")
    return text.replace(repr(str(image.path)), "the file").replace(str(image.path), "the file")


def write_image_upright(image: LabeledImage, dest: Path) -> Path:
    """Copy the file as it is, unless it carries an EXIF rotation: then write the upright pixels. The
    pixels are decoded in full either way, so a truncated or corrupt file is refused (ImageError), not
    exported. An object-store image is fetched first (`sources.local_file`)."""
    if image.uri is not None:
        with local_file(image.uri) as fetched:
            try:
                return _write_upright(fetched, dest, (image.width, image.height))
            except ImageError as err:
                raise ImageError(str(err).replace(str(fetched), image.uri)) from None
    if image.path is None:
        raise ValueError(f"{image.file_name}: no image file to export")
    return _write_upright(image.path, dest, (image.width, image.height))


_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def _write_upright(source: Path, dest: Path, size: tuple[int, int]) -> Path:
    """size: (width, height) the labels are for; upright pixels of another size are refused (ImageError)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open_image_file(source) as f:
        orientation = f.getexif().get(0x0112, 1)
        fmt = f.format
        upright = f.size[::-1] if orientation in _TURNED else f.size
        if tuple(upright) != tuple(size):
            raise ImageError(f"the image is {upright[0]}x{upright[1]} (upright) but its labels are for a "
                             f"{size[0]}x{size[1]} image (the file changed, or the labels were made for other pixels)")
        f.load()  # every pixel: a truncated file fails here
    if orientation in (None, 1):
        shutil.copyfile(source, dest)
        return dest
    upright = to_rgb(source)
    if fmt == "JPEG":
        upright.save(dest, format="JPEG", quality=95)
    else:
        upright.save(dest, format=fmt or "PNG")
    return dest


def export_zip(dataset: Dataset, zip_path: str | Path, fmt: str, *, overwrite: bool = False,
               progress: Callable[[int, int], None] | None = None, skipped: list[tuple[str, str]] | None = None,
               keep: Sequence[Path] = (), **options) -> Path:
    """export_dataset into one zip file (for the browser's download). Atomic like export_dataset: the zip
    is written under a hidden temporary name beside zip_path and renamed over it when complete. An
    existing zip_path is refused unless overwrite=True."""
    zip_path = Path(zip_path).absolute()
    _remove_stale(zip_path)
    _check_target(zip_path, overwrite, "zip", _kept(dataset, keep))
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    partial = zip_path.parent / f".{zip_path.name}{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}.zip"
    try:
        with tempfile.TemporaryDirectory(prefix="gdino-export-") as tmp:
            root = Path(tmp) / "export"
            export_dataset(dataset, root, fmt, progress=progress, skipped=skipped, **options)
            with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for file in sorted(root.rglob("*")):
                    if file.is_file():
                        zf.write(file, file.relative_to(root).as_posix())
            fsync(partial)
        os.replace(partial, zip_path)
        fsync(zip_path.parent)
    finally:
        partial.unlink(missing_ok=True)
    return zip_path
