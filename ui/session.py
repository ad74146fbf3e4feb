"""Which project a visitor works on, and which server folders they may touch.

Without --project every browser gets its own project: a random token, kept in the browser's storage
(so a reload, and a server restart, find it again) and shown as a project link (`?project=TOKEN`) that
opens the same project in another browser. The token is the only credential: whoever has it can edit
the project. One visitor never sees another's. Server folders are reachable only under --allow-dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
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


def valid_token(token) -> bool:
    return isinstance(token, str) and _TOKEN.fullmatch(token) is not None


def workspace_secret(workspace: Path) -> str:
    """The workspace's own random key, made once and kept in `<workspace>/.secret` (mode 0600), so every
    server start, and every server process on this workspace, uses the same one.

    The file appears complete or not at all: it is written under a private name, then hard-linked to
    its final name, which fails if another process got there first; everyone then reads the winner's."""
    path = workspace / SECRET_FILE
    try:
        workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            _create_secret(workspace, path)
        deadline = time.monotonic() + 5
        while True:  # a process that created it without a hard link may still be writing it
            text = path.read_text(encoding="ascii", errors="replace").strip()
            if _SECRET.fullmatch(text) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    except OSError as err:
        raise ProjectError(f"cannot keep the session key {path}: {err.strerror or err}; pass a writable "
                           "--workspace") from err
    if not _SECRET.fullmatch(text):
        raise ProjectError(f"the session key {path} is damaged; delete it and start again (a new key is made: "
                           "visitors then reach their projects only through their project links)")
    if path.stat().st_mode & 0o077:  # readable by others: tighten it, where we own it
        with contextlib.suppress(OSError):
            path.chmod(0o600)
    return text


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


MAX_OPEN = 64  # projects kept open at once (3 file descriptors each); the least recently used close first


class Sessions:
    def __init__(self, config: AppConfig, in_use: Callable[[Path], bool] = lambda directory: False):
        # the workspace resolved once: a project's folder must be the same Path however it is reached
        # (jobs and open projects are keyed by it), e.g. through a $GDINO_WORKSPACE that is a link
        self.config = replace(config, workspace=config.workspace.expanduser().resolve())
        self._open: OrderedDict[Path, Project] = OrderedDict()
        self._lock = threading.Lock()
        self._in_use = in_use  # a project a background job works on is never closed under it

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
            elif not valid_token(link) or not (self.config.workspace / link / "project.sqlite").is_file():
                notes.append(INVALID_LINK)
            elif link != state["token"] or state["opened"]:
                before = state["token"]
                state = {"token": link, "opened": None, "image_id": None}
                note = "Opened the project from its link."
                if before != link and (self.config.workspace / before / "project.sqlite").is_file():
                    note += f" The project this browser had before is kept; its link: `{self.link(before, address)}`"
                notes.append(note)
        return state, " ".join(notes) or None

    def link(self, token: str, address: str = "") -> str:
        """The project link: the page's address with `?project=TOKEN`. Anyone who has it can edit the project."""
        return f"{address}?project={quote(token)}"

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
        return directory

    def project(self, state: dict) -> Project:
        directory = self.project_dir(state)
        with self._lock:
            if directory not in self._open:
                if (directory / "project.sqlite").exists():
                    self._open[directory] = Project.open(directory)
                else:
                    self._open[directory] = Project.create(directory, exist_ok=True)
                self._close_idle()
            self._open.move_to_end(directory)
            return self._open[directory]

    def _close_idle(self) -> None:
        """Close the least recently used projects beyond MAX_OPEN (not those a job works on): every visitor
        gets a project, and each open one holds file descriptors. A closed one opens again when used."""
        for directory in list(self._open)[: max(0, len(self._open) - MAX_OPEN)]:
            if not self._in_use(directory):
                self._open.pop(directory).close()

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
            for project in self._open.values():
                project.close()
            self._open.clear()


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
