"""One SAM 3 grounding pass on transformers' modules, as the official model runs it.

The official model always runs its geometry (exemplar) encoder, boxes or not: with none, the encoder still
yields its learned CLS token, attended over the image, and that token joins the text in the prompt every later
stage reads. transformers' `Sam3Model.forward` skips the encoder when no box is given, so its text-only results
differ from the official ones (measured on random full-size weights: boxes by 0.085, logits by 0.48). This
function is that forward with the encoder always on; everything else is transformers' modules in their order.

Shapes: vision = the image side of a batch of B (fpn levels (B, C, H_l, W_l)); input_ids / attention_mask
(B, 32); boxes (B, N, 4) normalized cx, cy, w, h (N may be 0); box_labels (B, N) 1 positive, 0 negative.
Returns pred_logits (B, Q), pred_boxes (B, Q, 4) normalized xyxy, presence_logits (B, 1), pred_masks
(B, Q, H_0, W_0) logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..train.boxes import cxcywh_to_xyxy


@dataclass
class Grounding:
    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    presence_logits: torch.Tensor
    pred_masks: torch.Tensor


def _logit(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The inverse of sigmoid with both sides kept at least eps (the official and transformers' clamp)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def exemplar_tokens(model, vision, boxes: torch.Tensor | None, box_labels: torch.Tensor | None,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The geometry encoder's prompt tokens for exemplar boxes on the image `vision` was computed from (none:
    its CLS token alone): (B, N + 1, C) tokens and their (B, N + 1) bool mask. Each box is read from that image
    (its features pooled, its place encoded) and the tokens attend over that image: they may be carried to
    another image as a prompt (`ground(..., geometry=)`), which SAM 3 was not trained for."""
    batch = vision.fpn_hidden_states[0].shape[0]
    device = vision.fpn_hidden_states[0].device
    if boxes is None:
        boxes = torch.zeros(batch, 0, 4, device=device)
        box_labels = torch.zeros(batch, 0, dtype=torch.long, device=device)
    out = model.geometry_encoder(box_embeddings=boxes.to(dtype),
                                 box_mask=torch.ones(boxes.shape[:2], dtype=torch.bool, device=device),
                                 box_labels=box_labels.long(), img_feats=vision.fpn_hidden_states[:-1],
                                 img_pos_embeds=vision.fpn_position_encoding[:-1])
    return out.last_hidden_state, out.attention_mask.bool()


def ground(model, vision, input_ids: torch.Tensor, attention_mask: torch.Tensor,
           boxes: torch.Tensor | None = None, box_labels: torch.Tensor | None = None,
           geometry: tuple[torch.Tensor, torch.Tensor] | None = None) -> Grounding:
    """geometry: exemplar tokens made on another image (`exemplar_tokens`), used instead of `boxes`."""
    feats = vision.fpn_hidden_states[:-1]
    pos = vision.fpn_position_encoding[:-1]
    text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    tokens, token_mask = geometry if geometry is not None else exemplar_tokens(model, vision, boxes, box_labels,
                                                                                text.dtype)
    prompt = torch.cat([text, tokens.to(text.dtype)], dim=1)
    prompt_mask = torch.cat([attention_mask.bool(), token_mask], dim=1)
    encoded = model.detr_encoder(vision_features=[feats[-1]], text_features=prompt, vision_pos_embeds=[pos[-1]],
                                 text_mask=prompt_mask)
    decoded = model.detr_decoder(vision_features=encoded.last_hidden_state, text_features=encoded.text_features,
                                 vision_pos_encoding=encoded.pos_embeds_flattened, text_mask=prompt_mask,
                                 spatial_shapes=encoded.spatial_shapes)
    last = decoded.intermediate_hidden_states[-1:]
    offsets = model.detr_decoder.box_head(last)
    boxes_out = cxcywh_to_xyxy((_logit(decoded.reference_boxes[-1:]) + offsets).sigmoid())[0]
    logits = model.dot_product_scoring(decoder_hidden_states=last, text_features=encoded.text_features,
                                       text_mask=prompt_mask).squeeze(-1)[0]
    masks = model.mask_decoder(decoder_queries=last[0], backbone_features=list(feats),
                               encoder_hidden_states=encoded.last_hidden_state, prompt_features=prompt,
                               prompt_mask=prompt_mask)
    return Grounding(logits, boxes_out, decoded.presence_logits[-1], masks.pred_masks)
