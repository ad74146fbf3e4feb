"""Which project a visitor works on, and which server folders they may touch.

Without --project every browser gets its own project (a random token kept in the browser's storage,
so a reload finds it again); one visitor never sees another's. Server folders are reachable only
under --allow-dir.
"""

from __future__ import annotations

import re
import secrets
import threading
from pathlib import Path

from gdino.project import Project, ProjectError

from .config import AppConfig

_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


class Sessions:
    def __init__(self, config: AppConfig):
        self.config = config
        self._open: dict[Path, Project] = {}
        self._lock = threading.Lock()

    @staticmethod
    def new_state() -> dict:
        return {"token": secrets.token_urlsafe(18), "opened": None, "image_id": None}

    def project_dir(self, state: dict) -> Path:
        if self.config.project is not None:
            return self.config.project
        if state.get("opened"):
            return self.allowed(state["opened"])
        token = state.get("token") or ""
        if not _TOKEN.fullmatch(token):
            raise ProjectError("this browser session has no valid project id; reload the page")
        return self.config.workspace / token

    def project(self, state: dict) -> Project:
        directory = self.project_dir(state)
        with self._lock:
            if directory not in self._open:
                if (directory / "project.sqlite").exists():
                    self._open[directory] = Project.open(directory)
                else:
                    self._open[directory] = Project.create(directory, exist_ok=True)
            return self._open[directory]

    def open_projects(self) -> list[Project]:
        with self._lock:
            return list(self._open.values())

    def allowed(self, path: str | Path) -> Path:
        """`path` resolved, if it lies under an --allow-dir folder; else a clear refusal."""
        if not self.config.allow_dirs:
            raise ProjectError("this server does not let visitors open server folders; upload images instead "
                               "(the server owner can allow folders with --allow-dir DIR)")
        resolved = Path(path).expanduser().resolve()
        if not any(resolved == d or d in resolved.parents for d in self.config.allow_dirs):
            allowed = ", ".join(str(d) for d in self.config.allow_dirs)
            raise ProjectError(f"{path} is outside the folders this server allows ({allowed})")
        return resolved

    def close(self) -> None:
        with self._lock:
            for project in self._open.values():
                project.close()
            self._open.clear()
