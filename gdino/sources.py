"""Images in object stores: list and read the URIs that pyarrow's filesystems open (s3://, gs://, abfs://,
hdfs://...) the way local files are listed and read.

    uris = list_images("s3://bucket/photos/?endpoint_override=minio:9000&scheme=http")  # sorted, recursive
    rgb = read_image(uris[0])          # upright RGB, the same checks and ImageErrors as a local file
    rgb = read_image("/data/a.jpg")    # a local path (or file://) reads as `processing.to_rgb` does

A project refers to such an image by its URI (`Project.add_reference`); nothing is copied. Each URI keeps its
query (endpoint, region...), so that it opens on its own, on any Ray worker, in one spelling (`canonical`:
the scheme in lower case, the query sorted), which is its key in the project. Credentials come from the
environment (AWS_ACCESS_KEY_ID..., GOOGLE_APPLICATION_CREDENTIALS), never from the URI: a URI that holds
them (user:secret@, ?client_secret=, a SAS token's ?sig=...) is refused, since the URI is stored in the
project and printed in messages; so is a query parameter pyarrow does not read (it would refuse it anyway),
so that whatever passes `check_uri` may be stored and shown. A key that is no plain file name (a backslash,
control characters, '..') gets one (`name_of`); the URI keeps the key as it is.
Only the object-store schemes below are URIs; pyarrow's local:// and mock:// are not (a project's
database must not reach local files through them).
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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

# The query parameters pyarrow (26) reads from a URI that hold no secret (S3Options, GcsOptions, AzureOptions
# ::FromUri). It refuses any other parameter of these schemes; so does check_uri, first, without the value.
_PARAMETERS = {
    "s3": frozenset({"region", "scheme", "endpoint_override", "allow_delayed_open", "allow_bucket_creation",
                     "allow_bucket_deletion", "tls_ca_file_path", "tls_ca_dir_path", "tls_verify_certificates",
                     "smart_defaults"}),
    "gs": frozenset({"location", "scheme", "endpoint_override", "retry_limit_seconds", "project_id"}),
    "abfs": frozenset({"blob_storage_authority", "dfs_storage_authority", "credential_kind", "tenant_id", "client_id",
                       "enable_tls", "background_writes"}),  # client_secret and a SAS token (sig=...) are secrets
}
_PARAMETERS.update(gcs=_PARAMETERS["gs"], abfss=_PARAMETERS["abfs"])
# hdfs:// and viewfs:// pass any parameter besides these to Hadoop's configuration (fs.s3a.secret.key=...):
# there a name that says it holds a secret is refused
_HDFS_PARAMETERS = frozenset({"replication", "buffer_size", "default_block_size", "user", "kerb_ticket"})
# the parameters of an Azure SAS token (pyarrow passes the whole query as the token when it sees one)
_SAS = frozenset({"sv", "ss", "sr", "st", "se", "sp", "si", "sip", "spr", "skoid", "sktid", "srt", "skt", "ske", "skv",
                  "sks", "saoid", "suoid", "scid", "sdd", "ses", "sig", "rscc", "rscd", "rsce", "rscl", "rsct"})
_SECRET_PARTS = ("secret", "passw", "token", "signature", "credential", "accesskey", "accountkey", "apikey")
_SECRET_WORDS = frozenset({"key", "keys", "sig", "sas", "pwd", "private"})
_ENVIRONMENT = {  # where each store's client takes credentials from instead
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS",
    "abfs": "AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET, or `az login`",
    "hdfs": "core-site.xml, or a Kerberos ticket (kinit)",
}
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,39}")  # a parameter name that may be repeated in a message


class SourceError(ValueError):
    """A URI that cannot be listed: an unknown scheme, no such bucket or prefix, no access."""


def is_uri(text: str | os.PathLike) -> bool:
    """An object-store URI (one of SCHEMES, any case), not a local path; file:// URIs are local paths."""
    match = _SCHEME.match(text) if isinstance(text, str) else None
    return match is not None and match[1].lower() in SCHEMES


