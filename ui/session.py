"""Which project a visitor works on, and which server folders they may touch.

Without --project every browser gets its own project: a random token, kept in the browser's storage
(so a reload, and a server restart, find it again) and shown as a project link (`?project=TOKEN`) that
opens the same project in another browser. The token is the only credential: whoever has it can edit
the project, so the workspace is private (0700), and a project's link can be replaced by a new one (the
old one is then refused). One visitor never sees another's. Server folders are reachable only under
--allow-dir.

A visitor's project folder is made by their first change (an upload, a class, a prompt...), never by a page
load: until then the page reads an empty project (`NewProject`). Empty projects expire (`expire_empty`).

Several server processes may share a workspace. Each holds a shared flock on the folder of every workspace
project it has open (`_hold`: taken before opening, then checked that the path still names the locked folder);
the expiry sweep takes an exclusive one without waiting, and skips a project it cannot get, so it never deletes
a project that a process still writes to. Every workspace project is made through `Sessions._prepare` (refused
under a replaced id, made private).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from gdino.processing import ImageError
from gdino.project import Project, ProjectError
from gdino.sources import uri_within

from .config import AppConfig

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
SECRET_FILE = ".secret"  # in the workspace; a name no token can take (tokens have no dots)
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
INVALID_STATE = "this page's project id is not valid; reload the page"
INVALID_LINK = ("This project link is not valid: no project on this server has that id (check that the whole link "
                "was copied). This browser's own project is shown instead.")
REVOKED_FILE = ".revoked"  # in the workspace: the sha256 of each project id whose link was replaced, one a line
REVOKED_LINK = ("This project link no longer works: a new link was made for its project; ask whoever shared it for "
                "the new one. This browser's own project is shown instead.")
REVOKED_STATE = ("The project this browser had got a new link (made in another browser), and its old link no longer "
                 "works: open the new link to continue it. A new, empty project was started.")
REVOKED = "this project's link no longer works (a new link was made for it): open the new link, or reload the page"
NEW_LINK = ("Made a new project link (above): the old link no longer opens this project. Share the new one with the "
            "people who should have it.")
DB_FILE = "project.sqlite"
LINK_PENDING = "(the project link appears here once something is added: an image, a class or a prompt)"
EMPTY_KEEP_S = 7 * 86400  # an empty workspace project (no images, no classes) unchanged this long is deleted
ADDING = ".adding-"  # gdino/project.py's names for an add's copy in progress (left by an interrupted add)


def valid_token(token) -> bool:
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def workspace_secret(workspace: Path) -> str:
    """The workspace's own random key, made once and kept in `<workspace>/.secret` (mode 0600), so every
    server start, and every server process on this workspace, uses the same one.

    The file appears complete or not at all: it is written under a private name, then hard-linked to
    its final name, which fails if another process got there first; everyone then reads the winner's.
    A link in its place is refused, never followed (its target would be read and made 0600)."""
    path = workspace / SECRET_FILE
    try:
        workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.path.lexists(path):
            _create_secret(workspace, path)
        deadline = time.monotonic() + 5
        while True:  # a process that created it without a hard link may still be writing it
            text = _read_private(path, 4096).decode("ascii", errors="replace").strip()
            if _SECRET.fullmatch(text) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    except OSError as err:
        raise ProjectError(f"cannot keep the session key {path}: {err.strerror or err}; pass a writable "
                           "--workspace") from err
    if not _SECRET.fullmatch(text):
        raise ProjectError(f"the session key {path} is damaged; delete it and start again (a new key is made: "
                           "visitors then reach their projects only through their project links)")
    return text


def _read_private(path: Path, limit: int) -> bytes:
    """Up to `limit` bytes of one of the workspace's own files, never through a link (ProjectError), made
    0600 if others could read it."""
    fd = _open_own(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ProjectError(f"{_what(path)} {path} is not a file; delete it, or pass another --workspace")
        if info.st_mode & 0o077:
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o600)
        data = b""
        while len(data) < limit and (chunk := os.read(fd, limit - len(data))):
            data += chunk
        return data
    finally:
        os.close(fd)


def _open_own(path: Path, flags: int) -> int:
    """os.open of one of the workspace's own files (made 0600), refusing a link in its place."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ProjectError(f"{_what(path)} {path} is a link; the workspace keeps its own files, never links: "
                               "delete the link, or pass another --workspace") from None
        raise


