"""What a labeling run looks for and how strictly: `LabelSettings` (stored with every auto-labeled image) and
the one parser of the app's class box and `--classes` (`parse_class_text`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from ..prompts import PromptError


def parse_class_text(text: str) -> list[str] | dict[str, list[str]]:
    """The class box of the app and `--classes` of the command line -> classes for `Detector`.

    "cat, remote control"                         -> ["cat", "remote control"]
    "car: car, automobile; person: person, man"   -> {"car": [...], "person": [...]}
    Entries are separated by ';' or new lines when there are any, else by commas; "label: a, b" gives
    a label its prompt phrases (synonyms). Empty entries are errors, not silently dropped.
    """
    if not isinstance(text, str) or not text.strip():
        raise PromptError("no classes given: type class names separated by commas, e.g. 'cat, remote control'")
    if re.search(r"[;\n]", text):
        entries = re.split(r"[;\n]", text)
    elif ":" in text:
        entries = [text]  # one "label: a, b" entry
    else:
        entries = text.split(",")
    entries = [e.strip() for e in entries]
    if len(entries) > 1 and not entries[-1]:
        entries.pop()  # a trailing separator
    if any(not e for e in entries):
        raise PromptError(f"empty class name in {text!r}: remove the doubled separator")
    if not any(":" in e for e in entries):
        return entries
    out: dict[str, list[str]] = {}
    for entry in entries:
        label, _, synonyms = entry.partition(":")
        label = label.strip()
        if "," in label:
            raise PromptError(f"{entry!r}: with 'label: synonyms', separate the classes with ';' "
                              "(e.g. 'car: car, automobile; person')")
        if not label:
            raise PromptError(f"{entry!r} has no label before ':'")
        if label in out:
            raise PromptError(f"class {label!r} is given twice")
        out[label] = [s.strip() for s in synonyms.split(",") if s.strip()] or [label]
    return out


@dataclass(frozen=True)
class LabelSettings:
    """What to find and how strictly; stored with every auto-labeled image."""

    classes: Sequence[str] | Mapping[str, Sequence[str]] | None = None
    prompt: str | None = None  # free text instead of classes
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    nms_iou: float | None = 0.5
    agnostic_nms_iou: float | None = None
    masks: bool = False

    def labels(self) -> list[str]:
        if isinstance(self.classes, Mapping):
            return list(self.classes)
        return list(self.classes or [])

    def to_run(self) -> dict:
        run = asdict(self)
        if isinstance(self.classes, Mapping):
            run["classes"] = {k: list(v) for k, v in self.classes.items()}
        elif self.classes is not None:
            run["classes"] = list(self.classes)
        return run

    @staticmethod
    def from_run(run: Mapping) -> LabelSettings:
        known = {k: run[k] for k in LabelSettings.__dataclass_fields__ if k in run}
        return LabelSettings(**known)
