"""Images in object stores: list and read the URIs that pyarrow's filesystems open (s3://, gs://, abfs://,
hdfs://...) the way local files are listed and read.

    uris = list_images("s3://bucket/photos/?endpoint_override=minio:9000&scheme=http")  # sorted, recursive
    rgb = read_image(uris[0])          # upright RGB, the same checks and ImageErrors as a local file
    rgb = read_image("/data/a.jpg")    # a local path (or file://) reads as `processing.to_rgb` does

A project refers to such an image by its URI (`Project.add_reference`); nothing is copied. Each URI keeps its
query (endpoint, region...), so that it opens on its own, on any Ray worker; credentials come from the
environment (AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS), never from the URI: pyarrow refuses
them there, and the URI is stored in the project.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from .processing import MAX_PIXELS, ImageError, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_BYTES = 256 * 1024 * 1024  # a larger object is refused before it is fetched: no image the model reads is this big
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class SourceError(ValueError):
    """A URI that cannot be listed: an unknown scheme, no such bucket or prefix, no access."""


def is_uri(text: str | os.PathLike) -> bool:
    """An object-store URI (scheme://...), not a local path; file:// URIs are local paths."""
    return isinstance(text, str) and bool(_SCHEME.match(text)) and not text.lower().startswith("file://")


def local_path(text: str | os.PathLike) -> str | os.PathLike:
    """A file:// URI -> its path; anything else as it is."""
    return text[len("file://"):] if isinstance(text, str) and text.lower().startswith("file://") else text


def _open(uri: str):
    """(pyarrow filesystem, path inside it, the URI's part before the path, its query)."""
    try:
        from pyarrow import fs
    except ImportError:
        raise SourceError(f"{uri}: reading object stores needs pyarrow (pip install pyarrow, or \"gdino[ray]\")") from None

    try:
        filesystem, inner = fs.FileSystem.from_uri(uri)
    except (OSError, ValueError, TypeError) as err:  # pyarrow: ArrowInvalid (a ValueError), unknown scheme...
        raise SourceError(f"{uri}: {err}") from None
    parts = urlsplit(uri)
    return filesystem, inner, f"{parts.scheme}://", parts.query


def _uri(prefix: str, inner: str, query: str) -> str:
    return f"{prefix}{inner}{'?' + query if query else ''}"


def list_images(uri: str) -> list[str]:
    """A URI of one object (taken whatever its name) or of a folder (searched recursively for files with an
    image suffix, any case; hidden files and folders skipped) -> image URIs, sorted. [] when it names
    nothing. Raises SourceError when the store cannot be reached or listed."""
    from pyarrow import fs

    filesystem, inner, prefix, query = _open(uri)
    try:
        info = filesystem.get_file_info(inner)
        if info.type == fs.FileType.File:
            return [_uri(prefix, inner, query)]
        if info.type != fs.FileType.Directory:
            return []
        found = filesystem.get_file_info(fs.FileSelector(inner.rstrip("/"), recursive=True))
    except OSError as err:
        raise SourceError(f"{uri}: {err}") from None
    base = inner.rstrip("/")
    keep = []
    for item in found:
        relative = item.path[len(base):].lstrip("/")
        if item.type != fs.FileType.File or any(part.startswith(".") for part in relative.split("/")):
            continue
        if os.path.splitext(item.base_name)[1].lower() in IMAGE_EXTENSIONS:
            keep.append(item.path)
    return [_uri(prefix, path, query) for path in sorted(keep)]


def uri_within(uri: str, prefix: str) -> bool:
    """Whether `uri` lies under the object-store `prefix` (same scheme and bucket, a path below, segment by
    segment, with no '.' or '..' segment) and opens the same store: the same query (endpoint, scheme,
    region), so that a URI cannot point the reader at another host."""
    if not (is_uri(uri) and is_uri(prefix)):
        return False
    a, b = urlsplit(uri), urlsplit(prefix)
    if (a.scheme.lower(), a.netloc, a.query) != (b.scheme.lower(), b.netloc, b.query) or a.fragment:
        return False
    inner = [p for p in a.path.split("/") if p]
    base = [p for p in b.path.split("/") if p]
    return not any(p in (".", "..") for p in inner) and inner[:len(base)] == base and len(inner) > len(base)


def name_of(uri: str) -> str:
    """The file name at the end of a URI (its query left out)."""
    return os.path.basename(urlsplit(uri).path.rstrip("/")) or "image"


@contextmanager
def local_file(location: str | os.PathLike, max_bytes: int = MAX_BYTES) -> Iterator[Path]:
    """A local path as it is, or an object-store URI fetched into a temporary file (removed afterwards), so
    that the same decoding reads both. An object over `max_bytes`, missing, or unreadable: an ImageError that
    names the URI."""
    if not is_uri(location):
        yield Path(local_path(location))
        return
    uri = str(location)
    with tempfile.NamedTemporaryFile(prefix="gdino-fetch-", suffix=os.path.splitext(urlsplit(uri).path)[1]) as tmp:
        _fetch(uri, tmp, max_bytes)
        yield Path(tmp.name)


def _fetch(uri: str, out, max_bytes: int) -> None:
    from pyarrow import fs

    try:
        filesystem, inner, _, _ = _open(uri)
        info = filesystem.get_file_info(inner)
        if info.type != fs.FileType.File:
            raise ImageError(f"could not read the image {uri!r}: there is no such object")
        if info.size is not None and info.size > max_bytes:
            raise ImageError(f"the image {uri!r} is {info.size / 1e6:.0f} MB, more than the limit of "
                             f"{max_bytes / 1e6:.0f} MB for one image")
        with filesystem.open_input_stream(inner) as stream:
            copied = _copy_at_most(stream, out, max_bytes)
    except (SourceError, OSError) as err:
        raise ImageError(f"could not read the image {uri!r}: {err}") from None
    if copied > max_bytes:
        raise ImageError(f"the image {uri!r} is more than the limit of {max_bytes / 1e6:.0f} MB for one image")
    out.flush()


def _copy_at_most(stream, out, limit: int) -> int:
    copied = 0
    while copied <= limit:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        out.write(chunk)
        copied += len(chunk)
    return copied


def read_image(location: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A local path or an object-store URI -> an upright RGB image (`processing.to_rgb`), its errors naming
    the URI, never the temporary file."""
    if not is_uri(location):
        return to_rgb(local_path(location), max_pixels)
    with local_file(location) as path:
        try:
            return to_rgb(path, max_pixels)
        except ImageError as err:
            raise ImageError(str(err).replace(str(path), str(location))) from None


def size_of(location: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the upright image, decoded in full (a truncated file is refused here, not later)."""
    rgb = read_image(location)
    return rgb.width, rgb.height

