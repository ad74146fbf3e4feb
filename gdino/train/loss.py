"""The Grounding DINO training loss: per decoder layer and for the encoder stage, Hungarian matching,
a token-level sigmoid focal loss and L1 + GIoU box losses, weighted and summed.

Two modes (LossConfig.mode):
- "reference" (default, for training): the original training code (IDEA GroundingDINO / Open-GroundingDino).
  The encoder loss scores the top-Q encoder positions against the encoder-enhanced text, with their
  undetached boxes; each decoder layer's box refines the previous layer's undetached box ("look forward
  twice"); the matcher uses the config's focal alpha and gamma.
- "transformers": transformers 5.x `GroundingDinoForObjectDetection(labels=...)`, quirks included, for the
  parity tests: its "encoder" loss scores the learned query embeddings (tgt_embed) against the text BEFORE
  the encoder, with the detached selected boxes; the matcher's focal alpha/gamma are 0.25/2 whatever the
  config says, and the focal loss's gamma is 2.
In both modes each image's classes index its own token map: transformers' offset bug with different
prompts in one batch (it offsets image i's classes by the length of image i's own label map) is not
reproduced; with one prompt shared by the batch the two agree.

Term names follow transformers: loss_ce, loss_bbox, loss_giou, cardinality_error (logged, not weighted);
suffix _{i} for decoder layer i < L - 1 (auxiliary), _enc for the encoder stage. Each stage is matched
on its own. Losses are summed and divided by the number of target boxes in the batch (at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from ..modeling.model import TrainingOutput
from .boxes import aligned_giou, cxcywh_to_xyxy
from .matcher import MatchCosts, match
from .targets import ChunkTarget

Mode = Literal["reference", "transformers"]


@dataclass(frozen=True)
class LossConfig:
    mode: Mode = "reference"
    class_cost: float = 1.0  # matcher weights
    bbox_cost: float = 5.0
    giou_cost: float = 2.0
    ce_weight: float = 2.0  # loss weights (transformers hard-codes 2.0 for loss_ce)
    bbox_weight: float = 5.0
    giou_weight: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0  # "transformers" mode uses 2 whatever this says
    aux_loss: bool = True  # a loss on every decoder layer, not only the last
    encoder_loss: bool = True  # a loss on the encoder stage (_enc)

    def __post_init__(self):
        if self.mode not in ("reference", "transformers"):
            raise ValueError(f"mode must be 'reference' or 'transformers', got {self.mode!r}")


@dataclass
class LossOutput:
    total: torch.Tensor  # () the weighted sum, what to backpropagate
    terms: dict[str, torch.Tensor]  # each unweighted term, () tensors; cardinality_error* carry no gradient
    weights: dict[str, float]  # the weight of each term in `total` (terms not listed weigh 0)
    # stage suffix ("", "_0", ..., "_enc") -> per image (query indices, target indices)
    matches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """logits, targets: same shape (targets 0 or 1). returns () the SUM over elements of
    alpha_t * (1 - p_t)**gamma * BCE(logits, targets) (RetinaNet, arXiv 1708.02002); alpha < 0: no alpha_t."""
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


def _stage_losses(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    text_mask: torch.Tensor,
    token_maps: list[torch.Tensor],
    targets: Sequence[ChunkTarget],
    num_boxes: float,
    costs: MatchCosts,
    alpha: float,
    gamma: float,
) -> tuple[dict[str, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """logits: (B, Q, T); boxes: (B, Q, 4) cxcywh; text_mask: (B, T) bool; token_maps[i]: (C_i, T)."""
    matches = [match(logits[i].detach(), boxes[i].detach(), token_maps[i][t.classes], t.boxes, costs)
               for i, t in enumerate(targets)]
    one_hot = torch.zeros_like(logits)
    for i, (t, (q, j)) in enumerate(zip(targets, matches, strict=True)):
        one_hot[i, q] = token_maps[i][t.classes[j]].to(logits.dtype)
    mask = text_mask[:, None, :].expand_as(logits)
    loss_ce = sigmoid_focal_loss(logits[mask], one_hot[mask], alpha, gamma) / num_boxes

    batch = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(matches)])
    query = torch.cat([q for q, _ in matches])
    pred = boxes[batch.to(boxes.device), query.to(boxes.device)]
    target = torch.cat([t.boxes[j] for t, (_, j) in zip(targets, matches, strict=True)]).to(pred)
    loss_bbox = (pred - target).abs().sum() / num_boxes
    loss_giou = (1 - aligned_giou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(target))).sum() / num_boxes
    with torch.no_grad():  # logged only: how far the count of confident queries is from the count of boxes
        confident = (logits.sigmoid().max(-1).values > 0.5).sum(1).float()
        counts = torch.tensor([float(len(t.classes)) for t in targets], device=logits.device)
        cardinality = (confident - counts).abs().mean()
    terms = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou, "cardinality_error": cardinality}
    return terms, matches


def grounding_loss(
    out: TrainingOutput,
    targets: Sequence[ChunkTarget],
    token_maps: torch.Tensor | Sequence[torch.Tensor],
    config: LossConfig = LossConfig(),
    num_boxes: float | None = None,
) -> LossOutput:
    """
    out: the model's `decode_train` output for B images, all prompted with chunks of the same class list.
    targets: per image, its boxes for its chunk (`targets.chunk_target`); classes index the token map rows.
    token_maps: (C, W) bool/0-1, one chunk's class -> token map shared by the batch (`ChunkClasses.token_map`),
        or one (C_i, W) per image; W <= the logits' T positions (padded with zeros).
    num_boxes: the divisor of every term (default: the batch's number of target boxes, at least 1); pass the
        mean over processes when training on several.
    """
    num_layers, batch, _, width = out.logits.shape
    if len(targets) != batch:
        raise ValueError(f"{batch} images but {len(targets)} targets")
    if isinstance(token_maps, torch.Tensor):
        token_maps = [token_maps] * batch
    if len(token_maps) != batch:
        raise ValueError(f"{batch} images but {len(token_maps)} token maps")
    device = out.logits.device
    maps = [F.pad(m.to(device=device, dtype=torch.float32), (0, width - m.shape[-1])) for m in token_maps]
    targets = [ChunkTarget(t.classes.to(device), t.boxes.to(device=device, dtype=torch.float32)) for t in targets]
    if num_boxes is None:
        num_boxes = max(float(sum(len(t.classes) for t in targets)), 1.0)
    text_mask = F.pad(out.text_valid.to(device), (0, width - out.text_valid.shape[1]), value=False)

    hf = config.mode == "transformers"
    gamma = 2.0 if hf else config.focal_gamma
    alpha_m, gamma_m = (0.25, 2.0) if hf else (config.focal_alpha, config.focal_gamma)
    costs = MatchCosts(config.class_cost, config.bbox_cost, config.giou_cost, alpha_m, gamma_m)
    boxes = out.pred_boxes(look_forward_twice=not hf)

    stages: list[tuple[str, torch.Tensor, torch.Tensor]] = [("", out.logits[-1], boxes[-1])]
    if config.aux_loss:
        stages += [(f"_{i}", out.logits[i], boxes[i]) for i in range(num_layers - 1)]
    if config.encoder_loss:
        if hf:  # transformers' inputs: learned queries against pre-encoder text, the detached selected boxes
            stages.append(("_enc", out.query_logits, out.references[0].detach()))
        else:
            stages.append(("_enc", out.enc_logits, out.enc_boxes))

    base = {"loss_ce": config.ce_weight, "loss_bbox": config.bbox_weight, "loss_giou": config.giou_weight}
    terms: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}
    matches = {}
    for suffix, logits, stage_boxes in stages:
        stage_terms, matches[suffix] = _stage_losses(logits, stage_boxes, text_mask, maps, targets, num_boxes,
                                                     costs, config.focal_alpha, gamma)
        terms.update({k + suffix: v for k, v in stage_terms.items()})
        weights.update({k + suffix: w for k, w in base.items()})
    total = sum(terms[k] * w for k, w in weights.items())
    return LossOutput(total=total, terms=terms, weights=weights, matches=matches)
