"""Training examples from a project: which images, their boxes, a seeded split, augmentation, batches.

Selection (`examples_from_project`): every "reviewed" image; with `touched=True` also every image that
is not "skipped" and that a person has worked on: it holds an object whose source is "manual" (drawn,
moved, resized or relabeled by a person, or imported as a person's label: `Project.update_object` and
every canvas edit set it), or it has a canvas edit that can be undone (a person deleted boxes). A
selected image brings all of its class objects, the model's included (on a reviewed image a person
accepted them). Objects labeled with a free-text phrase (`Project.phrases`) are never trained on: they
are no class. Images without objects are examples too (pure negatives).

Coordinates: `Example.boxes` are xyxy in pixels of the UPRIGHT image (EXIF applied, the frame the
project stores). `Target.boxes` are cxcywh normalized to the UNPADDED image, what the model predicts
(`GroundingDINOOutput.pred_boxes`): resizing keeps them, a horizontal flip maps cx to 1 - cx, and
padding a batch does not change them.

Files: an image copied into the project is read only if it is a regular file inside the project (never
a link, never through one leading out); an image referenced where it lies must still be the resolved
path stored when it was added (a link swapped in since is refused). Pixels are decoded by
`gdino.processing.to_rgb` (EXIF, odd modes, size limits), and must still have the stored size.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..processing import ImageError, batch_from_uint8, resize_to_uint8, resized_size
from ..sources import is_uri, read_image
from ..store import IMAGES_DIR, ImageRecord, Project, ProjectError

SCALES = tuple(range(480, 801, 32))  # shorter side of an augmented image: 480, 512, ..., 800
MAX_SIZE = 1333  # longer side, at most
STANDARD_SIZE = 800  # shorter side without augmentation: the model's own processing (gdino.processing)


class TrainingDataError(ProjectError):
    """The project holds nothing to train on; the message says what to do."""


@dataclass(frozen=True, eq=False)
class Example:
    """One image to train or validate on, with its ground truth."""

    image_id: int
    name: str  # the project's image name (unique, case-insensitively): the split's key
    path: Path | str  # the checked file, or an object-store image's URI
    project_dir: Path  # the file of a copied image must stay inside it
    width: int  # upright
    height: int
    boxes: np.ndarray  # (N, 4) float32 xyxy, pixels of the upright image, clipped, positive area
    class_ids: np.ndarray  # (N,) int64 indices into ExampleSet.classes
    # image_id -> the checked file to read, at every read (the app's own rules: Sessions.image_path); None:
    # `image_file`'s rules
    reader: Callable[[int], Path | str] | None = None


@dataclass(frozen=True)
class DataReport:
    images: int  # examples kept
    objects: int  # boxes kept
    model_objects: int  # of them, boxes the model made that were kept as they were
    phrase_objects: int  # left out: labeled with a free-text phrase, not a class
    clipped: int  # boxes partly outside the image, clipped to it
    dropped: int  # boxes without area inside the image (or not finite), left out
    skipped: tuple[tuple[str, str], ...]  # (image name, why) of selected images that could not be used


@dataclass(frozen=True)
class ExampleSet:
    classes: tuple[str, ...]  # the project's classes; class_ids index them
    examples: tuple[Example, ...]  # in image-name order
    report: DataReport


@dataclass(frozen=True)
class Split:
    train: tuple[Example, ...]
    val: tuple[Example, ...]


@dataclass(frozen=True)
class Augment:
    """Random shorter side (longer capped at max_size) and horizontal flip, per image."""

    scales: tuple[int, ...] = SCALES
    max_size: int = MAX_SIZE
    flip: float = 0.5  # probability of a horizontal flip


@dataclass(frozen=True, eq=False)
class Target:
    class_ids: torch.Tensor  # (N,) int64 indices into the classes
    boxes: torch.Tensor  # (N, 4) float32 cxcywh normalized to the UNPADDED image, in [0, 1]

    def as_dict(self) -> dict[str, torch.Tensor]:
        """transformers' label format: {"class_labels": (N,), "boxes": (N, 4) cxcywh normalized}."""
        return {"class_labels": self.class_ids, "boxes": self.boxes}


@dataclass(frozen=True, eq=False)
class Sample:
    example: Example
    image: torch.Tensor  # (3, h, w) uint8 at the model's input size, before padding
    target: Target


@dataclass(eq=False)
class Batch:
    pixel_values: torch.Tensor  # (B, 3, H, W) float32, ImageNet-normalized, zero-padded right/bottom to the largest
    pixel_mask: torch.Tensor  # (B, H, W) int64, 1 on image pixels, 0 on padding (all 1 when sizes agree)
    targets: list[Target]  # per image; boxes normalized to that image's unpadded extent
    image_ids: list[int]
    sizes: list[tuple[int, int]]  # (h, w) of each image in pixel_values, before padding
    original_sizes: list[tuple[int, int]]  # (h, w) of each upright original


# -- selection ---------------------------------------------------------------------------------------


