"""Images in an object store (`gdino.sources`, `Project.add_reference`) against a real S3 endpoint (moto's
server, read by pyarrow's S3 client): listing, reading (EXIF upright, the same errors as a local file,
never the temporary file's name), size limits, and the project's references to URIs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gdino.labeling.inputs import NoImagesError, find_images
from gdino.processing import ImageError, to_rgb
from gdino.sources import SourceError, canonical, check_uri, is_uri, list_images, local_file, name_of, read_image
from gdino.store import Project, ProjectError

pytest.importorskip("pyarrow.fs")


def jpeg(width: int, height: int, seed: int = 0, orientation: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, format="JPEG", exif=exif)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bucket(object_store):
    store = object_store
    for key in ("src/a.jpg", "src/sub/b.JPG", "src/sub/deeper/c.png", "src/.hidden.jpg", "src/.cache/d.jpg",
                "src/notes.txt"):
        data = jpeg(40, 30, seed=len(key)) if not key.endswith(".png") else _png(40, 30)
        store.put(key, data if not key.endswith(".txt") else b"hello")
    store.put("src/rotated.jpg", jpeg(30, 40, orientation=6))  # stored 30 wide, 40 high; shown 40 x 30
    store.put("src/broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg" * 8)
    return store


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_uri_or_local_path():
    assert is_uri("s3://bucket/a.jpg") and is_uri("gs://b/x") and is_uri("abfs://c/x.png")
    assert not is_uri("/data/a.jpg") and not is_uri("file:///data/a.jpg") and not is_uri("photos/s3:/x.jpg")


def test_lists_images_recursively_sorted_without_hidden_or_other_files(bucket):
    found = list_images(bucket.uri("src"))
    paths = [u.split("?")[0] for u in found]
    assert paths == ["s3://src/a.jpg", "s3://src/broken.jpg", "s3://src/rotated.jpg", "s3://src/sub/b.JPG",
                     "s3://src/sub/deeper/c.png"]
    assert all(u.endswith("?" + bucket.query()) for u in found)  # each URI opens on its own (a worker's)
    assert list_images(bucket.uri("src/sub/b.JPG")) == [bucket.uri("src/sub/b.JPG")]  # one object
    assert list_images(bucket.uri("src/nothing-here")) == []


def test_reads_upright_like_a_local_file(bucket, tmp_path):
    local = tmp_path / "rotated.jpg"
    local.write_bytes(jpeg(30, 40, orientation=6))
    remote = read_image(bucket.uri("src/rotated.jpg"))
    assert remote.size == (40, 30)
    assert np.array_equal(np.asarray(remote), np.asarray(to_rgb(local)))


def test_a_bad_object_is_an_image_error_naming_the_uri(bucket):
    uri = bucket.uri("src/broken.jpg")
    with pytest.raises(ImageError) as err:
        read_image(uri)
    assert uri in str(err.value) and "gdino-fetch-" not in str(err.value)
    with pytest.raises(ImageError, match="no such object"):
        read_image(bucket.uri("src/missing.jpg"))


def test_an_object_over_the_limit_is_not_fetched(bucket):
    with pytest.raises(ImageError, match="more than the limit"), local_file(bucket.uri("src/a.jpg"), max_bytes=100):
        pass


def test_an_unknown_scheme_is_an_image_error():
    with pytest.raises(ImageError, match="could not read"):
        read_image("nosuchscheme://x/y.jpg")


def test_a_project_references_uris_without_copying(bucket, tmp_path):
    uri = bucket.uri("src/a.jpg")
    with Project.create(tmp_path / "p") as project:
        record = project.add_reference(uri, 40, 30)
        assert (record.uri, record.path, record.location, record.name) == (uri, None, uri, "a.jpg")
        assert project.add_reference(uri, 40, 30).id == record.id  # once per key (the URI)
        assert project.image_by_key(uri).id == record.id
        again = project.add_reference(bucket.uri("src/sub/a.jpg"), 40, 30)
        assert again.name == "a_1.jpg"
        with pytest.raises(ProjectError, match="not an object-store URI"):
            project.add_reference(str(tmp_path / "x.jpg"), 40, 30)
        with pytest.raises(ProjectError, match="positive whole pixels"):
            project.add_reference(bucket.uri("src/b.jpg"), 0, 30)
        with pytest.raises(ImageError, match="add_reference"):
            project.add_image(uri)
        project.remove_image(again.id)
    assert not (tmp_path / "p" / "images").exists() or not any((tmp_path / "p" / "images").iterdir())
    with Project.open(tmp_path / "p") as project:  # stored as a URI: reopened the same
        (record,) = project.images()
        assert record.uri == uri and read_image(record.location).size == (40, 30)


def test_keys_with_spaces_and_hashes_list_and_read(bucket):
    bucket.put("odd/my cat #1.jpg", jpeg(20, 16))
    (uri,) = list_images(bucket.uri("odd"))
    assert "my%20cat%20%231.jpg" in uri and name_of(uri) == "my cat #1.jpg"
    assert read_image(uri).size == (20, 16)


def test_one_spelling_per_object():
    a = "S3://b/x/a.jpg?scheme=http&endpoint_override=h:9000&region=r"
    b = "s3://b/x/a.jpg?region=r&endpoint_override=h:9000&scheme=http"
    assert is_uri(a) and canonical(a) == canonical(b) == "s3://b/x/a.jpg?endpoint_override=h:9000&region=r&scheme=http"
    assert not is_uri("local:///etc/passwd") and not is_uri("mock://x/y.jpg")  # pyarrow's, but not object stores


def test_credentials_in_a_uri_are_refused_without_repeating_them(tmp_path):
    uri = "s3://AKIAEXAMPLE:SuperSecret@bucket/photos/"
    with pytest.raises(SourceError) as err:
        list_images(uri)
    assert "SuperSecret" not in str(err.value) and "environment" in str(err.value)
    with pytest.raises(NoImagesError) as err:
        find_images([uri])
    assert "SuperSecret" not in str(err.value)
    with Project.create(tmp_path / "p") as project, pytest.raises(ProjectError) as err:
        project.add_reference(uri + "a.jpg", 10, 10)
    assert "SuperSecret" not in str(err.value)


def test_a_missing_bucket_says_so(bucket):
    with pytest.raises(NoImagesError, match="no such bucket 'no-such-bucket'"):
        find_images([bucket.uri("no-such-bucket/photos")])
    with pytest.raises(NoImagesError, match="no such prefix"):
        find_images([bucket.uri("src/no-such-prefix")])


def test_a_new_image_row_that_cannot_be_stored_is_an_error_not_gone(tmp_path):
    from gdino.labeling.results import NEW_IMAGE, make_row, store_row

    row = make_row(NEW_IMAGE, "s3://b/a.png", "a.png", objects=[], run={"classes": ["cat"]}, size=(0, 0))
    with Project.create(tmp_path / "p") as project, pytest.raises(ProjectError, match="pixels"):
        store_row(project, NEW_IMAGE, row)


def test_every_spelling_of_an_object_is_one_key(bucket, tmp_path):
    bucket.put("plus/a+b.png", _png(30, 20))
    (listed,) = list_images(bucket.uri("plus"))
    direct = bucket.uri("plus/a+b.png")
    assert canonical(direct) == listed == canonical(bucket.uri("plus/%61%2Bb.png")) == canonical(bucket.uri("plus/a%2bb.png"))
    assert canonical("gcs://b/x.png") == canonical("gs://b/x.png")
    assert name_of(listed) == "a+b.png"
    with Project.create(tmp_path / "p") as project:
        first = project.add_reference(listed, 30, 20)
        assert project.add_reference(direct, 30, 20).id == first.id
        assert project.add_reference(bucket.uri("plus/%61%2Bb.png"), 30, 20).id == first.id
        assert [r.name for r in project.images()] == ["a+b.png"]


def test_abfs_container_at_account_is_no_credential_and_a_uri_needs_a_bucket():
    assert check_uri("abfs://photos@account.dfs.core.windows.net/x/").startswith("abfs://photos@account")
    with pytest.raises(SourceError, match="credentials"):
        check_uri("s3://user@bucket/x/")
    with pytest.raises(SourceError, match="credentials"):
        check_uri("abfs://photos:key@account.dfs.core.windows.net/x/")
    with pytest.raises(SourceError, match="needs a bucket"):
        check_uri("s3:///etc/passwd.png")


def test_a_new_image_whose_objects_cannot_be_stored_is_an_error_and_not_added(tmp_path):
    from gdino.labeling.results import NEW_IMAGE, make_row, store_row

    bad = {"box": [9.0, 9.0, 1.0, 1.0], "class_name": "cat", "score": 0.9, "mask": None}  # inverted
    row = make_row(NEW_IMAGE, "s3://b/a.png", "a.png", objects=[bad], run={"classes": ["cat"]}, size=(20, 20))
    with Project.create(tmp_path / "p") as project:
        with pytest.raises(ProjectError):
            store_row(project, NEW_IMAGE, row)
        assert project.images() == []


NO_PYARROW = """
import builtins, sys
real = builtins.__import__
def without_pyarrow(name, *args, **kwargs):
    if name.startswith("pyarrow"):
        raise ImportError("No module named 'pyarrow'")
    return real(name, *args, **kwargs)
