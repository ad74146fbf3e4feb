"""gdino: Grounding DINO, our own implementation, loading the published weights."""

from .config import PRESETS, GroundingDINOConfig, SwinConfig, TextConfig, preset
from .detector import Detector
from .modeling import GroundingDINO, GroundingDINOOutput
from .processing import ImageError
from .project import Project, ProjectError
from .prompts import PromptError
from .segment import Segmenter, SegmenterError
from .weights import WeightsError, load_model, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "Detector", "GroundingDINO", "GroundingDINOConfig", "GroundingDINOOutput", "ImageError", "Project",
    "ProjectError", "PromptError",
    "Segmenter", "SegmenterError", "SwinConfig", "TextConfig", "WeightsError", "load_model", "load_tokenizer", "preset",
]
