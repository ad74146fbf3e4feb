"""gdino: Grounding DINO, our own implementation, loading the published weights."""

from .config import PRESETS, GroundingDINOConfig, SwinConfig, TextConfig, preset
from .modeling import GroundingDINO, GroundingDINOOutput
from .weights import WeightsError, load_model, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "GroundingDINO", "GroundingDINOConfig", "GroundingDINOOutput", "SwinConfig", "TextConfig",
    "WeightsError", "load_model", "load_tokenizer", "preset",
]
