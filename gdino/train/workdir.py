"""A training run's working folder, `OUT.partial/`: its checkpoints, and nothing that is not its own.

- The folder is created by the run and marked (`gdino-training`); an existing folder without the mark (a
  project, someone's files) is refused, never written into or deleted.
- One run at a time: an exclusive lock (`lock`) for the whole run; a second process is refused.
- A checkpoint is written to a unique temporary file, flushed to disk, then renamed over `checkpoint.pt`:
  the previous one stays until the new one is whole. What it was made from (the fingerprint) is written
  beside it as JSON and compared before the tensors are read, and the tensors are read with
  `weights_only=True`: a planted checkpoint can carry no code.
- Links are refused: the folder and its files must be real ones.

A project's own fine-tuned models (what the app trains) live in the project, one folder per run:
`<project>/models/finetuned-YYYYmmdd-HHMMSS/`, finished once it holds the card (`gdino_training.json`) and
`config.json`. `trained_models`, `run_folder`, `new_run_name` and `run_card` are that layout; nothing else
spells it out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path

import torch

from ..store.durable import fsync
from .settings import TrainingError

MARK = "gdino-training"
MODELS_DIR = "models"  # a project's fine-tuned models live in the project, here
RUN_NAME = re.compile(r"finetuned-\d{8}-\d{6}")  # what `new_run_name` makes; no other folder name is trusted
CARD = "gdino_training.json"  # what the run was trained on and how it measured (gdino.train.trainer writes it)


def new_run_name() -> str:
    """A new run's folder name under the project's models/ (the local time, to the second)."""
    return time.strftime("finetuned-%Y%m%d-%H%M%S")


def models_folder(project_dir: Path) -> Path | None:
    """`<project>/models`, where runs are written; None when it is a link or a file (nothing is trained there)."""
    folder = Path(project_dir) / MODELS_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        return None
    return folder


def trained_models(project_dir: Path) -> list[str]:
    """The project's own fine-tuned models, as "models/NAME" (relative to the project, newest first): finished
    runs under models/, real folders (no links) inside the project, each with its card and config.json."""
    root = Path(project_dir) / MODELS_DIR
    if root.is_symlink() or not root.is_dir():
        return []
    found = [d.name for d in root.iterdir() if RUN_NAME.fullmatch(d.name) and not d.is_symlink() and d.is_dir()
             and all((d / f).is_file() and not (d / f).is_symlink() for f in (CARD, "config.json"))]
    return [f"{MODELS_DIR}/{name}" for name in sorted(found, reverse=True)]


def is_run(model: str) -> bool:
    """Whether a model's name is a project's run ("models/NAME", relative to the project), not a server model."""
    return model.startswith(f"{MODELS_DIR}/")


def run_folder(project_dir: Path, model: str) -> Path | None:
    """The folder of the project's finished run `model` ("models/NAME"), checked again now; None if it is not one."""
    return Path(project_dir) / model if is_run(model) and model in trained_models(project_dir) else None


def run_card(project_dir: Path, model: str) -> dict:
    """The card of the project's run `model` ("models/NAME"): {"train_images": [names], "validation": {"base":
    {"map50", "map"} | None, "fine_tuned": ...}, ...}. OSError / ValueError when it cannot be read."""
    return json.loads((Path(project_dir) / model / CARD).read_text())


class WorkDir:
    def __init__(self, out: Path):
        self.path = out.with_name(out.name + ".partial")
        self._lock_file = None

    # ------------------------------------------------------------------------------------------ lifetime

    def open(self) -> WorkDir:
        """Create (or re-enter) the folder and take its lock."""
        p = self.path
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise TrainingError(f"{p} is a link or a file, not a training folder; choose another output directory")
        if p.exists() and not (p / MARK).is_file():
            raise TrainingError(f"{p} exists and is not a gdino training folder; choose another output directory "
                                "(it is left as it is)")
        p.mkdir(parents=True, exist_ok=True)
        (p / MARK).touch()
        self._lock_file = open(p / "lock", "a")  # noqa: SIM115  (held for the run, closed in close())
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise TrainingError(f"another training run is writing {p}; wait for it to end") from None
        return self

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def remove(self) -> None:
        """The run is done: delete its own files, then the folder (anything else in it stays)."""
        for name in ("checkpoint.pt", "checkpoint.json", MARK, "lock"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        for stray in self.path.glob(".checkpoint-*"):
            stray.unlink(missing_ok=True)
        self.close()
        with contextlib.suppress(OSError):
            self.path.rmdir()

    # --------------------------------------------------------------------------------------- checkpoints

    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoint.json").is_file() and (self.path / "checkpoint.pt").is_file()

    def fingerprint(self) -> str | None:
        file = self.path / "checkpoint.json"
        if file.is_symlink():
            raise TrainingError(f"{file} is a link; delete {self.path} to start again")
        try:
            return json.loads(file.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None

    def load(self, device) -> dict:
        file = self.path / "checkpoint.pt"
        if file.is_symlink():
            raise TrainingError(f"{file} is a link; delete {self.path} to start again")
        try:
            return torch.load(file, map_location=device, weights_only=True)
        except Exception as err:  # unpickling refused, a truncated file: both mean "not a checkpoint of ours"
            raise TrainingError(f"{file} cannot be read as a checkpoint ({type(err).__name__}); delete {self.path} "
                                "to start again") from err

    def save(self, state: dict, fingerprint: str) -> None:
        """Write `state` (tensors, numbers, lists, dicts only) and its fingerprint, each whole or not at all."""
        for name, write in (("checkpoint.pt", lambda f: torch.save(state, f)),
                            ("checkpoint.json", lambda f: f.write(json.dumps({"fingerprint": fingerprint,
                                                                              "epoch": state["epoch"]}).encode()))):
            fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=self.path)
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path / name)
            except BaseException as err:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                if isinstance(err, (OSError, RuntimeError)):
                    raise TrainingError(f"could not write the checkpoint in {self.path} ({err}); is the disk full? "
                                        "The previous epoch's checkpoint is kept") from err
                raise
        fsync(self.path)
