"""The one set of value checks: numbers, the unit interval, whole numbers, boxes on an image, class names,
statuses, sources and scores. The API's arguments, the command line's flags, dataset files and the project
store all check with these; each caller words its refusal around them or passes its own error class.

A numpy scalar (np.float32(0.3)), a 0-d numpy array and a 0-d torch tensor are numbers like Python's.
bool is refused although Python counts it as an int: `box_threshold=True` is a slip, not 1.0. No torch here,
and nothing of the store: a check raises the `error` class its caller gives (ValueError by default).
"""

from __future__ import annotations

import math
import numbers
import unicodedata
from collections.abc import Iterable, Sequence

STATUSES = ("unlabeled", "auto", "reviewed", "skipped")  # an image's review state
SOURCES = ("model", "manual")  # who made an object


# -- numbers -------------------------------------------------------------------------------------------


def _scalar(value):
    """A numpy scalar, a 0-d numpy array or a 0-d tensor -> the Python number it holds; anything else as is."""
    if not isinstance(value, (str, bytes)) and getattr(value, "shape", None) == () and hasattr(value, "item"):
        return value.item()
    return value


def _shown(value) -> str:
    return f"{value!r} (a bool, not a number)" if isinstance(_scalar(value), bool) else repr(value)


def real(value) -> float | None:
    """A real number (int, float, numpy or 0-d tensor; not a bool, not text) -> float; None when it is none.
    NaN and infinities pass: `finite` says whether they may."""
    number = _scalar(value)
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        return None
    return float(number)


def finite(value: float) -> bool:
    return math.isfinite(value)


def in_unit_interval(value: float) -> bool:
    """0 <= value <= 1 (NaN is not)."""
    return 0.0 <= value <= 1.0


def is_whole(value: float) -> bool:
    """A finite number without a fraction (50e6 is one; 2.5, NaN and infinities are not)."""
    return math.isfinite(value) and float(value).is_integer()


def unit_interval(name: str, value, *, optional: bool = False) -> float | None:
    """A number in [0, 1] -> float. optional: None passes through (a step that None turns off)."""
    if value is None and optional:
        return None
    number = real(value)
    if number is None or not in_unit_interval(number):
        off = ", or None to turn it off" if optional else ""
        raise ValueError(f"{name} must be a number between 0 and 1{off}, got {_shown(value)}")
    return number


def whole_number(name: str, value, minimum: int) -> int:
    """An integer >= minimum -> int. A float that is a whole number (50e6) counts; 2.5, NaN and bool do not."""
    number = real(value)
    if number is None or not is_whole(number) or number < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {_shown(value)}")
    return int(number)


def score(value, error: type[Exception] = ValueError) -> float | None:
    """A detection score: None (no score) or a finite number (anything float() takes that is not text)."""
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise error(f"a score must be a number or None, got {value!r}") from None
    if not math.isfinite(number):
        raise error(f"a score must be a finite number, got {value!r}")
    return number


# -- boxes -----------------------------------------------------------------------------------------------


def clipped(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """An xyxy box (pixels) clipped to [0, width] x [0, height]; None when nothing is left of it (wholly
    outside, or only touching an edge)."""
    x0, y0, x1, y1 = box
    out = (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))
    return out if out[0] < out[2] and out[1] < out[3] else None