def examples_from_project(project: Project, *, touched: bool = False,
                          images: Callable[[int], Path | str] | None = None) -> ExampleSet:
    """The project's training examples (see the module docstring for which). Images whose file is
    unsafe, unreadable or changed are left out and listed in `report.skipped`. Raises
    TrainingDataError when the project has no classes or no usable image. images: image_id -> the file to
    read, checked when it is read (the app passes its own rules, as to `label_images`); default
    `image_file`."""
    classes = tuple(project.classes)
    if not classes:
        raise TrainingDataError(f"the project {project.path} has no classes; add the classes to detect first")
    index = {name.casefold(): i for i, name in enumerate(classes)}
    examples, skipped = [], []
    counts = dict.fromkeys(("objects", "model", "phrase", "clipped", "dropped"), 0)
    selected = 0
    for record in project.images(order="name"):
        if record.status == "skipped" or (record.status != "reviewed" and not touched):
            continue
        objects = project.objects(record.id)
        if record.status != "reviewed" and not _touched(project, record, objects):
            continue
        selected += 1
        try:
            path = images(record.id) if images is not None else _location(record, project.path)
            _check_size(read_image(path), record.width, record.height)
        except (OSError, ImageError) as err:
            skipped.append((record.name, _why(err, record)))
            continue
        boxes, class_ids = [], []
        for o in objects:
            if o.phrase:
                counts["phrase"] += 1
                continue
            box, clipped = _clip(o.box, record.width, record.height)
            counts["clipped"] += clipped
            if box is None:
                counts["dropped"] += 1
                continue
            boxes.append(box)
            class_ids.append(index[o.class_name.casefold()])
            counts["model"] += o.source == "model"
        counts["objects"] += len(boxes)
        examples.append(Example(record.id, record.name, path, project.path, record.width, record.height,
                                np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(class_ids, dtype=np.int64),
                                images))
    if not examples:
        raise TrainingDataError(_nothing_message(project.path, touched, selected, skipped))
    report = DataReport(len(examples), counts["objects"], counts["model"], counts["phrase"], counts["clipped"],
                        counts["dropped"], tuple(skipped))
    return ExampleSet(classes, tuple(examples), report)


def _touched(project: Project, record: ImageRecord, objects) -> bool:
    """A person made or changed one of its labels: a manual object, or a canvas edit still in effect."""
    return any(o.source == "manual" for o in objects) or project.person_edited(record.id)


def _nothing_message(directory: Path, touched: bool, selected: int, skipped: list[tuple[str, str]]) -> str:
    if selected:
        shown = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        return f"none of the {selected} image(s) selected for training could be read: {shown}{more}"
    which = "reviewed images or images with labels a person made or corrected" if touched else "reviewed images"
    hint = "" if touched else ", or also train on images whose labels a person made or corrected"
    return (f"the project has no {which} to train on: check the labels of some images and mark them "
            f"reviewed{hint}")


def _clip(box, width: int, height: int) -> tuple[tuple[float, float, float, float] | None, bool]:
    """(the box clipped to the image or None if nothing of it is left, whether clipping changed it)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite((x0, y0, x1, y1))):
        return None, False
    clipped = (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        return None, False
    return clipped, clipped != (x0, y0, x1, y1)


# -- files -------------------------------------------------------------------------------------------


def image_file(path: Path, project_dir: Path) -> Path:
    """The file to read for an image, checked now (a file may have been swapped for a link since it was
    added). A copy in the project's images/ must be a regular file, not a link, whose real path lies in
    the project. A referenced file must still be the resolved path stored when it was added. Else an
    ImageError."""
    path, project_dir = Path(path), Path(project_dir)
    if path.parent == project_dir / IMAGES_DIR:
        if path.is_symlink() or not path.resolve().is_relative_to(project_dir.resolve()):
            raise ImageError("its file in the project is a link, or lies behind one leading out of the project; remove "
                             "the image or add it again")
    elif path.resolve() != path:
        raise ImageError("its file is now reached through a link; add the image again from where it really is")
    if not path.is_file():
        raise ImageError("its file is missing" if not path.exists() else "it is not a regular file")
    return path


def _location(record, project_dir: Path) -> Path | str:
    """An image's checked file (`image_file`), or its object-store URI (fetched at each read)."""
    return record.uri if record.uri is not None else image_file(record.path, project_dir)


def load_image(example: Example) -> Image.Image:
    """The example's pixels: upright RGB, checked as `image_file` does (or the example's reader), at the
    stored size. An ImageError names the image."""
    try:
        if example.reader is not None:
            path = example.reader(example.image_id)
        else:
            path = example.path if is_uri(example.path) else image_file(example.path, example.project_dir)
        rgb = read_image(path)
        _check_size(rgb, example.width, example.height)
    except (OSError, ImageError) as err:
        why = str(err).replace(repr(str(example.path)), "the file").replace(str(example.path), "the file")
        raise ImageError(f"{example.name}: {why}" if not why.startswith(example.name) else why) from err
    return rgb


def _check_size(rgb: Image.Image, width: int, height: int) -> None:
    if (rgb.width, rgb.height) != (width, height):
        raise ImageError(f"its file changed since it was added: it is {rgb.width}x{rgb.height} now, its labels are for "
                         f"{width}x{height}")


