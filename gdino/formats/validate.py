"""Checks on the numbers an imported dataset brings, before any geometry code sees them.

Imported files are untrusted: a COCO polygon at 1e11 or NaN, or an RLE whose counts run past the image,
makes pycocotools crash the process or allocate gigabytes. Everything here is pure Python on plain
values; each check returns the cleaned value or raises DatasetError with a message that names the place
(`where`: file and field, never a server path) and what was wrong.

Coordinate bound: a box or polygon coordinate may lie outside the image (labels often overshoot a
little, and boxes are clipped when stored) but not beyond one image size past either edge:
x in [-W, 2W], y in [-H, 2H].
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..checks import CLASS_NAME_MAX_CHARS, RULE, class_name_problem, show_name
from ..processing import MAX_PIXELS


class DatasetError(ValueError):
    """A dataset that cannot be imported as it is; nothing was added. The message says what to fix."""


@dataclass(frozen=True)
class ImportLimits:
    """Caps on what one import may bring (the app and `gdino import --max-objects` pass their own)."""

    max_images: int = 20_000
    max_objects: int = 200_000  # annotations in all
    max_vertices: int = 20_000  # (x, y) points per object's polygon(s)
    max_json_bytes: int = 512 * 1024**2  # one COCO file
    max_label_bytes: int = 8 * 1024**2  # one YOLO label file or data.yaml
    max_problems: int = 10  # listed in the error; the rest are counted


def number(value, where: str) -> float:
    """A finite real number (not a bool, not a string)."""
    number = checks.real(value)
    if number is None:
        raise DatasetError(f"{where} must be a number, got {_show(value)}")
    if not checks.finite(number):
        raise DatasetError(f"{where} must be a finite number, got {number}")
    return number


def positive_int(value, where: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= top:
        raise DatasetError(f"{where} must be a whole number from 1 to {top}, got {_show(value)}")
    return value


def image_size(width, height, where: str) -> tuple[int, int]:
    """(width, height) of a labeled image: positive ints within the pixel limit."""
    w = positive_int(width, f"{where}.width", 100_000)
    h = positive_int(height, f"{where}.height", 100_000)
    if w * h > MAX_PIXELS:
        raise DatasetError(f"{where} is {w}x{h}, more than the {MAX_PIXELS / 1e6:.0f} megapixel limit")
    return w, h


def class_name_of(value, where: str, *, numbers: bool = False) -> str:
    """A class name from a dataset (a COCO category's name, a data.yaml name), checked against the project's
    rule for class names (`checks.class_name_problem`); returns it stripped. numbers: a number is
    taken as its text (YAML reads `names: [1, 2]` as numbers)."""
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where} must be a non-empty text of at most {CLASS_NAME_MAX_CHARS} characters, got "
                           f"{_show(value)}")
    # a surrogate pair escaped in YAML ("\ud83d\udc31", as JSON writers spell an emoji) is one character
    value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    problem = class_name_problem(value)
    if problem is not None:
        raise DatasetError(f"{where} {show_name(value)} {problem}; {RULE}: rename it in the dataset")
    return value.strip()


def on_image(box: tuple[float, float, float, float], where: str, width: int, height: int) -> tuple[float, float, float, float]:
    """An xyxy box that covers some of the width x height image (what the project keeps of it: the box clipped to
    the image; a box wholly outside, or only touching an edge, leaves nothing)."""
    if checks.clipped(box, width, height) is None:
        shown = ", ".join(f"{v:g}" for v in box)
        raise DatasetError(f"{where}: the box ({shown}, pixels x0, y0, x1, y1) lies outside the {width}x{height} image")
    return box


def coordinate(value, where: str, size: int) -> float:
    """A coordinate along an image side of `size` pixels, within one size past either edge."""
    v = number(value, where)
    if not -size <= v <= 2 * size:
        raise DatasetError(f"{where} = {v:g} is far outside the image (its side is {size} px)")
    return v


def xywh_box(bbox, where: str, width: int, height: int) -> tuple[float, float, float, float]:
    """A COCO bbox [x, y, w, h] -> xyxy, with positive width and height and bounded coordinates."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise DatasetError(f"{where} must be a list of 4 numbers [x, y, width, height], got {_show(bbox)}")
    x = coordinate(bbox[0], f"{where}[0]", width)
    y = coordinate(bbox[1], f"{where}[1]", height)
    w, h = number(bbox[2], f"{where}[2]"), number(bbox[3], f"{where}[3]")
    if not (0 < w <= 2 * width and 0 < h <= 2 * height):
        raise DatasetError(f"{where} has width {w:g} and height {h:g}; both must be above 0 and within the "
                           f"{width}x{height} image")
    return x, y, x + w, y + h


def polygons(value, where: str, width: int, height: int, max_vertices: int) -> list[list[float]]:
    """COCO polygon segmentation: a list of flat [x0, y0, x1, y1, ...] lists, each at least 3 points."""
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where} must be a non-empty list of polygons, got {_show(value)}")
    out, points = [], 0
    for k, poly in enumerate(value):
        here = f"{where}[{k}]"
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            raise DatasetError(f"{here} must be a flat list of x, y pairs with at least 3 points, got {_show(poly)}")
        points += len(poly) // 2
        if points > max_vertices:
            raise DatasetError(f"{where} has more than {max_vertices} points; simplify it or store it as RLE")
        out.append([coordinate(v, f"{here}[{i}]", width if i % 2 == 0 else height) for i, v in enumerate(poly)])
    return out


