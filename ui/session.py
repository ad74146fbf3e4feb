"""Which project a visitor works on, and which server folders they may touch.

Without --project every browser gets its own project: a random token, kept in the browser's storage
(so a reload, and a server restart, find it again) and shown as a project link (`?project=TOKEN`) that
opens the same project in another browser. The token is the only credential: whoever has it can edit
the project, so the workspace is private (0700), and a project's link can be replaced by a new one (the
old one is then refused). One visitor never sees another's. Server folders are reachable only under
--allow-dir.

A visitor's project folder is made by their first change (an upload, a class, a prompt...), never by a page
load: until then the page reads an empty project (`NewProject`). Empty projects expire (`expire_empty`).

Every workspace project is made through `Sessions._prepare` (refused under a replaced id, made private, held
by a shared flock: ui/workspace.py keeps the workspace's own files and the folders' lifetime).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from gdino.processing import ImageError
from gdino.sources import uri_within
from gdino.store import Project, ProjectError

from .app_config import AppConfig
from .workspace import (
    DB_FILE,
    EMPTY_KEEP_S,
    REVOKED_FILE,
    SECRET_FILE,
    expire,
    expire_empty,
    hold,
    is_revoked,
    make_private,
    revoke,
    valid_token,
    workspace_secret,
)

__all__ = ["DB_FILE", "EMPTY_KEEP_S", "REVOKED_FILE", "SECRET_FILE", "NewProject", "Sessions", "page_address",
           "valid_token", "workspace_secret"]

INVALID_STATE = "this page's project id is not valid; reload the page"
INVALID_LINK = ("This project link is not valid: no project on this server has that id (check that the whole link "
                "was copied). This browser's own project is shown instead.")
REVOKED_LINK = ("This project link no longer works: a new link was made for its project; ask whoever shared it for "
                "the new one. This browser's own project is shown instead.")
REVOKED_STATE = ("The project this browser had got a new link (made in another browser), and its old link no longer "
                 "works: open the new link to continue it. A new, empty project was started.")
REVOKED = "this project's link no longer works (a new link was made for it): open the new link, or reload the page"
NEW_LINK = ("Made a new project link (above): the old link no longer opens this project. Share the new one with the "
            "people who should have it.")
LINK_PENDING = "(the project link appears here once something is added: an image, a class or a prompt)"


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
        return is_revoked(self.config.workspace, token)

    def _revoke(self, token: str) -> None:
        revoke(self.config.workspace, token)

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
        only through `_prepare` (private, never under a replaced id) and held (`hold`) while open."""
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
            fd = hold(directory, fcntl.LOCK_SH)
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
            away = expire(self.config.workspace, skip=self._in_use)
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
