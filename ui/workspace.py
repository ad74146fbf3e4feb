"""The workspace's own files, and the lifetime of the project folders in it: the session key (`.secret`), the
list of replaced project links (`.revoked`), the private modes, and the expiry of empty projects.

Several server processes may share a workspace. Each holds a shared flock on the folder of every workspace
project it has open (`hold`: taken before opening, then checked that the path still names the locked folder);
the expiry sweep takes an exclusive one without waiting, and skips a project it cannot get, so it never deletes
a project that a process still writes to. Which visitor has which project is ui/session.py's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

from gdino.store import ProjectError

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
SECRET_FILE = ".secret"  # in the workspace; a name no token can take (tokens have no dots)
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
REVOKED_FILE = ".revoked"  # in the workspace: the sha256 of each project id whose link was replaced, one a line
DB_FILE = "project.sqlite"
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
    away = expire(workspace, skip)
    for directory in away:
        shutil.rmtree(directory, ignore_errors=True)
    return sum(not p.name.startswith(".expired-old-") for p in away)


def expire(workspace: Path, skip: Callable[[Path], bool]) -> list[Path]:
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
                fd = hold(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
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


def hold(directory: Path, how: int) -> int | None:
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
    leftovers of interrupted adds, and SAM embeddings (.cache: recomputed at will). Anything else (no database, a
    linked .cache), or a database that cannot be read: kept."""
    try:
        names = {p.name for p in directory.iterdir()}
        if DB_FILE not in names or not names <= {DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", "images", ".cache"}:
            return False
        if ".cache" in names and (directory / ".cache").is_symlink():
            return False  # a link there leads outside the project: not ours to delete behind
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


def is_revoked(workspace: Path, token: str) -> bool:
    """Whether `token`'s link was replaced (whatever its folder holds now)."""
    path = workspace / REVOKED_FILE
    try:
        listed = _read_private(path, 2**26).decode("ascii", errors="replace").split()
    except FileNotFoundError:
        return False
    return _revoked_key(token) in listed


def revoke(workspace: Path, token: str) -> None:
    """Refuse `token`'s link from now on (its sha256 appended to the workspace's .revoked, flushed)."""
    fd = _open_own(workspace / REVOKED_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{_revoked_key(token)}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
