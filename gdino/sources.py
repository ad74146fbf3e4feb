"""Images in object stores: list and read the URIs that pyarrow's filesystems open (s3://, gs://, abfs://,
hdfs://...) the way local files are listed and read.

    uris = list_images("s3://bucket/photos/?endpoint_override=minio:9000&scheme=http")  # sorted, recursive
    rgb = read_image(uris[0])          # upright RGB, the same checks and ImageErrors as a local file
    rgb = read_image("/data/a.jpg")    # a local path (or file://) reads as `processing.to_rgb` does

A project refers to such an image by its URI (`Project.add_reference`); nothing is copied. Each URI keeps its
query (endpoint, region...), so that it opens on its own, on any Ray worker, in one spelling (`canonical`:
the scheme in lower case, the query sorted), which is its key in the project. Credentials come from the
environment (AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS), never from the URI: a URI that holds
them (user:secret@) is refused, since the URI is stored in the project and printed in messages.
Only the object-store schemes below are URIs; pyarrow's local:// and mock:// are not (a project's
database must not reach local files through them).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from PIL import Image

from .processing import MAX_PIXELS, ImageError, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_BYTES = 256 * 1024 * 1024  # a larger object is refused before it is fetched: no image the model reads is this big
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")  # pyarrow's remote filesystems
# Google's client retries for 15 minutes by default (an unreachable store looked like a hang): it gives up after
# this many seconds instead, unless the URI's query says otherwise (?retry_limit_seconds=N)
GCS_RETRY_S = 30
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class SourceError(ValueError):
    """A URI that cannot be listed: an unknown scheme, no such bucket or prefix, no access."""


def is_uri(text: str | os.PathLike) -> bool:
    """An object-store URI (one of SCHEMES, any case), not a local path; file:// URIs are local paths."""
    match = _SCHEME.match(text) if isinstance(text, str) else None
    return match is not None and match[1].lower() in SCHEMES


def check_uri(uri: str) -> str:
    """`uri` in its canonical spelling. A SourceError (that does not repeat the URI) if it holds credentials
    (a password; or a user name, except abfs's container@account form), or names no bucket."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.password is not None or (parts.username is not None and scheme not in ("abfs", "abfss")):
        raise SourceError("an object-store URI must not hold credentials (user:secret@): it is stored in the project "
                          "and shown in messages; set them in the environment instead (AWS_ACCESS_KEY_ID / "
                          "AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...)")
    if not parts.netloc:
        raise SourceError(f"{scheme}:// needs a bucket (or container, or host) after it, e.g. {scheme}://bucket/photos/")
    return canonical(uri)


def canonical(uri: str) -> str:
    """One spelling per object: the scheme in lower case (gcs:// as gs://), the path percent-encoded one way
    (decoded as pyarrow decodes it, then encoded as `list_images` writes it), the query's parameters sorted,
    no fragment."""
    parts = urlsplit(uri)
    scheme = {"gcs": "gs"}.get(parts.scheme.lower(), parts.scheme.lower())
    path = quote(unquote(parts.path), safe="/")
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)), safe=":/,")
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def local_path(text: str | os.PathLike) -> str | os.PathLike:
    """A file:// URI -> its path; anything else as it is."""
    return text[len("file://"):] if isinstance(text, str) and text.lower().startswith("file://") else text


def _open(uri: str):
    """(pyarrow filesystem, the path inside it: percent-decoded, as pyarrow reads it)."""
    uri = check_uri(uri)
    try:
        from pyarrow import fs
    except ImportError:
        raise SourceError(f"{uri}: reading object stores needs pyarrow (pip install pyarrow, or \"gdino[ray]\")") from None
    try:
        filesystem, inner = fs.FileSystem.from_uri(_with_retry_limit(uri))
    except (OSError, ValueError, TypeError) as err:  # pyarrow: ArrowInvalid (a ValueError), unknown scheme...
        raise SourceError(f"{uri}: {err}") from None
    return filesystem, inner


def _our_retry_limit(uri: str) -> bool:
    """Whether the URI is gs:// with no retry limit of its own (GCS_RETRY_S bounds it)."""
    parts = urlsplit(uri)
    return (parts.scheme.lower() in ("gs", "gcs")
            and not any(k == "retry_limit_seconds" for k, _ in parse_qsl(parts.query, keep_blank_values=True)))


def _with_retry_limit(uri: str) -> str:
    """A gs:// URI with a bound on its client's retries (GCS_RETRY_S) unless it has one; others as they are."""
    if not _our_retry_limit(uri):
        return uri
    parts = urlsplit(uri)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("retry_limit_seconds", str(GCS_RETRY_S))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _unreachable(uri: str, err: OSError) -> str:
    """What a store's error says, and for gs:// how to wait longer."""
    if _our_retry_limit(uri):
        return (f"{err} (gave up after retrying for {GCS_RETRY_S} s; add retry_limit_seconds=N to the URI's query "
                "to wait longer)")
    return str(err)


def list_images(uri: str) -> list[str]:
    """A URI of one object (taken whatever its name) or of a folder (searched recursively for files with an
    image suffix, any case; hidden files and folders skipped) -> image URIs, canonical, sorted. [] when it
    names nothing. Raises SourceError when the store cannot be reached or listed."""
    if not is_uri(uri):
        raise SourceError(f"{uri}: not an object-store URI ({', '.join(s + '://' for s in SCHEMES)})")
    uri = check_uri(uri)
    filesystem, inner = _open(uri)  # says so when pyarrow is missing
    from pyarrow import fs

    try:
        info = filesystem.get_file_info(inner)
        if info.type == fs.FileType.File:
            return [uri]
        if info.type != fs.FileType.Directory:
            return []
        base = inner.rstrip("/")
        found = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
    except OSError as err:
        raise SourceError(f"{uri}: {_unreachable(uri, err)}") from None
    parts = urlsplit(uri)
    keep = []
    for item in found:
        relative = item.path[len(base):].lstrip("/")
        if item.type != fs.FileType.File or any(part.startswith(".") for part in relative.split("/")):
            continue
        if os.path.splitext(item.base_name)[1].lower() in IMAGE_EXTENSIONS:
            # the folder URI as given (its host part: an abfs account, an hdfs namenode) + the key below it,
            # percent-encoded as pyarrow decodes it
            path = parts.path.rstrip("/") + "/" + quote(relative, safe="/")
            keep.append(canonical(urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))))
    return sorted(keep)