def rle(value, where: str, width: int, height: int) -> dict:
    """A COCO RLE {"size": [h, w], "counts": str | list}: the size is the image's and the runs cover
    exactly its h * w pixels (pycocotools writes past its buffer when they do not)."""
    if not isinstance(value, dict) or not {"size", "counts"} <= value.keys():
        raise DatasetError(f"{where} must be an RLE with 'size' and 'counts', got {_show(value)}")
    size = value["size"]
    if not isinstance(size, list) or size != [height, width]:
        raise DatasetError(f"{where}.size must be the image's [height, width] = [{height}, {width}], got {_show(size)}")
    counts = value["counts"]
    if isinstance(counts, str):
        runs = rle_string_counts(counts, f"{where}.counts")
    elif isinstance(counts, list):
        if len(counts) > width * height + 1:
            raise DatasetError(f"{where}.counts has more runs than the image has pixels")
        runs = [int(positive_or_zero(c, f"{where}.counts[{i}]")) for i, c in enumerate(counts)]
    else:
        raise DatasetError(f"{where}.counts must be a string or a list of numbers, got {_show(counts)}")
    if any(r < 0 for r in runs) or sum(runs) != width * height:
        raise DatasetError(f"{where}.counts covers {sum(runs)} pixels with runs >= 0 expected to add up to the "
                           f"image's {width * height}: the RLE is corrupt")
    return {"size": [height, width], "counts": counts}


def positive_or_zero(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DatasetError(f"{where} must be a whole number >= 0, got {_show(value)}")
    return value


def rle_string_counts(text: str, where: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools' text form) into run lengths, in Python.

    Each run is a little-endian sequence of 5-bit groups written as chr(48 + group), where bit 0x20 says
    "another group follows" and bit 0x10 of the last group is the sign; from the fourth run on, the value
    is stored as the difference to the run two places before."""
    runs: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise DatasetError(f"{where} ends in the middle of a run: the RLE is corrupt")
            group = ord(text[pos]) - 48
            if not 0 <= group < 64:
                raise DatasetError(f"{where} holds the character {text[pos]!r}, which no RLE string contains")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if shift > 60:
                raise DatasetError(f"{where} holds a run too long for any image: the RLE is corrupt")
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
