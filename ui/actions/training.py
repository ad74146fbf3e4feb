"""Training on the reviewed images: a background job of the server that fine-tunes the project's model into a
run folder of the project (its layout is gdino.train.workdir's), and choosing the newest run as the detector."""

from __future__ import annotations

from gdino.store import ProjectError
from gdino.train import workdir

from ..app import App
from .labeling import image_files
from .models import choose_model, model_path, project_model, trained_models

MAX_EPOCHS = 500


def start_training(app: App, state: dict, epochs, fast: bool) -> str:
    """Fine-tune the project's model on its reviewed images, as a background job of the server (the page
    polls `job_status`). The same settings again resume a stopped run."""
    from gdino.train.settings import TrainConfig

    project = app.sessions.project(state)
    job = app.jobs.get(project.path)
    if job is not None and job.running:
        return job.text()
    epochs = _epochs(epochs)
    if not project.images(status="reviewed"):
        raise ProjectError("no reviewed images to train on: check the labels of some images and press "
                           "'Mark reviewed' (r) on each")
    out_dir = workdir.models_folder(project.path)
    if out_dir is None:
        raise ProjectError("the project's models folder is a link or a file; remove it to train here")
    base = project_model(app, state)
    from gdino.sam3.loading import is_sam3

    if is_sam3(model_path(project, base)):
        raise ProjectError("training fine-tunes Grounding DINO models; this project uses SAM 3: choose a Grounding "
                           "DINO model under Model to train")
    pending = project.setting("training")
    pending = pending if isinstance(pending, dict) else {}
    name = pending.get("name")  # a stopped run with the same settings is resumed, in its own folder
    same = pending.get("epochs") == epochs and pending.get("fast") == bool(fast) and pending.get("base") == base
    if not (same and isinstance(name, str) and workdir.RUN_NAME.fullmatch(name) and not (out_dir / name).exists()):
        name = workdir.new_run_name()
    project.set_setting("training", {"name": name, "epochs": epochs, "fast": bool(fast), "base": base})
    out_dir.mkdir(exist_ok=True)
    text_encoder = app.config.text_encoder if base == app.config.model else None
    job = app.jobs.start_training(project, model_path(project, base), out_dir / name, TrainConfig(epochs=epochs,
                                  augment=not fast), device=app.hub.device, text_encoder=text_encoder,
                                  images=image_files(app, project))
    return job.text()


def _epochs(epochs) -> int:
    """The page's epochs field as a whole number from 1 to MAX_EPOCHS (ProjectError otherwise)."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float, str)):
        raise ProjectError("the number of epochs must be a whole number, e.g. 12")
    try:
        value = float(epochs)
    except ValueError:
        raise ProjectError("the number of epochs must be a whole number, e.g. 12") from None
    if not value.is_integer() or not 1 <= value <= MAX_EPOCHS:
        raise ProjectError(f"the number of epochs must be a whole number from 1 to {MAX_EPOCHS}")
    return int(value)


def use_trained_model(app: App, state: dict) -> str:
    """Make the project's newest fine-tuned model its detector."""
    models = trained_models(app.sessions.project(state))
    if not models:
        raise ProjectError("no fine-tuned model yet: train on the reviewed images first")
    return choose_model(app, state, models[0])
