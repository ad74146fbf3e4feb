"""gdino: Grounding DINO, our own implementation, loading the published weights.

The public names are imported on first use (PEP 562), so that `import gdino.store` and the other
data-side modules (formats, labeling, masks, safezip, processing, prompts) do not pay for
torch; `gdino.Detector`, `from gdino import Detector` and `dir(gdino)` work as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_SOURCES = {
    "PRESETS": "modeling.config", "GroundingDINOConfig": "modeling.config", "SwinConfig": "modeling.config",
    "TextConfig": "modeling.config", "preset": "modeling.config",
    "Detector": "detector",
    "GroundingDINO": "modeling", "GroundingDINOOutput": "modeling",
    "ImageError": "processing",
    "Project": "store", "ProjectError": "store",
    "PromptError": "prompts",
    "Segmenter": "sam.segmenter", "SegmenterError": "sam.prompts",
    "WeightsError": "weights.hub", "load_model": "weights.hub", "load_tokenizer": "weights.hub",
}

__all__ = [
    "PRESETS", "Detector", "GroundingDINO", "GroundingDINOConfig", "GroundingDINOOutput", "ImageError", "Project",
    "ProjectError", "PromptError",
    "Segmenter", "SegmenterError", "SwinConfig", "TextConfig", "WeightsError", "load_model", "load_tokenizer", "preset",
]


def __getattr__(name: str):
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'gdino' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs, which do not run __getattr__
    from .detector import Detector
    from .modeling import GroundingDINO, GroundingDINOOutput
    from .modeling.config import PRESETS, GroundingDINOConfig, SwinConfig, TextConfig, preset
    from .processing import ImageError
    from .prompts import PromptError
    from .sam.prompts import SegmenterError
    from .sam.segmenter import Segmenter
    from .store import Project, ProjectError
    from .weights.hub import WeightsError, load_model, load_tokenizer
