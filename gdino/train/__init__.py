"""Fine-tuning on a project's reviewed labels: the loss (matcher, focal and box losses) and its targets from
prompt chunks, the data, the evaluation and the loop (`train`).

Names are imported on first use (PEP 562, as in `gdino`), so that `gdino.train.settings` (what the command
line reads to build its parser) does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_SOURCES = {
    "LossConfig": "loss", "LossOutput": "loss", "grounding_loss": "loss", "sigmoid_focal_loss": "loss",
    "MatchCosts": "matcher", "match": "matcher",
    "ChunkClasses": "targets", "ChunkTarget": "targets", "chunk_classes": "targets", "chunk_target": "targets",
    "TrainConfig": "settings", "TrainingError": "settings",
    "TrainResult": "trainer", "train": "trainer",
}

__all__ = [
    "ChunkClasses", "ChunkTarget", "LossConfig", "LossOutput", "MatchCosts", "TrainConfig", "TrainResult",
    "TrainingError", "chunk_classes", "chunk_target", "grounding_loss", "match", "sigmoid_focal_loss", "train",
]


def __getattr__(name: str):
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'gdino.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .loss import LossConfig, LossOutput, grounding_loss, sigmoid_focal_loss
    from .matcher import MatchCosts, match
    from .settings import TrainConfig, TrainingError
    from .targets import ChunkClasses, ChunkTarget, chunk_classes, chunk_target
    from .trainer import TrainResult, train