builtins.__import__ = without_pyarrow
from gdino.cli import main
sys.exit(main(["label", "s3://b/photos/", "--classes", "cat", "--out", sys.argv[1]]))
"""


def test_without_pyarrow_a_uri_says_what_to_install(tmp_path):
    import subprocess
    import sys

    from fault_harness import ROOT, env

    result = subprocess.run([sys.executable, "-c", NO_PYARROW, str(tmp_path / "p")], env=env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "needs pyarrow (pip install pyarrow" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


GCS_UNREACHABLE = """
import sys, time
import gdino.sources as sources
sources.GCS_RETRY_S = 2
began = time.monotonic()
for call in (sources.list_images, sources.read_image):
    try:
        call(sys.argv[1])
    except ValueError as err:  # SourceError / ImageError
        print(type(err).__name__, round(time.monotonic() - began), str(err).replace(chr(10), " ")[-200:])
"""


def test_an_unreachable_gcs_store_gives_up_after_its_retry_limit_and_says_how_to_wait_longer():
    """Google's client retries for 15 minutes by default: a gs:// URI without network (or credentials) looked like a
    hang. It now gives up after GCS_RETRY_S (here set to 2 s) and says how to wait longer. (This machine has no
    route to Google; where one exists, a made-up bucket without credentials fails the same way.)"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", GCS_UNREACHABLE, "gs://gdino-test-no-such-bucket-7f3a/photos"],
                         capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["SourceError", "ImageError"], out.stdout + out.stderr
    for line in lines:
        assert "retry_limit_seconds=N" in line
    assert int(lines[-1].split()[1]) < 60  # both calls: seconds, not 15 minutes each


def test_the_gcs_retry_bound_is_added_only_where_the_uri_has_none():
    from gdino.sources import GCS_RETRY_S, _with_retry_limit

    assert _with_retry_limit("gs://b/p.jpg") == f"gs://b/p.jpg?retry_limit_seconds={GCS_RETRY_S}"
    assert _with_retry_limit("GCS://b/p.jpg?project_id=x") == f"gcs://b/p.jpg?project_id=x&retry_limit_seconds={GCS_RETRY_S}"
    assert _with_retry_limit("gs://b/p.jpg?retry_limit_seconds=600") == "gs://b/p.jpg?retry_limit_seconds=600"
    assert _with_retry_limit("s3://b/p.jpg?region=x") == "s3://b/p.jpg?region=x"
    assert canonical("gs://b/p.jpg") == "gs://b/p.jpg"  # the key of an object does not change
