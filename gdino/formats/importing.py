"""Import labeled datasets into a project to continue labeling: COCO JSON + images, YOLO folders, plain
image folders, and zips of any of them (extracted safely). Imported labels count as people's labels
(source "manual"); an image comes in as "reviewed", or as "auto" when its labels carry scores (someone's
predictions); images without labels come in "unlabeled".

Every import is all or nothing, in two steps:
1. check: formats are found by parsing (a .json that parses to an object with "images" and
   "categories" or "annotations" is COCO, a data.yaml is YOLO), every field and number is validated
   (`gdino.formats.validate`), every file name is resolved inside the dataset's own folder (no absolute
   paths, no "..", no symlink leading out), every image is decoded in full and its size compared with
   its labels. Any problem refuses the whole import with one DatasetError listing them; nothing is added.
2. add: `Project.add_labeled` copies the files, then adds everything in one short transaction.

Messages name files relative to the dataset (never a server path), so they reveal nothing about the
server's disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import show_name
from ..processing import ImageError
from ..safezip import extract_zip
from ..store import NewImage, decoded_size
from ..store.values import image_name
from .coco import is_coco, load_json, parse_coco
from .problems import Problems
from .validate import DatasetError, ImportLimits, class_name_of
from .yolo import read_yolo_labels

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
YAML_NAMES = ("data.yaml", "dataset.yaml")
YAML_MAX_BYTES = 1_000_000  # a data.yaml is a few lines; PyYAML takes seconds per 10 kB of hostile nesting
YAML_MAX_DEPTH = 32  # nested [ and { (real ones use 2)
_DRIVE = re.compile(r"^[A-Za-z]:")

__all__ = ["DatasetError", "IMAGE_SUFFIXES", "ImportLimits", "ImportReport", "import_coco", "import_folder",
           "import_path", "import_yolo", "import_zip"]


@dataclass
class ImportReport:
    images: int = 0  # exactly the images added
    objects: int = 0  # exactly the objects added
    problems: list[str] = field(default_factory=list)  # notes: files left out (not images or labels), and why


@dataclass
class _Pending:
    """An image found and checked, with its labels, before anything is written."""

    path: Path
    name: str  # relative to the dataset root, for messages
    classes: list[str]
    objects: list[dict]  # class_id, box, mask, score
    labeled: bool
    size: tuple[int, int] | None = None  # (width, height) the labels are for
    label: Path | None = None  # YOLO: the label file, read once the image's size is known
    label_name: str = ""  # relative to the dataset root, for messages


# -- entry points -----------------------------------------------------------------------------------------


def import_path(project, source: str | os.PathLike, limits: ImportLimits | None = None, *,
                keyed: bool = False) -> ImportReport:
    """A zip, a COCO .json, or a folder (COCO, YOLO, or plain images), whichever `source` is.
    keyed: remember each image by where it came from (a zip by its content digest, a folder or a .json by
    its path), so that importing the same source again adds only what it did not add before."""
    source = Path(source)
    key = None
    if keyed:
        key = f"zip-sha256:{file_digest(source)}" if source.suffix.lower() == ".zip" and source.is_file() else \
            f"import:{source.resolve()}"
    if source.is_dir():
        return import_folder(project, source, limits, key=key)
    if source.suffix.lower() == ".zip":
        return import_zip(project, source, limits, key=key)
    if source.suffix.lower() == ".json":
        return import_coco(project, source, limits=limits, key=key)
    if source.is_file():
        raise DatasetError(f"{source.name} is not a zip, a COCO .json or a folder")
    raise DatasetError(f"{source.name}: no such file or folder")


def import_zip(project, zip_path: str | os.PathLike, limits: ImportLimits | None = None, *,
               key: str | None = None) -> ImportReport:
    """A zip of a COCO dataset, a YOLO dataset or plain images. Extracted with gdino.safezip (nothing
    outside a temporary folder, size and count limits), then imported as a folder.
    key: names this archive (the app passes its content digest); each image is keyed "<key>/<its path in
    the zip>", so importing the same archive again adds only what it has not added before."""
    limits = limits or ImportLimits()
    with tempfile.TemporaryDirectory(prefix="gdino-import-") as tmp:
        extract_zip(zip_path, tmp, max_files=limits.max_images + 1000)
        return import_folder(project, tmp, limits, key=key)


