"""A training run's working folder, `OUT.partial/`: its checkpoints, and nothing that is not its own.

- The folder is created by the run and marked (`gdino-training`); an existing folder without the mark (a
  project, someone's files) is refused, never written into or deleted.
- One run at a time: an exclusive lock (`lock`) for the whole run; a second process is refused.
- A checkpoint is written to a unique temporary file, flushed to disk, then renamed over `checkpoint.pt`:
  the previous one stays until the new one is whole. What it was made from (the fingerprint) is written
  beside it as JSON and compared before the tensors are read, and the tensors are read with
  `weights_only=True`: a planted checkpoint can carry no code.
- Links are refused: the folder and its files must be real ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

import torch

from ..durable import fsync
from .settings import TrainingError

MARK = "gdino-training"


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