def _why(err: Exception, record: ImageRecord) -> str:
    """Why an image was left out, without its server path."""
    if record.path is None:  # an object-store image: its URI is the user's own
        return str(err)
    return str(err).replace(repr(str(record.path)), "the file").replace(str(record.path), "the file")


# -- split -------------------------------------------------------------------------------------------


def split_examples(examples: Sequence[Example], val_fraction: float = 0.2, seed: int = 0) -> Split:
    """A seeded split by image. An image is in validation when the hash of (seed, its name) falls under
    val_fraction: the same seed always gives the same split, and images added later never move an
    earlier one to the other side (the validation count is therefore about, not exactly, the fraction).
    With val_fraction > 0 and at least 2 images, each side gets at least one (the image with the lowest
    hash, or the highest, moves); a single image is for training. Order is kept."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0 or len(examples) < 2:
        return Split(tuple(examples), ())
    rank = {id(e): _unit_hash(e.name, seed) for e in examples}
    val = {id(e) for e in examples if rank[id(e)] < val_fraction}
    ordered = sorted(examples, key=lambda e: rank[id(e)])
    if not val:
        val.add(id(ordered[0]))
    if len(val) == len(examples):
        val.discard(id(ordered[-1]))
    return Split(tuple(e for e in examples if id(e) not in val), tuple(e for e in examples if id(e) in val))


def _unit_hash(name: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, name), the name compared case-insensitively as the project does."""
    digest = hashlib.sha256(f"{seed}\0{name.casefold()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


# -- samples and batches -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    example: Example
    shortest: int
    longest: int
    flip: bool

    @property
    def size(self) -> tuple[int, int]:
        return resized_size(self.example.height, self.example.width, self.shortest, self.longest)


def _plan(example: Example, augment: Augment | None, rng: random.Random, size: int = STANDARD_SIZE) -> _Plan:
    if augment is None:
        return _Plan(example, size, size * MAX_SIZE // STANDARD_SIZE, False)
    return _Plan(example, rng.choice(augment.scales), augment.max_size, rng.random() < augment.flip)


def load_sample(example: Example, augment: Augment | None = None, rng: random.Random | None = None) -> Sample:
    """Read, resize (augment None: the model's standard 800 / 1333) and maybe flip one example."""
    return _load(_plan(example, augment, rng or random.Random(0)))


def _load(plan: _Plan) -> Sample:
    example = plan.example
    image = resize_to_uint8(load_image(example), plan.shortest, plan.longest)
    boxes = xyxy_to_normalized_cxcywh(torch.from_numpy(example.boxes), example.width, example.height)
    if plan.flip:
        image = image.flip(-1)
        boxes[:, 0] = 1.0 - boxes[:, 0]
    return Sample(example, image.contiguous(), Target(torch.from_numpy(example.class_ids).clone(), boxes))


def xyxy_to_normalized_cxcywh(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(N, 4) xyxy pixels of a width x height image -> (N, 4) float32 cxcywh normalized to it."""
    x0, y0, x1, y1 = boxes.float().unbind(-1)
    out = torch.stack(((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height), -1)
    return out.reshape(-1, 4)


def collate(samples: Sequence[Sample]) -> Batch:
    """Samples -> one batch: stacked when their sizes agree, else zero-padded right/bottom to the largest
    with pixel_mask 0 on the padding. Targets stay normalized to each unpadded image."""
    if not samples:
        raise ValueError("cannot make a batch of no samples")
    images = batch_from_uint8([s.image for s in samples], [(s.example.height, s.example.width) for s in samples])
    return Batch(images.pixel_values, images.pixel_mask, [s.target for s in samples], [s.example.image_id for s in samples],
                 [tuple(s.image.shape[1:]) for s in samples], images.original_sizes)


def batches(examples: Sequence[Example], batch_size: int, *, augment: Augment | None = None, seed: int = 0,
            epoch: int = 0, shuffle: bool = True, same_size: bool = False, size: int = STANDARD_SIZE) -> Iterator[Batch]:
    """One epoch of batches, decoded as they are needed. The order, scales and flips are fixed by
    (seed, epoch). same_size: batch only images of the same input size (no padding: what the model
    sees at inference, where `Detector` never pads); the last batch of each size may be smaller. size: the
    shorter side without augmentation (longer at most 1333/800 of it), as `Detector(image_size=)`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(examples)
    if shuffle:
        rng.shuffle(order)
    plans = [_plan(e, augment, rng, size) for e in order]
    groups: list[list[_Plan]] = [plans]
    if same_size:
        by_size: dict[tuple[int, int], list[_Plan]] = {}
        for p in plans:
            by_size.setdefault(p.size, []).append(p)
        groups = list(by_size.values())
    chunks = [group[k:k + batch_size] for group in groups for k in range(0, len(group), batch_size)]
    if shuffle and same_size:
        rng.shuffle(chunks)  # sizes interleaved, not all batches of one size in a row
    for chunk in chunks:
        yield collate([_load(p) for p in chunk])
