"""The app as a service (issue 14): no file of a visitor, of the workspace or of an --allow-dir folder is
served by path (over every file route gradio has, through links and encoded paths); the session key is
made once per workspace and agreed on by every server start; forged project ids and links get a message,
never an error, and never reach outside the workspace."""

import http.client
import multiprocessing
import os
import stat
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
from app_harness import free_port, start
from PIL import Image
from tiny_sam import save_tiny_sam

from gdino.store import ObjectState, Project, ProjectError
from ui import actions as h
from ui.app_config import AppConfig
from ui.session import SECRET_FILE, Sessions, workspace_secret

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets"


def photo(path: Path, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def secrets_on_disk(tmp_path):
    """Private files: under an --allow-dir folder, outside it (reached through links inside it), and in
    the workspace (another visitor's project)."""
    allowed, outside, ws = tmp_path / "allowed", tmp_path / "outside", tmp_path / "ws"
    allowed.mkdir()
    outside.mkdir()
    (allowed / ".env").write_text("API_KEY=allowed-env-secret\n")
    photo(allowed / "photo.png", 1)
    project = Project.create(allowed / "proj")
    project.add_image(photo(tmp_path / "in_proj.png", 2))
    project.close()
    (outside / "secret.txt").write_text("outside-secret\n")
    photo(outside / "private.png", 3)
    (allowed / "link.txt").symlink_to(outside / "secret.txt")
    (allowed / "link.png").symlink_to(outside / "private.png")
    (allowed / "linkdir").symlink_to(outside, target_is_directory=True)
    return {"allowed": allowed, "outside": outside, "ws": ws}


@pytest.fixture
def service(tiny_hf, tmp_path, secrets_on_disk):
    sam = save_tiny_sam(tmp_path / "sam.pth")
    demo, app = start(["--model", str(tiny_hf[1]), "--sam", str(sam), "--workspace", str(secrets_on_disk["ws"]),
                       "--allow-dir", str(secrets_on_disk["allowed"]), "--port", str(free_port())])
    other = Sessions.new_state()  # another visitor's project, with an uploaded image
    h.add_uploads(app, other, [str(photo(tmp_path / "upload" / "visitor.png", 4))])
    yield demo, app, app.sessions.project_dir(other)
    demo.close()
    app.sessions.close()


def get(url: str, raw_path: str) -> tuple[int, bytes]:
    """GET exactly `raw_path` (no client-side normalisation of '..' or of %-escapes)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", raw_path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def attempts(target: Path) -> list[str]:
    """Every way we found in gradio's routes (routes.py: file=, file/, static, assets) to name `target`."""
    from gradio import utils

    p = str(target)
    upload = utils.get_upload_folder()
    up = "/".join([".."] * len(Path(p).parts))  # enough '..' to reach / from anywhere
    rel_to_cwd = os.path.relpath(p, os.getcwd())
    forms = [
        f"/gradio_api/file={p}", f"/file={p}", f"/gradio_api/file/{p}", f"/gradio_api/file{p}", f"/file/{p}",
        f"/gradio_api/file={quote(p, safe='')}", f"/gradio_api/file={rel_to_cwd}",
        f"/gradio_api/file=file://{p}",
        # from a folder gradio does serve (the example photos, its upload folder) back up to the target
        f"/gradio_api/file={ASSETS}/{up}{p}",
        f"/gradio_api/file={ASSETS}/{up.replace('..', '%2e%2e')}{p}",
        f"/gradio_api/file={ASSETS}%2f{up.replace('..', '%2e%2e').replace('/', '%2f')}{quote(p, safe='')}",
        f"/gradio_api/file={ASSETS}/{up.replace('..', '%252e%252e')}{p}",
        f"/gradio_api/file={upload}/{up}{p}",
        f"/gradio_api/file={upload}/{up.replace('..', '%2e%2e')}{p}",
        f"/gradio_api/file={upload}/x/{up.replace('..', '%252e%252e').replace('/', '%252f')}{p}",
        f"/static/{up.replace('..', '%2e%2e')}{p}", f"/assets/{up.replace('..', '%2e%2e')}{p}",
    ]
    return forms


def assert_refused(url: str, target: Path, secret: bytes):
    for raw in attempts(target):
        status, body = get(url, raw)
        assert status in (400, 403, 404, 405), f"{raw} answered {status}"
        assert secret not in body, f"{raw} returned the file"


def test_the_routes_tried_do_serve_the_example_photos(service):
    """The control for the refusals below: the same route forms answer for a file gradio may serve."""
    demo, _, _ = service
    status, body = get(demo.local_url, f"/gradio_api/file={ASSETS / 'cat.png'}")
    assert status == 200 and body == (ASSETS / "cat.png").read_bytes()  # the route form itself works


def test_allow_dir_files_are_not_served_to_anyone(service, secrets_on_disk):
    demo, _, _ = service
    allowed = secrets_on_disk["allowed"]
    assert_refused(demo.local_url, allowed / ".env", b"allowed-env-secret")
    assert_refused(demo.local_url, allowed / "photo.png", (allowed / "photo.png").read_bytes()[-64:])
    sqlite = allowed / "proj" / "project.sqlite"
    assert_refused(demo.local_url, sqlite, b"SQLite format 3")
    [image] = (allowed / "proj" / "images").iterdir()
    assert_refused(demo.local_url, image, image.read_bytes()[-64:])
    # links inside the allowed folder that lead out of it
    outside = secrets_on_disk["outside"]
    assert_refused(demo.local_url, allowed / "link.txt", b"outside-secret")
    assert_refused(demo.local_url, allowed / "linkdir" / "secret.txt", b"outside-secret")
    assert_refused(demo.local_url, allowed / "link.png", (outside / "private.png").read_bytes()[-64:])
    assert_refused(demo.local_url, outside / "secret.txt", b"outside-secret")


def test_the_workspace_is_not_served(service, secrets_on_disk):
    demo, _, other = service
    assert_refused(demo.local_url, other / "project.sqlite", b"SQLite format 3")
    [image] = (other / "images").iterdir()  # another visitor's upload
    assert_refused(demo.local_url, image, image.read_bytes()[-64:])
    secret = secrets_on_disk["ws"] / SECRET_FILE
    assert_refused(demo.local_url, secret, secret.read_bytes().strip())


def test_the_canvas_files_are_not_served_by_path(service):
    """The canvas' picture and mask overlay are written for one session under the system's temporary folder;
    only gradio's copies (cache folders named by content hashes) reach a page, never these paths."""
    demo, app, other = service
    state = {"token": other.name, "opened": None, "image_id": None}
    image_id = h.current_image(app, state)
    app.sessions.project(state).add_classes(["cat"])
    value, _ = h.canvas_edit(app, state, {"kind": "stroke", "image_id": image_id, "seq": 1, "object_id": None,
                                          "points": [[5, 5], [20, 20]], "radius": 3.0, "erase": False,
                                          "class_name": "cat"})
    for key in ("image", "overlay"):
        path = Path(value[key]["path"])
        assert path.is_file() and path.is_relative_to(app.canvas_files.root)
        assert_refused(demo.local_url, path, path.read_bytes()[-64:])


def test_a_shared_project_folder_is_not_served(tiny_hf, tmp_path):
    project = Project.create(tmp_path / "shared")
    project.add_image(photo(tmp_path / "p.png"))
    project.close()
    demo, app = start(["--model", str(tiny_hf[1]), "--sam", "none", "--workspace", str(tmp_path / "ws"),
                       "--project", str(tmp_path / "shared"), "--port", str(free_port())])
    try:
        assert_refused(demo.local_url, tmp_path / "shared" / "project.sqlite", b"SQLite format 3")
    finally:
        demo.close()
        app.sessions.close()


# ------------------------------------------------------------------------------------- the session key

def _secret_in_process(workspace, start_at, out):
    time.sleep(max(0.0, start_at - time.time()))  # all start together
    out.put(workspace_secret(Path(workspace)))


def test_two_server_starts_on_one_workspace_agree_on_the_secret(tiny_hf, tmp_path):
    import gradio as gr

    from ui import build_app

    config = AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / "ws")
    keys = []
    for _ in range(2):  # two starts, one after the other (a restart)
        demo, app = build_app(config)
        [stored] = [b for b in demo.blocks.values() if isinstance(b, gr.BrowserState)]
        keys.append(stored.secret)
        app.sessions.close()
    assert keys[0] == keys[1] and len(keys[0]) >= 32
    key_file = tmp_path / "ws" / SECRET_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() not in keys[0]  # the page gets a derived key, never the stored one

    # eight processes starting at once on a new workspace: one key, one file, no leftovers (forked: a
    # fresh interpreter would spend seconds importing gradio before the race)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    fresh = tmp_path / "fresh"
    procs = [ctx.Process(target=_secret_in_process, args=(str(fresh), time.time() + 0.5, out)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    got = [out.get(timeout=5) for _ in procs]
    assert len(set(got)) == 1
    assert [p.name for p in fresh.iterdir()] == [SECRET_FILE]


def test_a_damaged_key_file_is_a_clear_error(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / SECRET_FILE).write_text("short")
    with pytest.raises(ProjectError, match="is damaged; delete it"):
        workspace_secret(tmp_path / "ws")


# ------------------------------------------------------------------------- forged ids and project links

FORGED = [123, 1.5, True, [], ["x" * 24], {}, {"token": None}, {"token": 5}, {"token": ["a" * 20]},
          {"token": "../../../etc/passwd"}, {"token": "..%2f..%2fetc%2fpasswd"}, {"token": "a" * 65},
          {"token": "short"}, {"token": "abc/def/ghi/jkl/mnop"}, {"token": "x" * 20 + "\x00"},
          {"token": "a" * 24, "opened": 5}, {"token": "a" * 24, "opened": ["/etc"]}]


@pytest.fixture
def sessions(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    s = Sessions(AppConfig(model="unused", sam="none", workspace=tmp_path / "ws", allow_dirs=(allowed,)))
    yield s
    s.close()


@pytest.mark.parametrize("forged", FORGED, ids=[repr(f)[:30] for f in FORGED])
def test_a_forged_state_is_refused_with_reload_the_page(sessions, forged):
    with pytest.raises(ProjectError, match="reload the page"):
        sessions.check_state(forged)
    state, note = sessions.restore(forged)  # at page load: a new project and a note saying so
    assert state["token"] != getattr(forged, "get", lambda _: None)("token") and "not valid" in note
    assert sessions.project_dir(state).parent == sessions.config.workspace


def test_state_fields_a_page_may_garble_are_reset_not_trusted(sessions):
    token = "a" * 24
    checked = sessions.check_state({"token": token, "image_id": "7; DROP", "clicks": {"3": "zz"}, "extra": 1})
    assert checked == {"token": token, "opened": None, "image_id": None, "extra": 1}
    clicks = {"3": [[1.0, 2.0, 1], [3, 4, 0]]}
    assert sessions.check_state({"token": token, "image_id": 4, "clicks": clicks})["clicks"] == clicks


def test_tokens_never_leave_the_workspace(sessions, tmp_path):
    for token in ["..", "../x" * 5, "/etc/passwd" * 2, "%2e%2e%2f" * 3, "a" * 16 + "/..", "C:\\windows\\x"]:
        with pytest.raises(ProjectError, match="no valid project id"):
            sessions.project_dir({"token": token})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (sessions.config.workspace).mkdir(parents=True)
    (sessions.config.workspace / ("b" * 24)).symlink_to(outside, target_is_directory=True)  # planted
    with pytest.raises(ProjectError, match="no valid project id"):
        sessions.project_dir({"token": "b" * 24})


def test_a_project_link_opens_that_project_and_a_bad_one_says_so(sessions):
    mine, theirs = Sessions.new_state(), Sessions.new_state()
    for s in (mine, theirs):
        sessions.project(s).add_classes(["cat"])  # a project exists once something is stored in it
    state, note = sessions.restore(mine, link=theirs["token"], address="http://host:7860/app/")
    assert state["token"] == theirs["token"] and note.startswith("Opened the project from its link.")
    assert f"its link: http://host:7860/app/?project={mine['token']}" in note  # the way back (shown as text)
    assert sessions.restore(theirs, link=theirs["token"]) == (sessions.check_state(theirs), None)
    for bad in ["x" * 24, "../" + theirs["token"], theirs["token"][:-1] + "%", "", "a" * 200]:
        state, note = sessions.restore(mine, link=bad)
        assert state["token"] == mine["token"] and note.startswith("This project link is not valid")
    assert sessions.link(mine["token"], "http://h/") == f"http://h/?project={mine['token']}"


def test_a_server_folder_that_is_no_longer_allowed_falls_back_to_the_own_project(tmp_path):
    s = Sessions(AppConfig(model="unused", sam="none", workspace=tmp_path / "ws"))  # restarted without --allow-dir
    state, note = s.restore({"token": "c" * 24, "opened": str(tmp_path / "allowed" / "proj"), "image_id": 3})
    assert state == {"token": "c" * 24, "opened": None, "image_id": None} and "cannot be opened now" in note


def test_links_out_of_an_allowed_folder_are_refused_when_adding_its_images(sessions, tmp_path):
    allowed = sessions.config.allow_dirs[0]
    outside = tmp_path / "outside"
    photo(outside / "private.png")
    photo(allowed / "shots" / "ok.png")
    (allowed / "shots" / "out.png").symlink_to(outside / "private.png")
    (allowed / "shots" / "inside.png").symlink_to(allowed / "shots" / "ok.png")
    (allowed / "shots" / "outdir").symlink_to(outside, target_is_directory=True)
    found, refused = sessions.allowed_files(allowed / "shots", {".png"})
    assert found == [(allowed / "shots" / "ok.png").resolve()]
    assert sorted(refused) == ["out.png", "outdir/"]
    with pytest.raises(ProjectError, match="outside the folders"):
        sessions.allowed(allowed / "shots" / "out.png")


def test_add_its_images_does_not_follow_links_out(tiny_hf, tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    photo(outside / "private.png")
    photo(allowed / "ok.png")
    (allowed / "out.png").symlink_to(outside / "private.png")
    app = h.make_app(AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / "ws",
                               allow_dirs=(allowed.resolve(),)))
    try:
        state = Sessions.new_state()
        message = h.add_server_folder(app, state, str(allowed))
        paths = [Path(r.path) for r in app.sessions.project(state).images()]
        assert paths == [(allowed / "ok.png").resolve()] and "out.png" in message
    finally:
        app.sessions.close()


def test_an_over_size_upload_is_refused_while_it_uploads(tiny_hf, tmp_path):
    """--max-upload-mb is also gradio's own upload limit: the file is refused (413) before it is stored."""
    from gradio import utils

    demo, app = start(["--model", str(tiny_hf[1]), "--sam", "none", "--workspace", str(tmp_path / "ws"),
                       "--max-upload-mb", "1", "--port", str(free_port())])
    try:
        upload_dir = Path(utils.get_upload_folder())
        before = {p for p in upload_dir.rglob("*") if p.is_file()} if upload_dir.exists() else set()
        parts = urlsplit(demo.local_url)
        boundary = "gdinoboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode() + b"\0" * (2 * 2**20) + f"\r\n--{boundary}--\r\n".encode()
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            conn.request("POST", "/gradio_api/upload", body=body,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            response = conn.getresponse()
            status = response.status
            response.read()
        finally:
            conn.close()
        assert status == 413
        after = {p for p in upload_dir.rglob("*") if p.is_file()} if upload_dir.exists() else set()
        assert not [p for p in after - before if p.name == "big.png"]
    finally:
        demo.close()
        app.sessions.close()


def test_a_file_swapped_for_a_link_out_of_the_allowed_folders_is_never_read(tiny_hf, tmp_path):
    """An image referenced in an --allow-dir folder, later replaced by a link to a private file: the canvas
    shows a placeholder and says so, Detect and SAM refuse it, and the private pixels reach no page."""
    allowed, private = tmp_path / "allowed", tmp_path / "private"
    allowed.mkdir()
    private.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(allowed / "a.png")
    Image.fromarray(np.full((48, 64, 3), 255, np.uint8)).save(private / "secret.png")
    app = h.make_app(AppConfig(model=str(tiny_hf[1]), sam=str(save_tiny_sam(tmp_path / "sam.pth")),
                               workspace=tmp_path / "ws", allow_dirs=(allowed,)))
    state = Sessions.new_state()
    h.add_server_folder(app, state, str(allowed))
    image_id = h.current_image(app, state)
    assert np.asarray(Image.open(h.view_image(app, state, image_id)[0]["image"]["path"])).mean() == 0
    (allowed / "a.png").unlink()
    os.symlink(private / "secret.png", allowed / "a.png")  # swapped after it was added
    value, info = h.view_image(app, state, image_id)
    assert np.asarray(Image.open(value["image"]["path"])).mean() < 255 and "cannot be read" in info
    settings = h.settings_from_inputs("classes", "cat", "", 0.05, 0.25, False)
    with pytest.raises(ValueError, match="leads outside the folders"):
        h.detect_image(app, state, image_id, settings)
    app.sessions.project(state).add_classes(["cat"])
    (obj,) = app.sessions.project(state).edit_objects(image_id, new=[ObjectState("cat", (1, 1, 30, 30))])
    value, _ = h.canvas_edit(app, state, {"kind": "click", "image_id": image_id, "seq": 1, "object_id": obj.id,
                                          "x": 10, "y": 10, "positive": True, "class_name": "cat"})
    assert "leads outside the folders" in value["message"]
    app.sessions.close()
