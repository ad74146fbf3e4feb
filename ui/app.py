"""The App: what the server holds for every page (its command line, the models, the visitors' sessions, the
background jobs, the canvas' files, each window's state and edit order), made once by `make_app`. The page's
actions (ui/actions/) are plain functions of an App; the layout (ui/layout.py) wires them to components."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .app_config import AppConfig
from .canvas_view import CanvasFiles
from .edit_order import EditOrder
from .jobs import Jobs, Prefetch
from .models import ModelHub
from .session import Sessions
from .window_state import WindowStates

USER_ERRORS = (ValueError, OSError)  # PromptError, ImageError, ProjectError, WeightsError are ValueErrors


@dataclass
class App:
    config: AppConfig
    hub: ModelHub
    sessions: Sessions
    jobs: Jobs
    canvas_files: CanvasFiles
    prefetch: Prefetch  # the next image's SAM embedding, computed while a person works on the current one
    windows: WindowStates = dataclasses.field(default_factory=WindowStates)  # what each window's own canvas edits made
    order: EditOrder = dataclasses.field(default_factory=EditOrder)  # each window's canvas edits, in its order


def make_app(config: AppConfig) -> App:
    jobs = Jobs()
    sessions = Sessions(config, in_use=jobs.busy)
    return App(sessions.config, ModelHub(sessions.config), sessions, jobs, CanvasFiles(),
               Prefetch(busy=jobs.running_any))


def page_words(app: App, state: dict | None, text: object) -> str:
    """A message for the page without server paths: an image in the project is called by its name, the
    project folder "the project", the workspace "the server"."""
    text = str(text)
    try:
        directory = app.sessions.project_dir(state) if state is not None else None
    except USER_ERRORS:
        directory = None
    if directory is not None:
        text = re.sub(re.escape(str(directory / "images")) + r"/([^'\s]+)", r"\1", text)
        text = text.replace(f"the project {directory}", "the project").replace(str(directory), "the project")
    return text.replace(str(app.config.workspace), "the server")
