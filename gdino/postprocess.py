"""Model outputs -> labeled boxes: class scores per token span, free-text phrases, NMS."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms, nms

from .prompts import PromptChunk


@dataclass
class Labeled:
    """Detections of one image (torch, CPU). Boxes are xyxy in original-image pixels."""

    boxes: torch.Tensor  # (K, 4) float32
    scores: torch.Tensor  # (K,) float32
    class_ids: torch.Tensor  # (K,) int64

    @staticmethod
    def empty() -> Labeled:
        return Labeled(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))

    @staticmethod
    def cat(parts: list[Labeled]) -> Labeled:
        if not parts:
            return Labeled.empty()
        return Labeled(torch.cat([p.boxes for p in parts]), torch.cat([p.scores for p in parts]),
                       torch.cat([p.class_ids for p in parts]))

    def select(self, keep: torch.Tensor) -> Labeled:
        return Labeled(self.boxes[keep], self.scores[keep], self.class_ids[keep])


def class_scores(probs: torch.Tensor, chunk: PromptChunk, phrase_label: tuple[int, ...], num_labels: int) -> torch.Tensor:
    """
    probs: (Q, T) sigmoid token scores of one image for this chunk's prompt.
    returns (Q, num_labels): per class, the best token score over its phrases' spans; 0 for classes
    that are not in this chunk. A class is scored only on its own tokens, never on [CLS], '.' or [SEP].
    """
    q = probs.shape[0]
    token_phrase = torch.full((probs.shape[1],), -1, dtype=torch.int64)
    for i, (start, end) in enumerate(chunk.spans):
        token_phrase[start:end] = i
    in_span = token_phrase >= 0
    phrase_scores = torch.zeros(q, len(chunk.spans)).scatter_reduce(
        1, token_phrase[in_span].expand(q, -1), probs[:, in_span], reduce="amax", include_self=False)
    labels = torch.tensor([phrase_label[p] for p in chunk.phrase_index], dtype=torch.int64)
    return torch.zeros(q, num_labels).scatter_reduce(1, labels.expand(q, -1), phrase_scores, reduce="amax")


def phrase_for_query(
    token_probs: torch.Tensor,
    word_ids: list[int | None],
    offsets: list[tuple[int, int]],
    is_delimiter: list[bool],
    text: str,
    text_threshold: float,
) -> tuple[float, str, int]:
    """Free text: (score, phrase, phrase start in `text`) of one query; the phrase is whole words of
    the original text.

    token_probs: (T,) sigmoid scores of the query over the prompt's tokens. The query's score is its
    best content token (not [CLS], [SEP], '.', '?'). The phrase is the run of adjacent words, inside
    that token's sub-sentence, whose best piece scores above `text_threshold` and that contains the best
    word: whole words only (never a '##' piece), never merged across a '.'.
    """
    content = {i for i, w in enumerate(word_ids) if w is not None and not is_delimiter[i]}
    best = max(sorted(content), key=lambda i: token_probs[i].item())
    score = token_probs[best].item()
    word_score: dict[int, float] = {}
    for i in content:
        word_score[word_ids[i]] = max(word_score.get(word_ids[i], 0.0), token_probs[i].item())

    def chosen(i: int) -> bool:
        return word_score[word_ids[i]] > text_threshold or word_ids[i] == word_ids[best]

    start = best
    while start - 1 in content and chosen(start - 1):
        start -= 1
    end = best
    while end + 1 in content and chosen(end + 1):
        end += 1
    # extend to whole words (pieces of the first/last word that scored below the threshold)
    while start - 1 >= 0 and word_ids[start - 1] == word_ids[start]:
        start -= 1
    while end + 1 < len(word_ids) and word_ids[end + 1] == word_ids[end]:
        end += 1
    return score, text[offsets[start][0]:offsets[end][1]], offsets[start][0]


def kept_order(found: Labeled, iou: float | None, agnostic_iou: float | None) -> torch.Tensor:
    """Indices into `found` of what duplicate suppression keeps, best score first: NMS per class (iou), then
    optionally across classes (agnostic_iou)."""
    keep = torch.arange(len(found.scores))
    if len(keep) == 0:
        return keep
    if iou is not None:
        keep = keep[batched_nms(found.boxes, found.scores, found.class_ids, iou)]
    if agnostic_iou is not None:
        keep = keep[nms(found.boxes[keep], found.scores[keep], agnostic_iou)]
    return keep[torch.argsort(found.scores[keep], descending=True, stable=True)]


def suppress_duplicates(found: Labeled, iou: float | None, agnostic_iou: float | None) -> Labeled:
    """NMS per class (iou), then optionally across classes (agnostic_iou); sorted by score."""
    if len(found.scores) == 0:
        return found
    return found.select(kept_order(found, iou, agnostic_iou))
