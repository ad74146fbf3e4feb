"""The labeling app: `build_app(config)` makes the page, `launch(demo, config)` serves it.
Nothing runs on import."""

from __future__ import annotations

import inspect

from .app import App, make_app
from .app_config import AppConfig, parse_args
from .files import served_paths
from .layout import build
from .page_assets import HEAD


def build_app(config: AppConfig):
    """(gradio Blocks, App): the page and the state behind it (models, sessions)."""
    app = make_app(config)
    config.workspace.mkdir(parents=True, exist_ok=True, mode=0o700)  # visitors' projects: not for other local users
    demo = build(app)
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo, app


def launch(demo, config: AppConfig, **kwargs):
    """Serve the page. Gradio serves by path only the example photos (ui/files.py): never the workspace,
    an --allow-dir folder or the --project folder. Gradio's run history is off: it copies every call's inputs and
    outputs (canvas values: the labels) into the browser's localStorage, rewriting up to 100 of them at each edit."""
    if "run_history" in inspect.signature(demo.launch).parameters:  # an older gradio has none to turn off
        kwargs.setdefault("run_history", False)
    # gradio itself refuses a larger file while it is being uploaded (HTTP 413), before storing it
    return demo.launch(server_name=config.host, server_port=config.port, share=config.share, head=HEAD,
                       max_file_size=f"{config.max_upload_mb}mb", **served_paths(config), **kwargs)


__all__ = ["App", "AppConfig", "build_app", "launch", "parse_args"]