def uri_within(uri: str, prefix: str) -> bool:
    """Whether `uri` lies under the object-store `prefix`: the same scheme, host part and query (endpoint,
    scheme, region: a URI cannot point the reader at another host), and a path below the prefix's, compared
    segment by segment after percent-decoding (as pyarrow opens it), with no '.', '..' or empty segment."""
    if not (is_uri(uri) and is_uri(prefix)):
        return False
    a, b = urlsplit(canonical(uri)), urlsplit(canonical(prefix))
    if (a.scheme, a.netloc, a.query) != (b.scheme, b.netloc, b.query) or "#" in uri:
        return False
    inner, base = unquote(a.path).split("/")[1:], [p for p in unquote(b.path).split("/")[1:] if p]
    if any(p in ("", ".", "..") or "\\" in p for p in inner):
        return False
    return inner[:len(base)] == base and len(inner) > len(base)


def object_version(uri: str) -> str:
    """The object's size and modification time as a string (a replaced object reads as a new version, unless
    it has the same size and was replaced within the store's time resolution: a second on S3), or
    "missing"."""
    try:
        filesystem, inner = _open(uri)
        info = filesystem.get_file_info(inner)
    except (SourceError, OSError):
        return "missing"
    return f"{canonical(uri)}:{info.size}:{info.mtime_ns}"


def name_of(uri: str) -> str:
    """The file name at the end of a URI (its query left out, percent-decoded)."""
    return unquote(os.path.basename(urlsplit(uri).path.rstrip("/"))) or "image"


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
    try:
        filesystem, inner = _open(uri)  # says so when pyarrow is missing
        from pyarrow import fs

        info = filesystem.get_file_info(inner)
        if info.type != fs.FileType.File:
            raise ImageError(f"could not read the image {uri!r}: there is no such object")
        if info.size is not None and info.size > max_bytes:
            raise ImageError(f"the image {uri!r} is {info.size / 1e6:.0f} MB, more than the limit of "
                             f"{max_bytes / 1e6:.0f} MB for one image")
        with filesystem.open_input_stream(inner) as stream:
            copied = _copy_at_most(stream, out, max_bytes)
    except SourceError as err:
        raise ImageError(f"could not read the image {uri!r}: {err}") from None
    except OSError as err:
        raise ImageError(f"could not read the image {uri!r}: {_unreachable(uri, err)}") from None
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