def import_folder(project, folder: str | os.PathLike, limits: ImportLimits | None = None, *,
                  key: str | None = None) -> ImportReport:
    """A dataset folder: every COCO .json in it (with their images), else its data.yaml (YOLO), else its
    images (unlabeled). Files are only ever read inside `folder`."""
    limits = limits or ImportLimits()
    root = Path(folder).resolve()
    files = _files_under(root)
    notes: list[str] = []
    cocos = []
    for path in files:
        if path.suffix.lower() == ".json":
            data = load_json(path, limits, _rel(path, root))
            if is_coco(data):
                cocos.append((path, data))
            else:
                notes.append(f"{_rel(path, root)}: a JSON file that is not COCO (no 'images' with 'categories' or "
                             "'annotations'); left out")
    if cocos:
        pending = _coco_pending(cocos, root, files, limits, notes)
    elif any(p.name in YAML_NAMES for p in files):
        yaml_path = min((p for p in files if p.name in YAML_NAMES), key=lambda p: len(p.parts))
        pending = _yolo_pending(yaml_path.parent, root, files, limits, notes)
    else:
        pending = []
        for path in files:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                pending.append(_Pending(path, _rel(path, root), [], [], labeled=False))
            elif path.suffix.lower() != ".json":
                notes.append(f"{_rel(path, root)}: not an image, a COCO file or a data.yaml; left out")
    return _add(project, pending, limits, notes, key)


def import_coco(project, json_path: str | os.PathLike, images_dir: str | os.PathLike | None = None, *,
                limits: ImportLimits | None = None, key: str | None = None) -> ImportReport:
    """A COCO file and its images. The dataset's folder is `images_dir` if given, else the file's folder
    (its parent's, when the file sits in "annotations/", COCO's own layout); file names resolve only
    inside it."""
    limits = limits or ImportLimits()
    json_path = Path(json_path).resolve()
    if images_dir is not None:
        root = Path(images_dir).resolve()
    else:
        root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    name = _rel(json_path, root) if json_path.is_relative_to(root) else json_path.name
    data = load_json(json_path, limits, name)
    if not is_coco(data):
        raise DatasetError(f"{name} is not a COCO file: it needs 'images' and 'categories' lists")
    notes: list[str] = []
    pending = _coco_pending([(json_path, data)], root, _files_under(root), limits, notes, note_unlisted=False)
    return _add(project, pending, limits, notes, key)


def import_yolo(project, folder: str | os.PathLike, limits: ImportLimits | None = None) -> ImportReport:
    """A YOLO dataset folder: data.yaml (class names), images/..., labels/... (same relative paths)."""
    limits = limits or ImportLimits()
    root = Path(folder).resolve()
    if _yolo_yaml(root, root) is None:
        raise DatasetError(f"{root.name} has no data.yaml: a YOLO dataset needs one with the class names")
    notes: list[str] = []
    return _add(project, _yolo_pending(root, root, _files_under(root), limits, notes), limits, notes)


# -- COCO -------------------------------------------------------------------------------------------------


def _coco_pending(cocos, root: Path, files: list[Path], limits: ImportLimits, notes: list[str], *,
                  note_unlisted: bool = True) -> list[_Pending]:
    problems = Problems(limits.max_problems, "the dataset cannot be imported")
    index = _ImageIndex(root, files)
    pending: list[_Pending] = []
    listed: dict[Path, str] = {}
    for path, data in cocos:
        name = _rel(path, root) if path.is_relative_to(root) else path.name
        classes, images = parse_coco(data, name, limits)
        for k, image in enumerate(images):
            with problems.at():
                file = index.resolve(image["file_name"], f"{name}: images[{k}].file_name")
                if file in listed:
                    raise DatasetError(f"{name}: images[{k}] is {_rel(file, root)}, which {listed[file]} lists too")
                listed[file] = name
                pending.append(_Pending(file, _rel(file, root), classes, image["objects"], labeled=True,
                                        size=(image["width"], image["height"])))
    problems.raise_if_any()
    if note_unlisted:
        unlisted = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p not in listed]
        if unlisted:
            notes.append(f"{len(unlisted)} image(s) that no COCO file lists were left out "
                         f"(e.g. {_rel(unlisted[0], root)})")
    return pending