def _what(path: Path) -> str:
    return "the session key" if path.name == SECRET_FILE else "the list of replaced project links"


def _create_secret(workspace: Path, path: Path) -> None:
    key = secrets.token_urlsafe(32).encode() + b"\n"
    tmp = workspace / f".secret-{secrets.token_hex(8)}"
    _write_new(tmp, key)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # no hard links here: an exclusive create; readers wait for the content
        with contextlib.suppress(FileExistsError):
            _write_new(path, key)
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private(workspace: Path) -> list[str]:
    """Tighten an existing workspace that other local users can read (earlier versions left it 0755, its
    project folders 0755 and databases 0644; the folder names are the project links): the workspace 0700,
    and each loose project folder with all it holds, folders 0700, files 0600 (links are not followed). A
    project folder that is already private is the barrier and is not walked. Returns a line for the log
    (none when nothing was loose); ProjectError saying what to run when it cannot be done."""
    try:
        if not workspace.is_dir() or workspace.is_symlink():
            return []
        changed = _tighten(workspace, 0o700)
        for entry in os.scandir(workspace):
            if entry.is_symlink():
                continue
            if entry.is_file() and entry.name.startswith("."):  # the key, the list of replaced links
                changed += _tighten(Path(entry.path), 0o600)
            elif entry.is_dir() and valid_token(entry.name) and entry.stat().st_mode & 0o077:
                changed += _tighten_tree(Path(entry.path))
    except OSError as err:
        raise ProjectError(f"the workspace {workspace} can be read by other users of this machine (its folder names "
                           f"are the project links), and it cannot be made private ({err.strerror or err}): run "
                           f"`chmod -R go= {workspace}` as its owner, or pass another --workspace") from err
    if not changed:
        return []
    return [f"made the workspace {workspace} private: {changed} of its folders and files could be read by other "
            "users of this machine (project ids are the project links)"]


def _tighten(path: Path, mode: int) -> int:
    if stat.S_IMODE(path.lstat().st_mode) & 0o077:
        path.chmod(mode)
        return 1
    return 0


def _tighten_tree(folder: Path) -> int:
    changed = _tighten(folder, 0o700)
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            if not path.is_symlink():
                changed += _tighten(path, 0o700 if path.is_dir() else 0o600)
    return changed


def expire_empty(workspace: Path, skip: Callable[[Path], bool] = lambda directory: False) -> int:
    """Delete the workspace projects that hold nothing (no images, no classes: a saved prompt or model choice
    alone does not count) and have not changed for EMPTY_KEEP_S (earlier versions made one per page load).
    `skip`: those a job works on here. Returns how many."""
    away = _expire(workspace, skip)
    for directory in away:
        shutil.rmtree(directory, ignore_errors=True)
    return sum(not p.name.startswith(".expired-old-") for p in away)


