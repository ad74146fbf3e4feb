"""A run's image inputs: files, folders, glob patterns and object-store URIs -> image paths and URIs."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..sources import IMAGE_EXTENSIONS, SCHEMES, SourceError, check_uri, is_uri, list_images


class NoImagesError(ValueError):
    """An input names no image file: a typo, an empty folder, a pattern matching nothing."""


def find_images(inputs: Sequence[str], *, exclude: Path | None = None) -> list[Path | str]:
    """Files, folders, glob patterns and object-store URIs -> absolute image paths and image URIs, in the
    order given, each once.

    A file named explicitly is taken whatever its extension (a bad one fails later, with its reason).
    Folders are searched recursively, and patterns expanded here (glob, `**` recursive) so that quoted
    patterns work; both keep files with an IMAGE_EXTENSIONS suffix (any case) and skip hidden files and
    folders (".thumbnails", macOS "._x.jpg" companions). Within a folder or pattern, paths are sorted.
    A URI (s3://bucket/photos/, `gdino.sources`) is listed the same way, as URIs (str).
    exclude: a folder whose contents are never returned from folders and patterns (the project itself,
    so that `gdino label . --out proj` does not label its own copies and exports).
    Raises NoImagesError for an input that yields no image, or a URI that cannot be listed.
    """
    found: dict[Path | str, None] = {}  # resolved path or URI -> None: an ordered set
    for text in inputs:
        if is_uri(text):
            try:
                text = check_uri(text)  # refuses credentials in it before the URI is ever repeated
                paths: list = list_images(text)
            except SourceError as err:
                raise NoImagesError(f"cannot list {err}" if str(err).startswith(text) else str(err)) from None
            if not paths:
                raise NoImagesError(f"{text!r}: nothing there (no such prefix), or no image files under it "
                                    f"({', '.join(IMAGE_EXTENSIONS)} in any case)")
        else:
            paths = _expand(text, exclude.resolve() if exclude is not None else None)
            scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
            if not paths and scheme and scheme[1].lower() != "file":
                raise NoImagesError(f"{scheme[1]}:// is not a store gdino reads images from; use a local path or one "
                                    f"of {', '.join(s + '://' for s in SCHEMES)}")
        if not paths:
            raise NoImagesError(f"{text!r} matches no image file (looked for a file, a folder holding "
                                f"{', '.join(IMAGE_EXTENSIONS)} files in any case, or a glob pattern)")
        found.update(dict.fromkeys(paths))
    return list(found)


def _expand(text: str, exclude: Path | None) -> list[Path]:
    path = Path(os.path.expanduser(text))
    if path.is_file():
        return [path.resolve()]
    if path.is_dir():
        return _images_under(path, exclude)
    if not glob.has_magic(text):
        return []
    paths: list[Path] = []
    for match in sorted(glob.glob(os.path.expanduser(text), recursive=True)):
        match_path = Path(match)
        if match_path.is_dir():
            paths.extend(_images_under(match_path, exclude))
        elif _is_image_name(match_path) and not _inside(match_path.resolve(), exclude):
            paths.append(match_path.resolve())
    return paths


def _images_under(folder: Path, exclude: Path | None) -> list[Path]:
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # prune hidden folders from the walk
        for name in files:
            path = (Path(root) / name).resolve()
            if _is_image_name(path) and not _inside(path, exclude):
                paths.append(path)
    return sorted(paths)


def _is_image_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)
