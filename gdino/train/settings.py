"""The settings of a fine-tuning run, and its error. Pure (no torch): the command line reads the defaults."""

from __future__ import annotations

from dataclasses import dataclass


class TrainingError(ValueError):
    """Training cannot start or go on; the message says what to do."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 2
    lr: float = 1e-4  # everything trained but the backbone and the text encoder
    lr_backbone: float = 1e-5  # backbone and BERT, when unfrozen
    weight_decay: float = 1e-4
    clip: float = 0.1  # gradient norm
    lr_drop: float = 0.75  # after this fraction of the epochs, every learning rate x0.1
    freeze_backbone: bool = True
    freeze_text: bool = True
    augment: bool = True  # random shorter side 480-800 (longer <= 1333) and horizontal flips
    image_size: int = 800  # shorter side without augmentation, and where both models are measured
    val_fraction: float = 0.2
    seed: int = 0
    touched: bool = False  # also train on images a person edited but did not mark reviewed
    cache_gb: float = 4.0  # memory for cached backbone features (frozen backbone, no augmentation)
    loss_mode: str = "reference"  # gdino.train.loss.LossConfig.mode

    def check(self) -> None:
        problems = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.lr > 0 and self.lr_backbone >= 0, "learning rates must be positive"),
            (self.clip > 0, "the gradient clip must be positive"),
            (self.image_size >= 64, "the image size must be at least 64"),
            (0 <= self.val_fraction < 1, "the validation fraction must be in [0, 1)"),
            (0 < self.lr_drop <= 1, "lr_drop must be in (0, 1]"),
            (self.loss_mode in ("reference", "transformers"), "the loss mode must be reference or transformers"),
        ]
        for ok, message in problems:
            if not ok:
                raise TrainingError(message)
