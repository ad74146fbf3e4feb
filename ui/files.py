"""Which files gradio may serve by path: the example photos (`EXAMPLES`), nothing else.

Gradio answers `/gradio_api/file=PATH` (and `/gradio_api/file/PATH`) for any file under its
`allowed_paths`, to anyone, without a session. So no visitor folder goes there: not the workspace
(every visitor's project.sqlite and images), not an --allow-dir folder, not a --project folder. They
are also `blocked_paths`, which gradio checks before anything else (its upload and cache folders too).

Images still reach the page: the canvas' value names files written for the session (its picture and mask
overlay, ui/canvas_view.py, under the system's temporary folder, which gradio does not serve by path), and
gradio copies them into its own folder under a name made from a keyed hash of the content (sha256 of
gradio's random hash seed and the bytes). That URL is sent only to the session whose handler made it, and
cannot be derived from a path or a file name. Every read of an image checks its file at that moment
(ui.session.Sessions.image_path): a link swapped in later is not followed out of the allowed folders.
"""

from __future__ import annotations

from pathlib import Path

from gradio import utils as gradio_utils

from .app_config import AppConfig

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# the app's example photos, each with the classes its example fills in (those shipped in assets/)
EXAMPLES = [(ASSETS / name, classes) for name, classes in
            (("cat.png", "cat, remote control"), ("coffee.png", "cup, saucer, spoon"), ("astronaut.png", "person, flag"))
            if (ASSETS / name).is_file()]


def served_paths(config: AppConfig) -> dict[str, list[str]]:
    """The `allowed_paths` and `blocked_paths` for gradio's launch.

    A private folder that holds gradio's own upload or cache folder (say `--allow-dir /tmp`) is not
    blocked, or no upload and no picture could pass; it is not allowed either, so gradio still serves
    only what it wrote itself there."""
    private = [config.workspace, *config.allow_dirs, *([config.project] if config.project is not None else [])]
    gradios = [Path(gradio_utils.get_upload_folder()).resolve(), gradio_utils.get_cache_folder().resolve()]
    blocked = [Path(p).resolve() for p in private]
    blocked = [p for p in blocked if not any(g == p or p in g.parents for g in gradios)]
    return {"allowed_paths": [str(ASSETS)] if ASSETS.is_dir() else [], "blocked_paths": [str(p) for p in blocked]}