class _ImageIndex:
    """Finds a COCO file_name among the dataset's own files, and nowhere else."""

    def __init__(self, root: Path, files: list[Path]):
        self.root = root
        self.by_name: dict[str, list[Path]] = {}
        for path in files:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                self.by_name.setdefault(path.name.casefold(), []).append(path)

    def resolve(self, file_name: str, where: str) -> Path:
        text = file_name.replace("\\", "/")
        if "\0" in text:
            raise DatasetError(f"{where} {file_name!r:.80} holds a NUL character")
        if text.startswith("/") or _DRIVE.match(text):
            # only the last part is shown: the rest is a path on someone's disk, and says nothing about the dataset
            raise DatasetError(f"{where} is an absolute path (.../{text.rsplit('/', 1)[-1]!r:.80}); file names must be "
                               "relative to the dataset's folder")
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise DatasetError(f"{where} {file_name!r:.80} climbs out of the dataset's folder with '..'")
        if not parts:
            raise DatasetError(f"{where} is empty")
        for candidate in (self.root.joinpath(*parts), self.root.joinpath("images", *parts)):
            if self._inside(candidate):
                return candidate.resolve()
        hits = [p for p in self.by_name.get(parts[-1].casefold(), []) if self._inside(p)]
        tail = [p for p in hits if p.relative_to(self.root).parts[-len(parts):] == tuple(parts)]
        if len(tail) == 1 or len(hits) == 1:
            return (tail or hits)[0].resolve()
        if hits:
            some = ", ".join(_rel(p, self.root) for p in hits[:3])
            raise DatasetError(f"{where} {file_name!r:.80} matches several files ({some}); give its path inside "
                               "the dataset")
        raise DatasetError(f"{where}: the image {file_name!r:.80} is not in the dataset")

    def _inside(self, path: Path) -> bool:
        """An existing regular file whose real path lies inside the root (symlinks may not lead out)."""
        try:
            return path.is_file() and path.resolve().is_relative_to(self.root)
        except OSError:
            return False


# -- YOLO -------------------------------------------------------------------------------------------------


def _yolo_pending(folder: Path, root: Path, files: list[Path], limits: ImportLimits, notes: list[str]) -> list[_Pending]:
    classes = _yolo_names(folder, root, limits)
    pending = []
    for path in files:
        if not path.is_relative_to(folder):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            pending.append(_Pending(path, _rel(path, root), classes, [], labeled=True,
                                    label=_yolo_label_path(folder, path)))
            if pending[-1].label is not None:
                pending[-1].label_name = _rel(pending[-1].label, root)
        elif path.suffix.lower() not in (".txt", ".yaml", ".yml", ".cache", ".json"):
            notes.append(f"{_rel(path, root)}: not an image or a label file; left out")
    return pending


def _yolo_yaml(folder: Path, root: Path) -> Path | None:
    """The folder's data.yaml (or dataset.yaml): a regular file inside root, not a link leading out."""
    for n in YAML_NAMES:
        path = folder / n
        try:
            if path.is_file() and path.resolve().is_relative_to(root):
                return path
        except OSError:
            continue
    return None