def _expire(workspace: Path, skip: Callable[[Path], bool]) -> list[Path]:
    """Rename the expired empty projects away (atomic: another process sees one whole or not at all); returns
    the folders to delete (with those an interrupted sweep left). A project open in any server process (its
    shared flock, see `_hold`) is skipped; the exclusive flock is held across the check and the rename."""
    away = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(workspace):
            directory = Path(entry.path)
            if entry.name.startswith(".expired-") and entry.is_dir(follow_symlinks=False):  # an interrupted sweep
                old = workspace / f".expired-old-{secrets.token_hex(8)}"
                with contextlib.suppress(OSError):
                    directory.rename(old)
                    away.append(old)
            elif (valid_token(entry.name) and entry.is_dir(follow_symlinks=False) and not skip(directory)
                  and _last_change(directory) < time.time() - EMPTY_KEEP_S):
                fd = _hold(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if fd is None:  # open in a server process, or gone
                    continue
                try:
                    if _holds_nothing(directory):
                        target = workspace / f".expired-{secrets.token_hex(8)}"
                        directory.rename(target)
                        away.append(target)
                except OSError:
                    continue
                finally:
                    os.close(fd)
    return away


def _hold(directory: Path, how: int) -> int | None:
    """A descriptor of `directory` holding flock `how` on it, or None when it cannot be had now (LOCK_NB) or
    the path no longer names the folder that was locked (renamed away meanwhile: a new link, expired)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, how)
        here, held = os.stat(directory, follow_symlinks=False), os.fstat(fd)
        if (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _last_change(directory: Path) -> float:
    paths = [directory, directory / "images", *(directory / (DB_FILE + s) for s in ("", "-wal"))]
    return max((p.lstat().st_mtime for p in paths if os.path.lexists(p)), default=0.0)


def _holds_nothing(directory: Path) -> bool:
    """Only a database without images and classes, and an images/ folder with no file but the store's
    leftovers of interrupted adds. Anything else (no database), or a database that cannot be read: kept."""
    try:
        names = {p.name for p in directory.iterdir()}
        if DB_FILE not in names or not names <= {DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", "images"}:
            return False
        images = directory / "images"
        if "images" in names and (images.is_symlink() or any(not p.name.startswith(ADDING) for p in images.iterdir())):
            return False
        db = sqlite3.connect(f"{(directory / DB_FILE).as_uri()}?mode=ro", uri=True)
        try:
            return db.execute("SELECT NOT EXISTS (SELECT 1 FROM images) AND NOT EXISTS (SELECT 1 FROM classes)"
                              ).fetchone()[0] == 1
        finally:
            db.close()
    except (OSError, sqlite3.Error):
        return False


def _revoked_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def page_address(referer: str | None, origin: str | None = None) -> str:
    """The page's address without query or fragment (where a project link points), from the request
    that the page sent; '' when the browser sent neither header (the link is then relative)."""
    for candidate, keep_path in ((referer, True), (origin, False)):
        if not candidate:
            continue
        parts = urlsplit(candidate)
        if parts.scheme in ("http", "https") and parts.netloc:
            return urlunsplit((parts.scheme, parts.netloc, (parts.path or "/") if keep_path else "/", "", ""))
    return ""


MAX_OPEN = 64  # projects kept open at once (4 file descriptors each); the least recently used close first


class Sessions:
    def __init__(self, config: AppConfig, in_use: Callable[[Path], bool] = lambda directory: False):
        # the workspace resolved once: a project's folder must be the same Path however it is reached
        # (jobs and open projects are keyed by it), e.g. through a $GDINO_WORKSPACE that is a link
        self.config = replace(config, workspace=config.workspace.expanduser().resolve())
        self._open: OrderedDict[Path, Project] = OrderedDict()
        self._held: dict[Path, int] = {}  # a workspace project's folder -> its descriptor holding a shared flock
        self._lock = threading.RLock()
        self._in_use = in_use  # a project a background job works on is never closed under it
        self._empty: Project | None = None  # what a NewProject reads (see `_empty_project`)
        # at start: an old, loose workspace made private, its expired empty projects deleted; lines for the log
        self.notes = make_private(self.config.workspace)
        if expired := expire_empty(self.config.workspace):
            self.notes.append(f"deleted {expired} empty project(s) of the workspace, unchanged for "
                              f"{EMPTY_KEEP_S // 86400} days")
        self._next_sweep = time.monotonic() + 86400  # then at most once a day, when a project is made

    @staticmethod
    def new_state() -> dict:
        return {"token": secrets.token_urlsafe(18), "opened": None, "image_id": None}

    def browser_secret(self) -> str:
        """The key the page's stored state (gr.BrowserState) is encrypted with. Gradio sends it to every
        page (/config), so it is derived from the workspace key, never the key itself."""
        key = workspace_secret(self.config.workspace)
        return hmac.new(key.encode(), b"gdino browser state", hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------------- the page's state

    def check_state(self, state) -> dict:
        """The session state a page sent (a browser can send anything), checked: a well-formed token, an
        opened folder that is a string, an image id that is an int. Raises ProjectError (reload the page)."""
        if not isinstance(state, dict) or not valid_token(state.get("token")):
            raise ProjectError(INVALID_STATE)
        opened = state.get("opened")
        if opened is not None and not isinstance(opened, str):
            raise ProjectError(INVALID_STATE)
        image_id = state.get("image_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            image_id = None
        checked = {**state, "opened": opened or None, "image_id": image_id}
        if not _valid_clicks(state.get("clicks", {})):
            checked.pop("clicks")
        return checked

    def restore(self, stored, link: str | None = None, address: str = "") -> tuple[dict, str | None]:
        """The page load: (this browser's state, a note for the page or None), from what the browser
        stored (None the first time) and the `?project=` link it was opened with, if any."""
        notes = []
        if stored is None:
            state = self.new_state()
        else:
            try:
                state = self.check_state(stored)
            except ProjectError:
                state = self.new_state()
                notes.append("The project id stored in this browser was not valid, so a new, empty project was "
                             "started. To continue an earlier project, open its project link.")
        if not state["opened"] and self._revoked(state["token"]):
            state = self.new_state()
            if not (link is not None and self._has_project(link)):  # unless the page opens the new link now
                notes.append(REVOKED_STATE)
        if state["opened"]:
            try:
                self.allowed(state["opened"])
            except ProjectError as err:
                notes.append(f"The server folder opened before cannot be opened now ({err}); this browser's own "
                             "project is shown.")
                state = {**state, "opened": None, "image_id": None}
        if link is not None:
            if self.config.project is not None:
                notes.append("This server serves one shared project (--project); project links are not used here.")
            elif not self._has_project(link):
                notes.append(REVOKED_LINK if valid_token(link) and self._revoked(link) else INVALID_LINK)
            elif link != state["token"] or state["opened"]:
                before = state["token"]
                state = {"token": link, "opened": None, "image_id": None}
                note = "Opened the project from its link."
                if before != link and (self.config.workspace / before / DB_FILE).is_file():
                    note += f" The project this browser had before is kept; its link: {self.link(before, address)}"
                notes.append(note)
        return state, " ".join(notes) or None

    def _has_project(self, token) -> bool:
        return valid_token(token) and (self.config.workspace / token / DB_FILE).is_file() and not self._revoked(token)

    def shown_link(self, state: dict, address: str = "") -> str:
        """What the page's link field shows: the project link once the project exists, else why there is none
        yet (a link to nothing would open a different, new project elsewhere)."""
        return self.link(state["token"], address) if self._has_project(state["token"]) else LINK_PENDING

    def link(self, token: str, address: str = "") -> str:
        """The project link: the page's address with `?project=TOKEN`. Anyone who has it can edit the project."""
        return f"{address}?project={quote(token)}"

    def new_link(self, state: dict) -> tuple[dict, str]:
        """(this browser's state with a new project id, a note for the page): the project moves to a new
        link, and the old link is refused from now on, with a message (its id is kept, hashed, in the
        workspace's .revoked: a browser still holding it is told why, and nothing is made under it again)."""
        if self.config.project is not None:
            raise ProjectError("this server serves one shared project (--project); it has no project link to replace")
        state = self.check_state(state)
        if state["opened"]:
            raise ProjectError("a server folder opened as the project has no project link of its own")
        old = self.project_dir(state)
        new_state = {**state, "token": self.new_state()["token"]}
        with self._lock:
            if not (old / DB_FILE).is_file():  # nothing stored yet: the old link opens nothing anyway
                return new_state, NEW_LINK
            if self._in_use(old):
                raise ProjectError("a job (auto-label or training) is running on this project: wait until it ends, "
                                   "or cancel it, then make the new link")
            if old in self._open:
                self._close(old)
            # refused first, then moved: a crash in between leaves the old link refused (the project stays in its
            # folder, reachable by no link); the other order would leave it working
            self._revoke(old.name)
            try:
                old.rename(self.config.workspace / new_state["token"])
            except OSError as err:
                raise ProjectError(f"could not move the project to its new link ({err.strerror or err}); its old link "
                                   "no longer works: ask the server's owner to move its folder") from err
        return new_state, NEW_LINK

    def _revoked(self, token: str) -> bool:
        """Whether `token`'s link was replaced (whatever its folder holds now)."""
        path = self.config.workspace / REVOKED_FILE
        try:
            listed = _read_private(path, 2**26).decode("ascii", errors="replace").split()
        except FileNotFoundError:
            return False
        return _revoked_key(token) in listed

    def _revoke(self, token: str) -> None:
        fd = _open_own(self.config.workspace / REVOKED_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{_revoked_key(token)}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    # ----------------------------------------------------------------------------- projects

    def project_dir(self, state: dict) -> Path:
        if self.config.project is not None:
            return self.config.project
        if not isinstance(state, dict):
            raise ProjectError("this browser session has no valid project id; reload the page")
        if state.get("opened"):
            return self.allowed(state["opened"])
        token = state.get("token")
        if not valid_token(token):
            raise ProjectError("this browser session has no valid project id; reload the page")
        directory = self.config.workspace / token
        if directory.is_symlink():  # the workspace holds project folders, never links out of it
            raise ProjectError("this browser session has no valid project id; reload the page")
        if self._revoked(token):
            raise ProjectError(REVOKED)
        return directory

    def project(self, state: dict) -> Project | NewProject:
        """The visitor's project. One in the workspace that does not exist yet is a NewProject: a page load
        reads it as empty, and its first change makes it (a server folder or --project is made at once)."""
        directory = self.project_dir(state)
        if self.config.project is not None or state.get("opened"):
            return self._opened(directory)
        self._sweep()
        with self._lock:  # moved or deleted by another server process on this workspace (a new link, expired)
            if directory in self._open and not (directory / DB_FILE).exists() and not self._in_use(directory):
                self._close(directory)
            if directory not in self._open and not (directory / DB_FILE).exists():
                return NewProject(self, directory)
            return self._opened(directory, visitor=True)

    def _opened(self, directory: Path, *, visitor: bool = False) -> Project:
        """The open project in `directory`, opened or made now. visitor: a workspace project, opened and made
        only through `_prepare` (private, never under a replaced id) and held (`_hold`) while open."""
        with self._lock:
            if directory not in self._open:
                if visitor:
                    self._held[directory] = self._prepare(directory)
                try:
                    if (directory / DB_FILE).exists():
                        self._open[directory] = Project.open(directory)
                    else:
                        self._open[directory] = Project.create(directory, exist_ok=True)
                except BaseException:
                    if directory in self._held:
                        os.close(self._held.pop(directory))
                    raise
                self._close_idle()
            self._open.move_to_end(directory)
            return self._open[directory]

    def _prepare(self, directory: Path) -> int:
        """Before a visitor's project is opened or made (under the lock): refused under a replaced id, its folder
        made (private), and a shared flock taken on it so that no expiry sweep deletes it while it is open here;
        the descriptor holding it. A folder swept away between its making and the lock is made again."""
        for _ in range(3):
            if self._revoked(directory.name):
                raise ProjectError(REVOKED)
            try:
                self.config.workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
                directory.mkdir(mode=0o700, exist_ok=True)
            except OSError as err:
                raise ProjectError(f"cannot make the project on the server ({err.strerror or err})") from err
            fd = _hold(directory, fcntl.LOCK_SH)
            if fd is not None:
                if not self._revoked(directory.name):  # a new link made meanwhile: refused, as above
                    return fd
                os.close(fd)
        raise ProjectError("the project was moved or deleted while it was being opened; try again")

    def _sweep(self) -> None:
        """At most once a day: the expired empty projects renamed away under the lock, deleted outside it."""
        with self._lock:
            if time.monotonic() < self._next_sweep:
                return
            self._next_sweep = time.monotonic() + 86400
            away = _expire(self.config.workspace, skip=self._in_use)
        for directory in away:
            shutil.rmtree(directory, ignore_errors=True)

    def _close(self, directory: Path) -> None:
        """Close an open project and let go of its folder (under the lock)."""
        self._open.pop(directory).close()
        if directory in self._held:
            os.close(self._held.pop(directory))

    def _empty_project(self) -> Project:
        """An empty project of this server's, refusing every change: what a NewProject reads."""
        with self._lock:
            if self._empty is None:
                self._empty = Project.create(tempfile.mkdtemp(prefix="gdino-empty-"))
                self._empty.read_only = True
            return self._empty

    def _close_idle(self) -> None:
        """Close the least recently used projects beyond MAX_OPEN (not those a job works on): every visitor
        gets a project, and each open one holds file descriptors. A closed one opens again when used."""
        for directory in list(self._open)[: max(0, len(self._open) - MAX_OPEN)]:
            if not self._in_use(directory):
                self._close(directory)

    def open_projects(self) -> list[Project]:
        with self._lock:
            return list(self._open.values())

    # -------------------------------------------------------------------------- server folders

    def allowed(self, path: str | Path) -> Path:
        """`path` resolved (links followed), if it lies under an --allow-dir folder; else a clear refusal.
        A link inside an allowed folder that points out of every allowed folder is refused."""
        if not self.config.allow_dirs:
            raise ProjectError("this server does not let visitors open server folders; upload images instead "
                               "(the server owner can allow folders with --allow-dir DIR)")
        resolved = Path(path).expanduser().resolve()
        if not self.inside_allowed(resolved):
            allowed = ", ".join(str(d) for d in self.config.allow_dirs)
            raise ProjectError(f"{path} is outside the folders this server allows ({allowed})")
        return resolved

    def image_path(self, project: Project, record) -> Path | str:
        """The file to read for an image of `project`, checked at the moment of reading: a file may have been
        swapped for a link since it was added. A copy in the project's images/ must not be a link; an image
        referenced in a server folder must still resolve inside an --allow-dir folder; an object-store image
        (its URI is returned, `gdino.sources.read_image` reads it) must lie under an --allow-uri prefix, with
        the same endpoint. Else an ImageError (the page shows the image as unreadable, a run lists it as
        failed)."""
        if record.uri is not None:
            if not any(uri_within(record.uri, prefix) for prefix in self.config.allow_uris):
                raise ImageError(f"{record.name}: it is in an object store this server does not read from (the "
                                 "server owner can allow it with --allow-uri)")
            return record.uri
        path = Path(record.path)
        if path.parent == project.path / "images":
            if path.is_symlink():
                raise ImageError(f"{record.name}: its file in the project was replaced by a link; remove the image")
            return path
        resolved = path.resolve()
        if not self.inside_allowed(resolved):
            raise ImageError(f"{record.name}: its file now leads outside the folders this server may read; "
                             "remove the image")
        return resolved

    def inside_allowed(self, resolved: Path) -> bool:
        roots = [d.resolve() for d in self.config.allow_dirs]
        return any(resolved == d or d in resolved.parents for d in roots)

    def allowed_files(self, folder: Path, suffixes) -> tuple[list[Path], list[str]]:
        """(the files under `folder` with one of `suffixes`, resolved and each inside an allowed folder,
        sorted; the names of those refused because they are links leading out of the allowed folders).
        Linked folders are not entered."""
        found, refused = set(), []
        for root, dirs, files in os.walk(folder, followlinks=False):
            dirs.sort()
            here = Path(root)
            for name in dirs:
                if (here / name).is_symlink() and not self.inside_allowed((here / name).resolve()):
                    refused.append(f"{(here / name).relative_to(folder)}/")
            for name in sorted(files):
                if Path(name).suffix.lower() not in suffixes:
                    continue
                resolved = (here / name).resolve()
                if not self.inside_allowed(resolved):
                    refused.append(str((here / name).relative_to(folder)))
                elif resolved.is_file():
                    found.add(resolved)
        return sorted(found), refused

    def close(self) -> None:
        with self._lock:
            for directory in list(self._open):
                self._close(directory)
            if self._empty is not None:
                self._empty.close()
                shutil.rmtree(self._empty.path, ignore_errors=True)
                self._empty = None


# what reading an empty project calls; anything else is a change (or may be) and makes the project
_READS = frozenset({"classes", "phrases", "images", "has_image", "image", "find_image", "image_by_key", "objects",
                    "view", "held", "history", "last_run", "setting", "stats", "schema_version"})


class NewProject:
    """A visitor's project before anything is stored in it: reads answer as an empty project, without making
    a folder (a page load used to make one, 89 KB each); anything else (a change) makes the project, and
    goes to it, as does everything once it exists."""

    read_only = False  # it is made on the first change

    def __init__(self, sessions: Sessions, directory: Path):
        self.path = directory
        self._sessions = sessions

    def __getattr__(self, name: str):
        if name in _READS and not (self.path / DB_FILE).exists():
            return getattr(self._sessions._empty_project(), name)
        return getattr(self._sessions._opened(self.path, visitor=True), name)


def _valid_clicks(clicks) -> bool:
    """SAM clicks per object as the page keeps them: {"object id": [[x, y, 0 or 1], ...]}."""
    if not isinstance(clicks, dict):
        return False
    for key, points in clicks.items():
        if not isinstance(key, str) or not isinstance(points, list):
            return False
        for p in points:
            if (not isinstance(p, list) or len(p) != 3 or p[2] not in (0, 1)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)):
                return False
    return True
