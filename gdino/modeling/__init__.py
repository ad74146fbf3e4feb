"""nn.Modules only: tensors in, dataclasses out. Nothing here downloads or reads files."""

from .model import GroundingDINO, GroundingDINOOutput, ImageFeatures, TextFeatures

__all__ = ["GroundingDINO", "GroundingDINOOutput", "ImageFeatures", "TextFeatures"]
