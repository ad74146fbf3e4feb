"""The published checkpoints we recommend, with their published zero-shot numbers. Pure data.

One list for every place a model is named: the app's model choice, `gdino models`, `gdino label --help`
and the README's table. The numbers are the authors' (COCO val2017 / LVIS minival box AP, zero-shot);
`None` where none was published.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..modeling.config import DEFAULT_MODEL


@dataclass(frozen=True)
class Checkpoint:
    repo: str  # hub repo id, what `gdino.load_model` and `--model` take
    title: str  # a short name for a menu
    coco_ap: float | None
    lvis_ap: float | None
    note: str = ""

    def label(self) -> str:
        """One menu line: name, numbers, repo."""
        numbers = ", ".join(f"{what} {ap:.1f}" for what, ap in (("COCO", self.coco_ap), ("LVIS", self.lvis_ap))
                            if ap is not None)
        return f"{self.title} ({numbers}) - {self.repo}"


RECOMMENDED: tuple[Checkpoint, ...] = (
    Checkpoint(DEFAULT_MODEL, "Grounding DINO tiny (IDEA, the default)", 48.4, 28.8),
    Checkpoint("openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det", "MM-Grounding-DINO tiny", 50.6, 40.5),
    Checkpoint("openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_grit_v3det", "MM-Grounding-DINO tiny (+GRIT)",
               50.4, 41.4),
    Checkpoint("iSEE-Laboratory/llmdet_tiny", "LLMDet tiny", None, 44.7),
    Checkpoint("openmmlab-community/mm_grounding_dino_base_o365v1_goldg_v3det", "MM-Grounding-DINO base", 52.5, None),
    Checkpoint("iSEE-Laboratory/llmdet_base", "LLMDet base", None, 48.3),
    Checkpoint("openmmlab-community/mm_grounding_dino_large_o365v2_oiv6_goldg", "MM-Grounding-DINO large", 53.0, None,
               "about 4x the tiny model's time"),
    Checkpoint("iSEE-Laboratory/llmdet_large", "LLMDet large", None, 51.1, "about 4x the tiny model's time"),
)

# Gated weights (accept the license on the hub page, then log in): never offered unless a server names them
# (`python app.py --models ...`), never a default. SAM 3's numbers: the official README's (sam3 0.1.4) box
# detection AP, zero-shot COCO 56.5 and LVIS 53.6.
GATED: tuple[Checkpoint, ...] = (
    Checkpoint("facebook/sam3", "SAM 3 (Meta, SAM License, gated; boxes and masks; a batch model on a CPU)", 56.5,
               53.6, "gated: accept Meta's SAM License on its hub page; ~25 s an image on 2 CPU cores"),
)


def describe(model: str) -> str:
    """The menu line of a recommended checkpoint, or the model's own name (a path, another repo)."""
    for c in (*RECOMMENDED, *GATED):
        if c.repo == model:
            return c.label()
    return model


def table() -> str:
    """The recommended checkpoints as lines of text (for --help and `gdino models`)."""
    return "\n".join(f"  {c.repo:<66} COCO {_ap(c.coco_ap):>4}  LVIS {_ap(c.lvis_ap):>4}"
                     + (f"  ({c.note})" if c.note else "") for c in (*RECOMMENDED, *GATED))


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
