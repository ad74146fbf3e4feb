"""The app on a project whose images are in an object store (labeled with `gdino label s3://...`): it reads
them only under an --allow-uri prefix with the same endpoint; otherwise they show as unreadable and runs
list them, in the page's words. Against a real S3 endpoint (moto's server)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

from gdino.processing import ImageError
from gdino.sources import uri_within
from ui import actions as h
from ui.app_config import AppConfig, parse_args
from ui.session import Sessions


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def served(tiny_hf, tmp_path, allow_uris=()):
    """(the app, one visitor's state), the app closed afterwards."""
    cfg = AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / "ws", allow_uris=tuple(allow_uris))
    app = h.make_app(cfg)
    try:
        yield app, Sessions.new_state()
    finally:
        app.sessions.close()


@pytest.fixture
def stored(object_store):
    object_store.put("shelf/ok/a.png", png(0))
    object_store.put("shelf/other/b.png", png(1))
    return object_store


def add_refs(app, state, uris):
    project = app.sessions.project(state)
    return [project.add_reference(uri, 160, 120).id for uri in uris]


def test_object_store_images_need_an_allow_uri_prefix(tiny_hf, tmp_path, stored):
    with served(tiny_hf, tmp_path) as (app, state):
        (image,) = add_refs(app, state, [stored.uri("shelf/ok/a.png")])
        value, _ = h.view_image(app, state, image)
        assert value["readable"] is False  # a grey placeholder, not a crash
        settings = h.settings_from_inputs("classes", "cat", "", 0.2, 0.25, False)
        with pytest.raises(ImageError) as refused:  # the page shows the error's text
            h.detect_image(app, state, image, settings)
        assert "does not read from" in str(refused.value) and "--allow-uri" in str(refused.value)
        assert "127.0.0.1" not in str(refused.value)


def test_allowed_object_store_images_show_and_detect(tiny_hf, tmp_path, stored):
    with served(tiny_hf, tmp_path, allow_uris=[stored.uri("shelf/ok/")]) as (app, state):
        ok, other = add_refs(app, state, [stored.uri("shelf/ok/a.png"), stored.uri("shelf/other/b.png")])
        value, _ = h.view_image(app, state, ok)
        assert value["readable"] is True
        with Image.open(value["image"]["path"]) as picture:
            assert picture.size == (160, 120)
        settings = h.settings_from_inputs("classes", "cat, remote control", "", 0.2, 0.25, False)
        assert h.detect_image(app, state, ok, settings).startswith("found")
        value, _ = h.view_image(app, state, other)  # same store, outside the prefix
        assert value["readable"] is False


def test_a_uri_cannot_leave_its_prefix_or_change_the_endpoint(stored):
    prefix = stored.uri("shelf/ok/")
    assert uri_within(stored.uri("shelf/ok/a.png"), prefix)
    assert uri_within(stored.uri("shelf/ok/sub/a.png"), prefix)
    assert not uri_within(stored.uri("shelf/ok"), prefix)  # the prefix itself is no image
    assert not uri_within(stored.uri("shelf/okay/a.png"), prefix)  # by segment, not by characters
    assert not uri_within(stored.uri("shelf/ok/../other/b.png"), prefix)
    for escape in ("%2e%2e/other/b.png", "%2E%2E/%2e%2e/otherbucket/x.png", "sub%2F..%2F..%2Fother/b.png", "./a.png",
                   "sub//a.png"):  # percent-decoded as pyarrow opens them
        assert not uri_within(stored.uri("shelf/ok/" + escape), prefix), escape
    assert not uri_within("s3://shelf/ok/a.png?endpoint_override=evil.example:80&scheme=http&region=us-east-1", prefix)
    assert not uri_within("gs://shelf/ok/a.png?" + stored.query(), prefix)
    assert not uri_within("/shelf/ok/a.png", prefix)


def test_allow_uri_must_be_a_uri(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--allow-uri", "/data/photos"])
    assert "not an object-store URI" in capsys.readouterr().err
    assert parse_args(["--allow-uri", "s3://b/p/"]).allow_uris == ("s3://b/p/",)


@pytest.mark.parametrize("uri", ["abfs://photos@acct/p/?sig=SeCrEtVaLuE", "abfs://photos@acct/p/?client_secret=SeCrEtVaLuE",
                                 "s3://me:SeCrEtVaLuE@b/p/", "s3://b/p/?secret_key=SeCrEtVaLuE"])
def test_allow_uri_with_a_credential_is_refused_without_repeating_it(capsys, uri):
    with pytest.raises(SystemExit):
        parse_args(["--allow-uri", uri])
    err = capsys.readouterr().err
    assert "--allow-uri" in err and "SeCrEtVaLuE" not in err, err


def test_a_hostile_project_cannot_reach_outside_through_the_page(tiny_hf, tmp_path, stored):
    """A project database (prepared elsewhere) naming an object outside the allowed prefix by a percent-encoded
    '..', another endpoint, and a server file outside every allowed folder: not shown, not exported."""
    stored.put("shelf/secret/s.png", png(7))
    with served(tiny_hf, tmp_path, allow_uris=[stored.uri("shelf/ok/")]) as (app, state):
        project = app.sessions.project(state)
        private = tmp_path / "private.png"
        Image.fromarray(np.full((30, 40, 3), 9, np.uint8)).save(private)
        ok, escape, elsewhere = add_refs(app, state, [stored.uri("shelf/ok/a.png"), stored.uri("shelf/ok/%2e%2e/secret/s.png"),
                                                      "s3://shelf/ok/a.png?endpoint_override=127.0.0.1:9&scheme=http"])
        outside = project.add_image(private, copy=False).id
        for image in (escape, elsewhere, outside):
            assert h.view_image(app, state, image)[0]["readable"] is False, image
        zip_path, message = h.export(app, state, "coco", False)
        import zipfile

        names = zipfile.ZipFile(zip_path).namelist()
        assert [n for n in names if n.startswith("images/")] == ["images/train/a.png"], names
        assert "exported 1 image(s)" in message and "s.png" in message and "private.png" in message
        assert str(tmp_path) not in message and "s.png: s.png" not in message


def test_a_replaced_object_is_shown_anew(tiny_hf, tmp_path, stored):
    with served(tiny_hf, tmp_path, allow_uris=[stored.uri("shelf/ok/")]) as (app, state):
        stored.put("shelf/ok/c.png", png(3))
        (image,) = add_refs(app, state, [stored.uri("shelf/ok/c.png")])
        first, _ = h.view_image(app, state, image)
        buf = io.BytesIO()  # new pixels, the same size (the version is the object's size and time: a new size here)
        Image.new("RGB", (160, 120), (0, 90, 200)).save(buf, format="PNG")
        stored.put("shelf/ok/c.png", buf.getvalue())
        second, _ = h.view_image(app, state, image)
        with Image.open(first["image"]["path"]) as a, Image.open(second["image"]["path"]) as b:
            assert not np.array_equal(np.asarray(a), np.asarray(b))
