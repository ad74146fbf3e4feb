"""The workspace that holds the visitors' projects (issue 24): a page load stores nothing (a project is made
by the first change, empty ones expire), the workspace is private (an old, loose one is tightened at start),
the session key is never read through a link, and a project link can be replaced by a new one."""

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from app_harness import ARGS, CHROMIUM, free_port, needs_browser, start
from PIL import Image

from gdino.store import Project, ProjectError
from ui import actions as h
from ui import session
from ui.app_config import AppConfig
from ui.session import SECRET_FILE, Sessions, valid_token, workspace_secret

ROOT = Path(__file__).resolve().parents[2]
KEY = "k" * 43  # a well-formed session key


def photo(path: Path, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def folders(workspace: Path) -> list[str]:
    """The project folders in the workspace (its own files start with a dot)."""
    return sorted(p.name for p in workspace.iterdir() if not p.name.startswith(".")) if workspace.exists() else []


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def app(tiny_hf, tmp_path):
    application = h.make_app(AppConfig(model=str(tiny_hf[1]), sam="none", workspace=tmp_path / "ws"))
    yield application
    application.sessions.close()


def page_load(app, stored=None, link=None):
    """What the page's load event reads (ui/layout.py on_load and refresh, then the 2 s ticker)."""
    state, note = app.sessions.restore(stored, link, "http://host/")
    h.load_prompt(app, state)
    image_id = h.current_image(app, state)
    h.view_image(app, state, image_id)
    project = app.sessions.project(state)
    assert project.classes == [] and project.phrases == []
    h.rows(app, state, "all")
    h.class_counts(app, state)
    h.review_counter(app, state)
    h.model_choices(app, state)
    h.project_model(app, state)
    h.job_status(app, state)
    app.jobs.get(app.sessions.project(state).path)
    return state, note


# ------------------------------------------------------------------ item 9: a project only once something is stored

def test_page_loads_and_made_up_links_make_no_folder(app, tmp_path):
    ws = app.config.workspace
    state = None
    for _ in range(5):  # five new visitors, one of them reloading
        state, _ = page_load(app)
    page_load(app, stored=state)
    _, note = page_load(app, link="Z" * 24)  # a made-up project id in the link
    assert note.startswith("This project link is not valid")
    page_load(app, stored={"token": "Y" * 24, "opened": None, "image_id": None})  # a made-up stored id
    assert folders(ws) == []


STORES = {
    "upload": lambda app, state, tmp_path: h.add_uploads(app, state, [str(photo(tmp_path / "a.png"))]),
    "example": lambda app, state, tmp_path: h.add_example(app, state, "cat.png"),
    "prompt": lambda app, state, tmp_path: h.save_prompt(app, state, "classes", "cat", "", 0.3, 0.25, False),
    "class": lambda app, state, tmp_path: app.sessions.project(state).add_classes(["cat"]),
}


@pytest.mark.parametrize("action", list(STORES))
def test_the_first_change_makes_the_project_private(app, tmp_path, action):
    state, _ = page_load(app)
    pending = app.sessions.project(state)  # taken before the change, used after it
    STORES[action](app, state, tmp_path)
    ws = app.config.workspace
    assert folders(ws) == [state["token"]] and (ws / state["token"] / "project.sqlite").is_file()
    assert mode(ws) == 0o700 and mode(ws / state["token"]) == 0o700
    assert pending.path == ws / state["token"] and pending.stats() == app.sessions.project(state).stats()
    [project] = app.sessions.open_projects()
    assert project.path == ws / state["token"]


def test_the_link_is_shown_once_the_project_exists(app, tmp_path):
    """A link to a project not made yet would open nothing elsewhere: the field says when it appears."""
    state, _ = page_load(app)
    assert app.sessions.shown_link(state, "http://host/") == session.LINK_PENDING
    h.add_uploads(app, state, [str(photo(tmp_path / "a.png"))])
    link = app.sessions.shown_link(state, "http://host/")
    assert link == f"http://host/?project={state['token']}"
    elsewhere, note = app.sessions.restore(None, state["token"], "http://host/")
    assert elsewhere["token"] == state["token"] and note.startswith("Opened the project from its link.")


def _make_old(directory: Path, days: float) -> None:
    then = time.time() - days * 86400
    for path in [*directory.rglob("*"), directory]:
        os.utime(path, (then, then), follow_symlinks=False)


def test_empty_projects_expire_when_the_server_starts(tiny_hf, tmp_path):
    """The rule: a workspace project with no images and no classes, unchanged for 7 days, is deleted at start
    (and at most once a day while the server runs, when it makes a project)."""
    ws = tmp_path / "ws"
    ws.mkdir(mode=0o700)
    (ws / SECRET_FILE).write_text(KEY + "\n")
    made = {}
    for name, days, fill in [("old_empty", 8, None), ("new_empty", 1, None), ("old_image", 30, "image"),
                             ("old_class", 30, "class"), ("old_prompt", 30, "setting")]:
        token = (name + "_" * 24)[:24]
        with Project.create(ws / token) as project:
            if fill == "image":
                project.add_image(photo(tmp_path / "p.png"))
            elif fill == "class":
                project.add_classes(["cat"])
            elif fill == "setting":
                project.set_setting("prompt", {"classes_text": "cat"})
        _make_old(ws / token, days)
        made[name] = token
    (ws / ("x" * 24)).mkdir()  # a folder of something else, old, not a project: left alone
    (ws / ("x" * 24) / "notes.txt").write_text("mine")
    _make_old(ws / ("x" * 24), 30)
    demo, app = start(["--model", str(tiny_hf[1]), "--sam", "none", "--workspace", str(ws), "--port", str(free_port())])
    try:
        kept = {made[n] for n in ("new_empty", "old_image", "old_class")} | {"x" * 24}
        assert set(folders(ws)) == kept  # the old empty ones (a prompt alone is not content) are gone
        assert not [p for p in ws.iterdir() if p.name.startswith(".expired")]
        assert session.EMPTY_KEEP_S == 7 * 86400
    finally:
        demo.close()
        app.sessions.close()


def test_a_project_open_in_another_server_process_is_not_expired(tmp_path):
    """Server two has an empty project open (a prompt saved a week ago); server one starts on the workspace and
    leaves it (two holds it: a shared flock); two's next change is kept. Once no server has it open, a start
    deletes it, and the next change makes it again (private)."""
    config = AppConfig(model="unused", sam="none", workspace=tmp_path / "ws")
    two = Sessions(config)
    state = {"token": "E" * 24, "opened": None, "image_id": None}
    try:
        two.project(state).set_setting("prompt", {"classes_text": "cat"})
        _make_old(config.workspace / state["token"], 8)
        proj = two.project(state)
        Sessions(config).close()  # server one's start: its sweep
        proj.add_classes(["cat"])
        with Project.open(config.workspace / state["token"]) as project:
            assert project.classes == ["cat"]
        proj.remove_class("cat")
    finally:
        two.close()
    _make_old(config.workspace / state["token"], 8)
    Sessions(config).close()
    assert folders(config.workspace) == []
    three = Sessions(config)
    try:
        three.project(state).add_classes(["dog"])
        assert mode(config.workspace / state["token"]) == 0o700
    finally:
        three.close()


def test_the_sweep_skips_what_is_not_an_empty_project(tmp_path):
    """Only a project database without images and classes (images/ holding at most the store's own
    interrupted copies) is expired; an old token-shaped folder without a database, or with another hidden file
    in images/, is kept."""
    ws = tmp_path / "ws"
    no_db, hidden, leftover = ws / ("N" * 24), ws / ("H" * 24), ws / ("A" * 24)
    (no_db / "images").mkdir(parents=True)
    for directory in (hidden, leftover):
        Project.create(directory).close()
    (hidden / "images" / ".keep").write_text("mine")
    (leftover / "images" / ".adding-0123").write_text("half")
    for directory in (no_db, hidden, leftover):
        _make_old(directory, 8)
    assert session.expire_empty(ws) == 1
    assert folders(ws) == sorted([no_db.name, hidden.name])


def test_an_empty_project_with_only_sam_embeddings_expires_and_a_linked_cache_is_kept(tmp_path):
    """Embeddings (<project>/.cache/sam) are not a person's work: an otherwise empty project still expires. A
    .cache that is a link leads outside the project: that project is kept, and the link's target untouched."""
    ws, outside = tmp_path / "ws", tmp_path / "users-folder"
    cached, linked = ws / ("C" * 24), ws / ("L" * 24)
    for directory in (cached, linked):
        Project.create(directory).close()
    (cached / ".cache" / "sam").mkdir(parents=True)
    (cached / ".cache" / "sam" / "sam1-e1-x-y.safetensors").write_bytes(b"embedding")
    (outside / "sam").mkdir(parents=True)
    (outside / "sam" / "keep.txt").write_text("mine")
    (linked / ".cache").symlink_to(outside, target_is_directory=True)
    for directory in (cached, linked):
        _make_old(directory, 8)
    assert session.expire_empty(ws) == 1
    assert folders(ws) == [linked.name] and (outside / "sam" / "keep.txt").read_text() == "mine"


def test_the_daily_sweep_deletes_outside_the_lock(tmp_path, monkeypatch):
    config = AppConfig(model="unused", sam="none", workspace=tmp_path / "ws")
    old = config.workspace / ("O" * 24)
    Project.create(old).close()
    _make_old(old, 8)
    sessions = Sessions(config)
    sessions.close()
    Project.create(old).close()
    _make_old(old, 8)
    deleted, rmtree = [], session.shutil.rmtree

    def free(lock) -> bool:  # whether another thread could take the lock now
        got = []

        def take():
            got.append(lock.acquire(blocking=False))
            if got[0]:
                lock.release()
        thread = threading.Thread(target=take)
        thread.start()
        thread.join()
        return got[0]

    def watched(path, *args, **kwargs):
        deleted.append(free(sessions._lock))
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(session.shutil, "rmtree", watched)
    sessions._next_sweep = 0.0
    try:
        sessions.project({"token": "P" * 24, "opened": None, "image_id": None}).add_classes(["cat"])
        assert deleted == [True] and folders(config.workspace) == ["P" * 24]
    finally:
        sessions.close()


# ----------------------------------------------------------------------- item 10: an old, loose workspace

def test_a_loose_workspace_is_made_private_at_start(tiny_hf, tmp_path):
    ws = tmp_path / "ws"
    token = "L" * 24
    with Project.create(ws / token) as project:  # as earlier versions left it, under umask 022
        project.add_image(photo(tmp_path / "p.png"))
    (ws / SECRET_FILE).write_text(KEY + "\n")
    loose = [ws, ws / token, ws / token / "images"]
    files = [ws / SECRET_FILE, ws / token / "project.sqlite", *(ws / token / "images").iterdir()]
    for path in loose:
        path.chmod(0o755)
    for path in files:
        path.chmod(0o644)
    demo, app = start(["--model", str(tiny_hf[1]), "--sam", "none", "--workspace", str(ws), "--port", str(free_port())])
    try:
        assert {str(p): mode(p) for p in loose} == {str(p): 0o700 for p in loose}
        assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
        [note] = app.sessions.notes
        assert "private" in note and str(ws) in note
        state = {"token": token, "opened": None, "image_id": None}
        assert [r[1] for r in h.rows(app, state, "all")] == ["p.png"]  # still the owner's project
    finally:
        demo.close()
        app.sessions.close()


def test_app_py_refuses_a_linked_key_in_one_line(tiny_hf, tmp_path):
    """`python app.py` with a link as the session key: one line, exit 2, the link's target untouched (and the
    loose workspace made private all the same)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    ws.chmod(0o755)
    target = tmp_path / "elsewhere.txt"
    target.write_text(KEY + "\n")
    target.chmod(0o644)
    (ws / SECRET_FILE).symlink_to(target)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GDINO_MSDA": "reference"}
    proc = subprocess.Popen([sys.executable, "app.py", "--model", str(tiny_hf[1]), "--sam", "none", "--workspace",
                             str(ws), "--port", str(free_port())], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        for line in proc.stdout:  # until it ends, or serves (then it followed the link)
            out.append(line)
            if "Running on" in line:
                break
    finally:
        proc.terminate()
        code = proc.wait(timeout=60)
    text = "".join(out)
    [line] = [line for line in out if line.startswith("error")]
    assert code == 2 and "Traceback" not in text, text
    assert line.startswith("error: the session key") and "is a link" in line and KEY not in text
    assert mode(target) == 0o644 and mode(ws) == 0o700


# ------------------------------------------------------------------------ item 11: the session key as a link

def test_a_linked_session_key_is_refused_and_its_target_left_alone(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir(mode=0o700)
    target = tmp_path / "target.txt"
    target.write_text(KEY + "\n")
    target.chmod(0o644)
    (ws / SECRET_FILE).symlink_to(target)
    with pytest.raises(ProjectError, match="is a link") as caught:
        workspace_secret(ws)
    assert KEY not in str(caught.value)
    assert mode(target) == 0o644 and target.read_text() == KEY + "\n"
    (ws / SECRET_FILE).unlink()
    (ws / SECRET_FILE).symlink_to(tmp_path / "missing.txt")  # a dangling one too: nothing is made through it
    with pytest.raises(ProjectError, match="is a link"):
        workspace_secret(ws)
    assert not (tmp_path / "missing.txt").exists()


def test_a_linked_revocation_list_is_refused(app, tmp_path):
    state, _ = page_load(app)
    h.save_prompt(app, state, "classes", "cat", "", 0.3, 0.25, False)
    target = tmp_path / "list.txt"
    target.write_text("")
    (app.config.workspace / session.REVOKED_FILE).symlink_to(target)
    with pytest.raises(ProjectError, match="is a link"):
        app.sessions.new_link(state)
    assert target.read_text() == "" and folders(app.config.workspace) == [state["token"]]


# ------------------------------------------------------------------------ item 12: replacing a project link

def test_a_new_link_replaces_the_old_one(app, tmp_path):
    ws = app.config.workspace
    mine, _ = page_load(app)
    h.add_uploads(app, mine, [str(photo(tmp_path / "a.png"))])
    old = mine["token"]
    elsewhere = {"token": old, "opened": None, "image_id": None}  # a browser that opened the old link
    assert app.sessions.restore(None, old)[0]["token"] == old

    state, note = app.sessions.new_link(mine)
    new = state["token"]
    assert valid_token(new) and new != old and "old link no longer" in note
    assert folders(ws) == [new] and mode(ws / new) == 0o700
    assert [r[1] for r in h.rows(app, state, "all")] == ["a.png"]  # the same project, under its new id
    assert old not in (ws / session.REVOKED_FILE).read_text()  # kept as a hash: the file is no list of links
    assert mode(ws / session.REVOKED_FILE) == 0o600

    # the old link, opened anywhere: refused with a message, this browser's own project instead
    state_b, note = app.sessions.restore(None, old)
    assert state_b["token"] not in (old, new) and "no longer works" in note and "new link" in note
    # a browser that had it open: refused, and nothing is made under the old id
    with pytest.raises(ProjectError, match="no longer works"):
        h.add_uploads(app, elsewhere, [str(photo(tmp_path / "b.png", 1))])
    with pytest.raises(ProjectError, match="no longer works"):
        h.rows(app, elsewhere, "all")
    assert folders(ws) == [new]
    # that browser reloads: a new project of its own, and why
    state_c, note = app.sessions.restore(elsewhere)
    assert state_c["token"] not in (old, new) and "no longer works" in note
    # the new link works anywhere
    state_d, note = app.sessions.restore(None, new)
    assert state_d["token"] == new and [r[1] for r in h.rows(app, state_d, "all")] == ["a.png"]
    state_e, note = app.sessions.restore(elsewhere, new)  # also where the old one was stored
    assert state_e["token"] == new and note.startswith("Opened the project from its link.") and "no longer" not in note


def test_a_new_link_made_by_another_server_process_on_the_workspace(tmp_path):
    """Two servers on one workspace (two Sessions: real files, real SQLite): one replaces the link of a project
    the other has open; the other refuses the old id from then on and opens the new one."""
    config = AppConfig(model="unused", sam="none", workspace=tmp_path / "ws")
    one, two = Sessions(config), Sessions(config)
    try:
        state = {"token": "M" * 24, "opened": None, "image_id": None}
        one.project(state).add_classes(["cat"])
        assert two.project(state).classes == ["cat"]  # open in both
        new, _ = one.new_link(state)
        with pytest.raises(ProjectError, match="no longer works"):
            two.project(state).add_classes(["dog"])
        two.project(new).add_classes(["dog"])
        assert one.project(new).classes == ["cat", "dog"] and folders(config.workspace) == [new["token"]]
    finally:
        one.close()
        two.close()


def test_a_new_link_racing_an_open_never_brings_the_old_link_back(tmp_path, monkeypatch):
    """Server two replaces the link exactly while server one opens the project by its old id (between one's
    look at the folder and its open): one refuses the old id, makes nothing under it, and the old link stays
    refused even where a folder of that name exists."""
    config = AppConfig(model="unused", sam="none", workspace=tmp_path / "ws")
    one, two = Sessions(config), Sessions(config)
    state = {"token": "R" * 24, "opened": None, "image_id": None}
    ws = config.workspace
    try:
        one.project(state).add_classes(["cat"])
        one.close()
        moved = []
        real = one._opened

        def racing(directory, **kwargs):
            if not moved:
                moved.append(two.new_link(state)[0])
            return real(directory, **kwargs)

        monkeypatch.setattr(one, "_opened", racing)
        with pytest.raises(ProjectError, match="no longer works"):
            one.project(state).add_classes(["dog"])
        assert folders(ws) == [moved[0]["token"]]
        (ws / state["token"]).mkdir(mode=0o700)  # e.g. left by a crash, or made by an older version
        assert one.restore(None, state["token"])[1].startswith("This project link no longer works")
        with pytest.raises(ProjectError, match="no longer works"):
            one.project(state)
    finally:
        one.close()
        two.close()


def test_a_new_link_is_refused_where_it_cannot_apply(tiny_hf, tmp_path):
    ws = tmp_path / "ws"
    busy = {"token": "J" * 24, "opened": None, "image_id": None}
    sessions = Sessions(AppConfig(model="unused", sam="none", workspace=ws),
                        in_use=lambda directory: directory.name == busy["token"])
    try:
        sessions.project(busy).add_classes(["cat"])
        with pytest.raises(ProjectError, match="job"):
            sessions.new_link(busy)
        assert folders(ws) == [busy["token"]]
        fresh, _ = sessions.restore(None)  # nothing stored yet: a new id, nothing to revoke
        state, _ = sessions.new_link(fresh)
        assert state["token"] != fresh["token"] and not (ws / session.REVOKED_FILE).exists()
    finally:
        sessions.close()
    shared = Sessions(AppConfig(model="unused", sam="none", workspace=ws, project=tmp_path / "shared"))
    with pytest.raises(ProjectError, match="--project"):
        shared.new_link(busy)


# ----------------------------------------------------------------------------------- in the browser

@needs_browser
def test_in_the_browser_loads_store_nothing_and_a_new_link_stops_the_old(tiny_hf, tmp_path):
    from playwright.sync_api import sync_playwright

    ws = tmp_path / "ws"
    demo, app = start(["--model", str(tiny_hf[1]), "--sam", "none", "--workspace", str(ws), "--port", str(free_port())])
    url = demo.local_url

    def visit(browser, address):
        page = browser.new_context().new_page()
        page.goto(address, wait_until="load")
        page.wait_for_function("() => document.querySelector('#project-link textarea, #project-link input')?.value",
                               timeout=60_000)  # the page load has run
        return page

    def link_of(page):
        return page.locator("#project-link textarea, #project-link input").first.input_value()

    def message(page, text):
        page.wait_for_function("t => document.querySelector('#message')?.innerText.includes(t)", arg=text,
                               timeout=30_000)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            pages = [visit(browser, url) for _ in range(2)]
            pages[0].reload(wait_until="load")
            made_up = visit(browser, f"{url}?project={'Z' * 24}")
            message(made_up, "This project link is not valid")
            assert folders(ws) == []  # three visitors, a reload, a made-up link: no folder
            assert link_of(pages[1]) == session.LINK_PENDING

            page = pages[1]
            page.locator("#uploads input[type=file]").set_input_files([str(photo(tmp_path / "a.png"))])
            page.wait_for_function("() => document.querySelector('#image-table')?.innerText.includes('a.png')",
                                   timeout=60_000)
            page.wait_for_function("() => document.querySelector('#project-link textarea, #project-link input')"
                                   "?.value.includes('?project=')", timeout=30_000)  # shown once made
            old_link = link_of(page)
            assert folders(ws) == [old_link.split("?project=")[1]]

            page.locator("#new-link-btn").click()
            message(page, "old link no longer")
            new_link = link_of(page)
            assert new_link != old_link and new_link.startswith(f"{url}?project=")
            assert folders(ws) == [new_link.split("?project=")[1]]

            opened = visit(browser, old_link)
            message(opened, "no longer works")
            opened = visit(browser, new_link)
            opened.wait_for_function("() => document.querySelector('#image-table')?.innerText.includes('a.png')",
                                     timeout=30_000)
            browser.close()
    finally:
        demo.close()
        app.sessions.close()


def test_a_refused_start_leaves_no_thread_behind(tiny_hf, tmp_path, monkeypatch):
    """A start refused for its workspace ends before anything runs beside it: a kernel build still running in a
    daemon thread when the interpreter exits aborts the process (CI saw `terminate called without an active
    exception`, exit -6 instead of 2). The build is held on an event, so a build started too early is seen."""
    from gdino.ops import compiled

    monkeypatch.syspath_prepend(str(ROOT))
    import app as app_py

    hold = threading.Event()
    monkeypatch.setattr(compiled, "kernel", lambda kind: hold.wait(60))
    ws = tmp_path / "ws"
    ws.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.txt"
    target.write_text(KEY + "\n")
    (ws / SECRET_FILE).symlink_to(target)
    try:
        code = app_py.main(["--model", str(tiny_hf[1]), "--sam", "none", "--workspace", str(ws)])
        running = [t.name for t in threading.enumerate() if t.name == "gdino-kernel-build"]
    finally:
        hold.set()
    assert code == 2 and running == []