def _yolo_names(folder: Path, root: Path, limits: ImportLimits) -> list[str]:
    yaml_path = _yolo_yaml(folder, root)
    if yaml_path is None:
        raise DatasetError(f"{_rel(folder, root) if folder != root else folder.name} has no data.yaml: a YOLO dataset "
                           "needs one with the class names")
    name = _rel(yaml_path, root)
    if yaml_path.stat().st_size > YAML_MAX_BYTES:
        raise DatasetError(f"{name} is larger than {YAML_MAX_BYTES / 1e6:.0f} MB; a data.yaml is a few lines")
    import yaml

    try:
        text = yaml_path.read_text(encoding="utf-8")
        if _nesting(text) > YAML_MAX_DEPTH:
            raise DatasetError(f"{name} nests lists or mappings more than {YAML_MAX_DEPTH} deep; a data.yaml is a few "
                               "lines")
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise DatasetError(f"{name} uses YAML aliases (*name); write the class names out")
        data = yaml.safe_load(text)
    except DatasetError:
        raise
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as err:
        raise DatasetError(f"{name} is not valid YAML ({str(err).splitlines()[0][:120]})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in names) or sorted(names) != list(range(len(names))):
            raise DatasetError(f"{name}: 'names' as a mapping must number the classes 0, 1, 2, ... without gaps")
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{name} has no class names (a 'names' list or mapping)")
    if len(names) > 10_000:
        raise DatasetError(f"{name} lists {len(names)} classes, more than the limit of 10000")
    out, seen = [], set()
    for k, n in enumerate(names):
        n = class_name_of(n, f"{name}: names[{k}]", numbers=True)
        if n.casefold() in seen:
            raise DatasetError(f"{name}: the class name {show_name(n)} is listed twice")
        seen.add(n.casefold())
        out.append(n)
    return out


def _nesting(text: str) -> int:
    """How deep [ and { nest in YAML text (brackets inside quoted names count too: no real data.yaml comes
    close). PyYAML is pure Python here and slow on deep nesting, so this runs first."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _yolo_label_path(folder: Path, image: Path) -> Path | None:
    relative = image.relative_to(folder)
    parts = list(relative.parts)
    candidates = []
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        candidates.append(folder.joinpath(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt"))
    candidates.append(image.with_suffix(".txt"))
    return next((c for c in candidates if c.is_file() and c.resolve().is_relative_to(folder)), None)


# -- checking the images, then adding ---------------------------------------------------------------------


def _add(project, pending: list[_Pending], limits: ImportLimits, notes: list[str], key: str | None = None) -> ImportReport:
    """Decode every image, check it against its labels, then add all of it in one go."""
    if len(pending) > limits.max_images:
        raise DatasetError(f"the dataset holds {len(pending)} images, more than the limit of {limits.max_images}")
    problems = Problems(limits.max_problems, "the dataset cannot be imported")
    records, total = [], 0
    classes: list[str] = []
    known: set[str] = set()
    for item in pending:
        with problems.at():
            try:
                width, height = decoded_size(item.path, item.name)
            except ImageError as err:
                raise DatasetError(str(err)) from None
            objects = item.objects
            if item.label is not None:  # YOLO: labels are fractions, read once the size is known
                objects = read_yolo_labels(item.label, width, height, len(item.classes), name=item.label_name,
                                           limits=limits)
            elif item.size is not None and item.size != (width, height):
                raise DatasetError(f"{item.name}: the labels are for a {item.size[0]}x{item.size[1]} image but the file "
                                   f"is {width}x{height} (upright)")
            total += len(objects)
            if total > limits.max_objects:
                raise DatasetError(f"the dataset holds more than {limits.max_objects} objects, the limit for one import")
            for c in item.classes:
                if c.casefold() not in known:
                    known.add(c.casefold())
                    classes.append(c)
            scored = any(o.get("score") is not None for o in objects)
            status = ("auto" if scored else "reviewed") if item.labeled else "unlabeled"
            records.append(NewImage(item.path, image_name(Path(item.name).name), width, height, status,
                                    tuple({"box": o["box"], "class_name": item.classes[o["class_id"]],
                                           "score": o.get("score"), "mask": o.get("mask")} for o in objects),
                                    key=None if key is None else f"{key}/{item.name}"))
        if len(problems.found) > limits.max_problems:
            break  # enough to show; no need to decode the rest
    problems.raise_if_any()
    added = project.add_labeled(records, _project_spelling(project, classes))
    if len(added) < len(records):
        notes.append(f"{len(records) - len(added)} image(s) came in with this same archive before; not added again")
    return ImportReport(images=len(added), objects=sum(r.num_objects for r in added), problems=notes)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _project_spelling(project, classes: list[str]) -> list[str]:
    """Classes the project already has keep the project's spelling (names compare case-insensitively)."""
    have = {c.casefold(): c for c in project.classes}
    return [have.get(c.casefold(), c) for c in classes]


def _files_under(root: Path) -> list[Path]:
    """Every regular file under root, sorted, skipping hidden ones and symlinks that lead outside."""
    out = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        for name in names:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                if path.is_file() and path.resolve().is_relative_to(root):
                    out.append(path)
            except OSError:
                continue
    return sorted(out)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name