def box_on_image(box: Sequence[float], width: int, height: int,
                 error: type[Exception] = ValueError) -> tuple[float, float, float, float]:
    """xyxy pixels -> 4 floats clipped to [0, width] x [0, height]; refuses anything that is not a box."""
    try:
        if isinstance(box, (str, bytes)) or len(box) != 4 or any(isinstance(v, (str, bytes)) for v in box):
            raise TypeError
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise error(f"a box must be 4 numbers x0, y0, x1, y1 (pixels), got {box!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise error(f"a box must be 4 finite numbers, got {box!r}")
    if not (x0 < x1 and y0 < y1):
        raise error(f"a box is xyxy with x0 < x1 and y0 < y1, got {box!r} (is it xywh?)")
    out = clipped((x0, y0, x1, y1), width, height)
    if out is None:
        raise error(f"the box {box!r} lies outside the {width}x{height} image")
    return out


# -- statuses and sources --------------------------------------------------------------------------------


def status(value: str, error: type[Exception] = ValueError) -> str:
    if value not in STATUSES:
        raise error(f"unknown status {value!r}; use one of {list(STATUSES)}")
    return value


def source(value: str, error: type[Exception] = ValueError) -> str:
    if value not in SOURCES:
        raise error(f"unknown source {value!r}; use one of {list(SOURCES)}")
    return value


# -- class names -----------------------------------------------------------------------------------------


CLASS_NAME_MAX_CHARS = 200
"""The longest class name: what COCO and YOLO imports always allowed; a name is a label, not a description."""

RULE = f"a class name is one line of text of at most {CLASS_NAME_MAX_CHARS} characters, without control characters"

_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # what str.splitlines() splits at
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def class_name_problem(name: object) -> str | None:
    """Why `name` cannot be a class name, in a few words ("holds a line break (U+000A)"), or None if it can.

    The one rule for class names, wherever they come from (imports, prompts, the canvas, the class manager,
    the command line): each entry words the refusal its own way around this reason. A class name is one line
    of text, 1 to CLASS_NAME_MAX_CHARS characters once stripped, without control characters (line breaks
    and tabs included: data.yaml, VOC XML and label lists are line- and XML-based), lone surrogates (not
    text: they cannot be written as UTF-8), bidirectional controls (they make one name display as another)
    or noncharacters (XML and YAML refuse them). Letters of any script, digits, spaces, punctuation, symbols
    and emoji are all allowed: a name the model cannot read (an emoji) is still a label for manual boxes."""
    if not isinstance(name, str):
        return f"is not text (it is {type(name).__name__})"
    name = name.strip()
    if not name:
        return "is empty"
    if len(name) > CLASS_NAME_MAX_CHARS:
        return f"is {len(name)} characters long; the limit is {CLASS_NAME_MAX_CHARS}"  # before any scan
    return characters_problem(name)


def characters_problem(text: str) -> str | None:
    """What the rule for class names holds against the characters of `text` ("holds a tab (U+0009)"), or None."""
    for char in text:
        what = character_problem(char)
        if what is not None:
            return f"holds {what} (U+{ord(char):04X})"
    return None


def character_problem(char: str) -> str | None:
    """What the rule for class names holds against this one character ("a line break"), or None."""
    if char in _LINE_BREAKS:
        return "a line break"
    if char == "\t":
        return "a tab"
    kind = unicodedata.category(char)
    if kind == "Cc":
        return "a control character"
    if kind == "Cs":
        return "a lone surrogate"
    if char in _BIDI_CONTROLS:
        return "a bidirectional control character"
    code = ord(char)
    if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
        return "a noncharacter"
    return None


def show_name(name: object, limit: int = 40) -> str:
    """A name for a message: quoted, escapes visible, at most `limit` characters of it (never a megabyte)."""
    if not isinstance(name, str):
        return repr(name)[:limit]
    return repr(name[:limit]) + ("..." if len(name) > limit else "")


def class_name(name: object, error: type[Exception] = ValueError) -> str:
    """A class name checked against the rule (`class_name_problem`), stripped; else `error`."""
    if not isinstance(name, str) or not name.strip():
        raise error(f"a class name must be a non-empty string, got {show_name(name)}")
    problem = class_name_problem(name)
    if problem is not None:
        raise error(f"the class name {show_name(name)} {problem}; {RULE}")
    return name.strip()


def class_names(names: Iterable[str], error: type[Exception] = ValueError) -> list[str]:
    """Class names checked against the rule (`class_name`), stripped, unique case-insensitively."""
    if isinstance(names, str):
        raise error(f"give class names as a list, e.g. [{show_name(names)}], not a single string")
    out, seen = [], set()
    for name in names:
        name = class_name(name, error)
        if name.casefold() in seen:
            raise error(f"the class {show_name(name)} is listed twice (names are compared case-insensitively)")
        seen.add(name.casefold())
        out.append(name)
    return out


def as_class_name(text: str) -> str:
    """Any text -> a name that passes the rule, for names no person typed (the phrases a free-text prompt
    finds are pieces of the prompt, line breaks included): characters the rule refuses become spaces, runs
    of whitespace one space, and it is cut at CLASS_NAME_MAX_CHARS. Empty text stays empty."""
    kept = "".join(" " if character_problem(c) is not None else c for c in text)
    return " ".join(kept.split())[:CLASS_NAME_MAX_CHARS].strip()
