"""The checks a value passes before the store keeps it that only the store needs: image names (also file names
in images/), masks of an image, JSON. Numbers, boxes, class names, statuses and sources: `gdino.checks`."""

from __future__ import annotations

import json
import re
from typing import Any

from ..checks import character_problem, show_name
from .errors import ProjectError

_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
NAME_MAX_BYTES = 200  # an image's name; longer ones are shortened (file systems stop at 255, and "_2" may follow)


def image_name(name: str) -> str:
    """A plain file name (it is also the file's name in images/, so it must not be able to leave that
    folder). Bytes that are not UTF-8 (a file name from disk) become U+FFFD, line breaks, tabs, control and
    direction characters '_' (as `sources.name_of` does for a URI's key); a name over NAME_MAX_BYTES
    keeps its suffix and loses the end of its stem."""
    if not isinstance(name, str) or name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ProjectError(f"an image name must be a plain file name (no slashes), got {show_name(name)}")
    name = _LONE_SURROGATE.sub("\ufffd", name.strip())  # not bytes from disk (those are U+DC80..U+DCFF): not text
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    # line breaks, tabs, control and direction characters: '_' (a name is also a line of exported lists, and a
    # direction override makes one name display as another)
    name = "".join("_" if character_problem(c) not in (None, "a noncharacter") else c for c in name)
    if len(name.encode()) <= NAME_MAX_BYTES:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(suffix) > 16:
        stem, suffix = name, ""
    else:
        suffix = "." + suffix
    return stem.encode()[: NAME_MAX_BYTES - len(suffix.encode())].decode("utf-8", "ignore") + suffix


def mask_json(mask: dict | None, width: int, height: int) -> str | None:
    """A COCO RLE dict -> JSON, once its size is checked to be the image's [height, width]. The counts are
    not decoded; bytes counts (what pycocotools returns) are stored as the same ASCII string."""
    if mask is None:
        return None
    if not isinstance(mask, dict) or not {"size", "counts"} <= mask.keys():
        raise ProjectError(f"a mask must be a COCO RLE dict with keys 'size' and 'counts', got {mask!r:.80}")
    size, counts = mask["size"], mask["counts"]
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        raise ProjectError(f"the mask's size {size!r} is not the image's [height, width] = [{height}, {width}]")
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, (str, list)):
        raise ProjectError(f"a mask's counts must be an RLE string (or list), got {type(counts).__name__}")
    return to_json({**mask, "size": [height, width], "counts": counts}, "the mask", dict)


def to_json(value: Any, what: str, kind: type = object) -> str:
    if not isinstance(value, kind):
        raise ProjectError(f"{what} must be a {kind.__name__}, got {type(value).__name__}")
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ProjectError(f"{what} must be JSON-able (str, numbers, bools, None, lists, dicts): {err}") from err
