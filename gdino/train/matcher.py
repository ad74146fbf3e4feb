"""Hungarian matching of queries to ground-truth boxes, one image at a time (DETR's matcher with a
token-level focal class cost, as in Grounding DINO).

cost[q, j] = class_cost * focal(q, j) + bbox_cost * L1(box q, box j) + giou_cost * -GIoU(box q, box j)
where focal(q, j) averages, over the tokens of target j's class, the focal cost of calling token t
positive minus the cost of calling it negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .boxes import cxcywh_to_xyxy, pairwise_giou


@dataclass(frozen=True)
class MatchCosts:
    class_cost: float = 1.0
    bbox_cost: float = 5.0
    giou_cost: float = 2.0
    alpha: float = 0.25  # focal alpha and gamma of the class cost
    gamma: float = 2.0


def focal_class_cost(logits: torch.Tensor, token_maps: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """
    logits: (Q, T) query-token scores, pre-sigmoid (-inf on tokens past the text).
    token_maps: (M, T) each target's class tokens (1 on the class's tokens, 0 elsewhere).
    returns: (Q, M) the focal cost of each query predicting each target's class, averaged over its tokens.
    """
    prob = logits.float().sigmoid()
    # the 1e-8 keeps log finite at prob 0 or 1 (e.g. the -inf logits past the text)
    pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    neg = (1 - alpha) * prob ** gamma * -(1 - prob + 1e-8).log()
    weights = token_maps.float() / token_maps.float().sum(-1, keepdim=True)  # a class without tokens gives NaN
    return (pos - neg) @ weights.t()


def cost_matrix(logits: torch.Tensor, boxes: torch.Tensor, token_maps: torch.Tensor, target_boxes: torch.Tensor,
                costs: MatchCosts = MatchCosts()) -> torch.Tensor:
    """
    logits: (Q, T); boxes: (Q, 4) cxcywh in [0, 1]; token_maps: (M, T) the class tokens of each target;
    target_boxes: (M, 4) cxcywh in [0, 1].
    returns: (Q, M) float32 matching cost, NaN and +-inf replaced by the largest float32 (such a pair is
    matched only when nothing else can be).
    """
    boxes, target_boxes = boxes.float(), target_boxes.float()
    cost = (costs.bbox_cost * torch.cdist(boxes, target_boxes, p=1)
            + costs.class_cost * focal_class_cost(logits, token_maps, costs.alpha, costs.gamma)
            - costs.giou_cost * pairwise_giou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(target_boxes)))
    big = torch.finfo(cost.dtype).max
    return torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)


@torch.no_grad()
def match(logits: torch.Tensor, boxes: torch.Tensor, token_maps: torch.Tensor, target_boxes: torch.Tensor,
          costs: MatchCosts = MatchCosts()) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: shapes as `cost_matrix`. returns (query indices, target indices), int64 (K,) each with
    K = min(Q, M), the minimum-cost one-to-one assignment, sorted by query index."""
    if target_boxes.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    cost = cost_matrix(logits, boxes, token_maps, target_boxes, costs).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return torch.as_tensor(np.asarray(rows), dtype=torch.int64), torch.as_tensor(np.asarray(cols), dtype=torch.int64)
