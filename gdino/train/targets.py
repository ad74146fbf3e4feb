"""Targets for one prompt chunk: which classes the chunk names, the exact tokens of each, and each
image's boxes of those classes. Pure functions over `gdino.prompts` values.

A class list longer than one prompt is split into chunks (`gdino.prompts.build_chunks`); the model is
trained on one chunk at a time, and a box whose class is not in the chunk is no target for it (it is
neither positive nor negative: its class's tokens are not in the prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..prompts import ClassPrompt, PromptChunk


@dataclass(frozen=True)
class ChunkClasses:
    labels: tuple[int, ...]  # the classes (indices into ClassPrompt.labels) this chunk names; row k of token_map
    token_map: torch.Tensor  # (C, max_len) bool: row k is True on the tokens of every phrase of class labels[k]


@dataclass(frozen=True)
class ChunkTarget:
    classes: torch.Tensor  # (N,) int64 rows of the chunk's token_map
    boxes: torch.Tensor  # (N, 4) float32 cxcywh normalised to the unpadded image, in [0, 1]


def chunk_classes(prompt: ClassPrompt, chunk: PromptChunk, max_len: int = 256) -> ChunkClasses:
    """The classes of `chunk` in class order, each with the tokens of its phrases (synonyms included)
    at their positions in chunk.input_ids (position 0 is [CLS])."""
    if len(chunk.input_ids) > max_len:
        raise ValueError(f"the chunk has {len(chunk.input_ids)} tokens, more than max_len={max_len}")
    spans_of: dict[int, list[tuple[int, int]]] = {}
    for (start, end), phrase in zip(chunk.spans, chunk.phrase_index, strict=True):
        spans_of.setdefault(prompt.phrase_label[phrase], []).append((start, end))
    labels = tuple(sorted(spans_of))
    token_map = torch.zeros(len(labels), max_len, dtype=torch.bool)
    for row, label in enumerate(labels):
        for start, end in spans_of[label]:
            token_map[row, start:end] = True
    return ChunkClasses(labels, token_map)


def chunk_target(class_ids: torch.Tensor | Sequence[int], boxes: torch.Tensor, classes: ChunkClasses) -> ChunkTarget:
    """One image's boxes for one chunk.
    class_ids: (N,) indices into ClassPrompt.labels; boxes: (N, 4) cxcywh normalised to the unpadded image.
    returns the boxes whose class the chunk names, with their classes as rows of classes.token_map."""
    class_ids = torch.as_tensor(class_ids, dtype=torch.int64).reshape(-1)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if class_ids.shape[0] != boxes.shape[0]:
        raise ValueError(f"{class_ids.shape[0]} class ids but {boxes.shape[0]} boxes")
    if len(class_ids) and int(class_ids.min()) < 0:
        raise ValueError(f"class ids must be >= 0, got {int(class_ids.min())}")
    row_of = torch.full((int(class_ids.max()) + 1 if len(class_ids) else 0,), -1, dtype=torch.int64)
    for row, label in enumerate(classes.labels):
        if label < len(row_of):
            row_of[label] = row
    rows = row_of[class_ids] if len(class_ids) else class_ids
    keep = rows >= 0
    return ChunkTarget(classes=rows[keep], boxes=boxes[keep])