def check_uri(uri: str) -> str:
    """`uri` in its canonical spelling. A SourceError that does not repeat the URI if it holds credentials (a
    password; a user name, except abfs's container@account form; a secret query parameter: `_check_query`),
    a query parameter pyarrow does not read, bytes that are not UTF-8, or names no bucket."""
    try:
        uri.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError("an object-store URI must be UTF-8 text, and this one holds other bytes (percent-encode "
                          "them: %FF)") from None
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.password is not None or (parts.username is not None and scheme not in ("abfs", "abfss")):
        raise SourceError(_credentials(scheme, "user:secret@"))
    _check_query(scheme, parts.query)
    if not parts.netloc:
        raise SourceError(f"{scheme}:// needs a bucket (or container, or host) after it, e.g. {scheme}://bucket/photos/")
    return canonical(uri)


def _check_query(scheme: str, query: str) -> None:
    """Refuses a parameter that holds a secret (by its name: client_secret, sig, session_token, *.secret.key...),
    and for s3, gs and abfs any parameter pyarrow does not read, naming the parameter, never its value."""
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name in _PARAMETERS.get(scheme, _HDFS_PARAMETERS):
            continue
        if _secret_name(name) or (scheme in ("abfs", "abfss") and name in _SAS):
            shown = f"?{name}=..." if _PLAIN_NAME.fullmatch(name) else "a query parameter"
            raise SourceError(_credentials(scheme, f"a SAS token, {shown}" if name in _SAS else shown))
        if scheme in _PARAMETERS:
            shown = repr(name) if _PLAIN_NAME.fullmatch(name) else "of that name"
            raise SourceError(f"{scheme}:// takes no query parameter {shown} (pyarrow reads "
                              f"{', '.join(sorted(_PARAMETERS[scheme]))})")


def _secret_name(name: str) -> bool:
    """Whether a query parameter's name says it holds a secret: a password, token, signature, key..."""
    low = name.lower()
    words = {w.lower() for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)}
    return any(part in low for part in _SECRET_PARTS) or bool(words & _SECRET_WORDS)


