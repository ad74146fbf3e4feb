"""Which detector a project uses: the server's models (--model, --models) and the project's own fine-tuned ones
(their folder layout is gdino.train.workdir's), as the page's menu names them; and which SAM (--sam, --sams), by
its public key (ui/models.py: ModelHub.sam_keys), with the project's embedding store."""

from __future__ import annotations

from gdino.sam.store import project_store
from gdino.store import ProjectError
from gdino.train import workdir
from gdino.weights.checkpoints import describe as describe_model

from ..app import App
from ..models import sam_words


def trained_models(project) -> list[str]:
    """The project's own fine-tuned models, "models/NAME" newest first (gdino.train.workdir.trained_models)."""
    return workdir.trained_models(project.path)


def offered_models(app: App, state: dict) -> tuple[str, ...]:
    """What the visitor's project may use: the server's models, then the project's own fine-tuned ones."""
    return tuple(dict.fromkeys((*app.config.offered_models(), *trained_models(app.sessions.project(state)))))


def model_line(app: App, state: dict | None, model: str) -> str:
    """The menu's line for a model: the checkpoint's description, or a project's run with its held-out mAP."""
    if state is not None and workdir.is_run(model) and model not in app.config.offered_models():
        name = model.split("/", 1)[1]
        try:
            record = workdir.run_card(app.sessions.project(state).path, model)
            v = record["validation"]
            numbers = (f", held-out mAP@0.5 {v['base']['map50']:.3f} -> {v['fine_tuned']['map50']:.3f}"
                       if (v.get("base") or {}).get("map50") is not None
                       and (v.get("fine_tuned") or {}).get("map50") is not None else "")
            return f"fine-tuned here: {name} ({len(record['train_images'])} images{numbers})"
        except (OSError, ValueError, KeyError, TypeError):
            return f"fine-tuned here: {name}"
    return describe_model(model) + (" [server default]" if model == app.config.model else "")


def model_choices(app: App, state: dict | None = None) -> list[tuple[str, str]]:
    """(menu line, model) for every model the project may use, the server's default first. A fine-tuned model
    is named relative to the project (no server path reaches the page)."""
    models = offered_models(app, state) if state is not None else app.config.offered_models()
    return [(model_line(app, state, m), m) for m in models]


def project_model(app: App, state: dict) -> str:
    """The model the visitor's project chose, if it may still use it; else the server's default."""
    chosen = app.sessions.project(state).setting("model")
    return chosen if isinstance(chosen, str) and chosen in offered_models(app, state) else app.config.model


def choose_model(app: App, state: dict, model: str | None) -> str:
    """The project's detector from now on. Labels already made stay as they are; the next Detect or
    auto-label run uses this model (a running one finishes with the model it started with)."""
    if not isinstance(model, str) or model not in offered_models(app, state):
        raise ProjectError("that model is not offered by this server; choose one from the list")
    project = app.sessions.project(state)
    if model != project_model(app, state):  # (the menu may send one choice twice: the same answer both times)
        project.set_setting("model", model)
    return (f"the project now uses {model_line(app, state, model)}; its labels are kept, and the next detection "
            "uses it (it loads on first use, which can take a minute)")


def model_path(project, model: str) -> str:
    """What the loader reads: a server model as named, a project's model as its folder (checked again)."""
    folder = workdir.run_folder(project.path, model)
    return model if folder is None else str(folder)


def project_detector(app: App, state: dict):
    """The project's detector, loaded (or kept) by the hub; the project's other runs may stay loaded with it."""
    project = app.sessions.project(state)
    also = tuple(model_path(project, m) for m in trained_models(project))
    return app.hub.detector(model_path(project, project_model(app, state)), also=also)


# ------------------------------------------------------------------------------------------------ SAM

def sam_choices(app: App) -> list[tuple[str, str]]:
    """(menu line, public key) for every SAM this server offers, its --sam first; [] with --sam none."""
    keys = app.hub.sam_keys
    default = app.hub.sam_default_key
    return [(sam_words(spec) + (" [server default]" if key == default else ""), key) for key, spec in keys.items()]


def sam_of(app: App, project) -> str | None:
    """The public key of the SAM the project chose, if this server still offers it; else the server's (None with
    --sam none)."""
    chosen = project.setting("sam")
    return chosen if isinstance(chosen, str) and chosen in app.hub.sam_keys else app.hub.sam_default_key


def project_sam(app: App, state: dict) -> str | None:
    """The SAM of the visitor's project (`sam_of`)."""
    return sam_of(app, app.sessions.project(state))


def choose_sam(app: App, state: dict, key: str | None) -> str:
    """The project's SAM from now on, for clicks and for Detect / auto-label with masks. Labels already made stay
    as they are (masks are not made again)."""
    if not isinstance(key, str) or key not in app.hub.sam_keys:
        raise ProjectError("that SAM is not offered by this server; choose one from the list")
    if key != project_sam(app, state):
        app.sessions.project(state).set_setting("sam", key)
    return (f"the project now uses {sam_words(app.hub.sam_keys[key])} for masks; its labels are kept, and the next "
            "click or detection with masks uses it (it loads on first use, which can take a minute)")


def store_folder(project) -> str | None:
    """Where the project keeps its SAM embeddings (gdino.sam.store.project_store), or None on read-only storage."""
    return None if project.read_only else str(project_store(project.path).folder)


def project_segmenter(app: App, state: dict):
    """The project's SAM, loaded (or kept) by the hub, keeping its embeddings in the project's store."""
    project = app.sessions.project(state)
    segmenter = app.hub.segmenter(project_sam(app, state))
    folder = store_folder(project)
    return segmenter if folder is None else segmenter.using(project_store(project.path))


def status_line(app: App, state: dict | None) -> str:
    """The model status for the visitor's page: the project's SAM named where it chose one."""
    try:
        sam = project_sam(app, state) if state is not None else None
    except (OSError, ValueError):
        sam = None
    return app.hub.status_line(sam)