def _credentials(scheme: str, what: str) -> str:
    where = _ENVIRONMENT.get({"gcs": "gs", "abfss": "abfs", "viewfs": "hdfs"}.get(scheme, scheme))
    return (f"an object-store URI must not hold credentials ({what}): it is stored in the project and shown in "
            "messages; set them in the environment instead"
            + (f" ({where})" if where else " (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...)"))


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
    except (ValueError, TypeError, *_store_errors()) as err:  # ArrowInvalid, an unknown scheme...
        raise SourceError(f"{uri}: {_reason(uri, err)}") from None
    if urlsplit(uri).scheme.lower() in ("abfs", "abfss"):
        # pyarrow keeps the path's leading '/' in the abfs://account.dfs.core.windows.net/container/... form,
        # and then refuses it ("Location cannot start with a separator")
        inner = inner.lstrip("/")
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


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a pyarrow filesystem raises: OSError, and ArrowException (Azure's "Unknown error", ArrowInvalid)."""
    try:
        from pyarrow import ArrowException
    except ImportError:
        return (OSError,)
    return (OSError, ArrowException)


# what a store's error means, by the words its client uses (AWS, Azure, Google, libhdfs), first match wins
_REASONS = (
    (("AuthenticationException", "DefaultAzureCredential"), "could not sign in to Azure (set AZURE_TENANT_ID, "
     "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or run `az login`; ?credential_kind=anonymous for a public container)"),
    (("NETWORK_CONNECTION", "new connection", "CURL error", "curlCode", "Could not connect", "Could not resolve",
      "Connection refused", "Timeout was reached"), "cannot reach the store's endpoint"),
    (("NO_SUCH_BUCKET", "NoSuchBucket"), "no such bucket"),
    (("ContainerNotFound",), "no such container"),
    (("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH",
      "AuthorizationFailure", "AuthenticationFailed", "PERMISSION_DENIED"),
     "access denied (check the credentials in the environment)"),
    (("RESOURCE_NOT_FOUND",), "the endpoint answered 'not found' without an S3 error: it is not an S3 store "
     "(check endpoint_override)"),
    (("libjvm", "libhdfs"), "hdfs:// needs Java and Hadoop's libhdfs on this machine (JAVA_HOME, HADOOP_HOME, "
     "CLASSPATH)"),
)
_DETAIL_CHARS = 300


def _reason(uri: str, err: BaseException) -> str:
    """A store's error in one line: what is wrong first (`_REASONS`), then the store's own words, shortened (no
    HTML page, no 80 lines of libjvm paths); for gs:// without a retry limit of its own, how to wait longer."""
    text = str(err)
    detail = " ".join(text.split("<", 1)[0].split("\n", 1)[0].split())
    if len(detail) > _DETAIL_CHARS:
        detail = detail[:_DETAIL_CHARS] + "..."
    what = next((why for words, why in _REASONS if any(w in text for w in words)), None)
    if what == "no such bucket":
        what = f"no such bucket {_bucket(uri)!r}"
    reason = f"{what}: {detail}" if what else detail
    if _our_retry_limit(uri):
        reason += (f" (gave up after retrying for {GCS_RETRY_S} s; add retry_limit_seconds=N to the URI's query "
                   "to wait longer)")
    return reason


def _bucket(uri: str) -> str:
    """The bucket (s3, gs) or container (abfs) a URI names."""
    parts = urlsplit(uri)
    if parts.scheme.lower() in ("abfs", "abfss"):
        if parts.username is not None:
            return unquote(parts.username)
        return unquote(parts.path).lstrip("/").split("/")[0]
    return parts.hostname or ""


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
            why = _missing(uri, filesystem, inner)
            if why is not None:
                raise SourceError(f"{uri}: {why}")
            return []
        base = inner.rstrip("/")
        found = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
    except _store_errors() as err:
        raise SourceError(f"{uri}: {_reason(uri, err)}") from None
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


def _missing(uri: str, filesystem, inner: str) -> str | None:
    """Why nothing is at `inner`: "no such bucket 'b'" (or container), or None when only the prefix or object
    is missing. A store that is none (a web server at the endpoint) raises its error here."""
    from pyarrow import fs

    with suppress(FileNotFoundError):  # a listing says what a lookup does not (S3: NoSuchBucket, not a store)
        filesystem.get_file_info(fs.FileSelector(inner.rstrip("/")))
    scheme = urlsplit(uri).scheme.lower()
    bucket = inner.split("/")[0]
    if (scheme in ("s3", "gs", "gcs", "abfs", "abfss") and bucket
            and filesystem.get_file_info(bucket).type == fs.FileType.NotFound):
        return f"no such {'container' if scheme.startswith('abfs') else 'bucket'} {bucket!r}"
    return None


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
    except (SourceError, *_store_errors()):
        return "missing"
    return f"{canonical(uri)}:{info.size}:{info.mtime_ns}"


# characters a name must not hold: line breaks and other controls (C0, DEL, C1), and the direction overrides that
# make "gnp.exe" read as "exe.png"
_UNSHOWABLE = frozenset("\u2028\u2029\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


def name_of(uri: str) -> str:
    """The file name at the end of a URI (its query left out, percent-decoded), made a plain file name: a
    slash, backslash, NUL, control or direction character becomes '_', surrounding blanks go, and a name
    that is empty, '.' or '..' becomes "image" (`store.values.image_name` takes it; the key keeps its
    own spelling in the URI)."""
    name = unquote(os.path.basename(urlsplit(uri).path.rstrip("/")))
    name = "".join("_" if c in "/\\" or c in _UNSHOWABLE or unicodedata.category(c) in ("Cc", "Cs") else c
                   for c in name).strip()
    return "image" if name in ("", ".", "..") else name


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
        if info.type == fs.FileType.Directory:
            raise ImageError(f"could not read the image {uri!r}: there is no such object, only a folder of that "
                             "name (a key that ends in '/' cannot be read)")
        if info.type != fs.FileType.File:
            why = _missing(uri, filesystem, inner) if info.type == fs.FileType.NotFound else None
            raise ImageError(f"could not read the image {uri!r}: {why or 'there is no such object'}")
        if info.size is not None and info.size > max_bytes:
            raise ImageError(f"the image {uri!r} is {info.size / 1e6:.0f} MB, more than the limit of "
                             f"{max_bytes / 1e6:.0f} MB for one image")
        with filesystem.open_input_stream(inner) as stream:
            copied = _copy_at_most(stream, out, max_bytes)
    except SourceError as err:  # the URI itself is refused (credentials in it): shown without its query
        raise ImageError(f"could not read the image {_without_query(uri)!r}: {err}") from None
    except _store_errors() as err:
        raise ImageError(f"could not read the image {uri!r}: {_reason(uri, err)}") from None
    if copied > max_bytes:
        raise ImageError(f"the image {uri!r} is more than the limit of {max_bytes / 1e6:.0f} MB for one image")
    out.flush()


def _without_query(uri: str) -> str:
    """A URI without what may hold a secret: its user part, query and fragment."""
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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

