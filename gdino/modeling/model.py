"""Grounding DINO (arXiv 2303.05499): Swin + BERT -> feature enhancer -> query selection -> decoder.

Submodule names follow the original checkpoints (`backbone`, `bert`, `feat_map`, `input_proj`,
`transformer.*`, `bbox_embed`) so that weights map onto them with few renames.
The MM-Grounding-DINO family (config.family == "mm_gdino") is the same network with per-layer heads
(`bbox_embed.i`, `class_embed.i`) and an encoder class head (`transformer.enc_out_class_embed`).

The forward pass is split so the image side can be cached and reused across prompts:
`encode_image` (backbone + neck, no text) -> `encode_text` -> `decode` (fusion onwards).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import SwinBackbone
from .config import GroundingDINOConfig
from .decoder import Decoder
from .encoder import Encoder
from .heads import MLP, ScaledContrastiveHead, contrastive_logits, inverse_sigmoid
from .position import sine_embed_2d
from .query_selection import encoder_proposals, select_queries, top_positions
from .text import build_bert, encode_text, phrase_masks


@dataclass
class ImageFeatures:
    """The image side before any text is seen; valid for any prompt."""

    tokens: torch.Tensor  # (B, S, D) projected multi-level features, levels concatenated row-major
    pos: torch.Tensor  # (B, S, D) sine position + level embedding
    valid: torch.Tensor  # (B, S) bool, False on padding
    spatial_shapes: list[tuple[int, int]]  # (h, w) per level
    valid_ratios: torch.Tensor  # (B, L, 2) valid fraction of each level's map, as (w, h)

    def split(self) -> list[ImageFeatures]:
        """One ImageFeatures (batch of 1) per image."""
        return [ImageFeatures(self.tokens[i:i + 1], self.pos[i:i + 1], self.valid[i:i + 1], self.spatial_shapes,
                              self.valid_ratios[i:i + 1]) for i in range(self.tokens.shape[0])]

    @staticmethod
    def cat(parts: list[ImageFeatures]) -> ImageFeatures:
        """Batch features of images that share one spatial size (as `split` returns them)."""
        if any(p.spatial_shapes != parts[0].spatial_shapes for p in parts):
            raise ValueError("only features of images of the same size can be batched")
        return ImageFeatures(torch.cat([p.tokens for p in parts]), torch.cat([p.pos for p in parts]),
                             torch.cat([p.valid for p in parts]), parts[0].spatial_shapes,
                             torch.cat([p.valid_ratios for p in parts]))


@dataclass
class TextFeatures:
    tokens: torch.Tensor  # (B, N, D) BERT features projected to d_model
    valid: torch.Tensor  # (B, N) bool, False on padding
    allowed: torch.Tensor  # (B, N, N) bool phrase mask
    position_ids: torch.Tensor  # (B, N) position within the phrase

    def expand(self, batch: int) -> TextFeatures:
        """The features of one prompt (B=1) shared by `batch` images, without copying."""
        return TextFeatures(self.tokens.expand(batch, -1, -1), self.valid.expand(batch, -1),
                            self.allowed.expand(batch, -1, -1), self.position_ids.expand(batch, -1))


@dataclass
class GroundingDINOOutput:
    logits: torch.Tensor  # (B, Q, max_text_len) query-token scores (pre-sigmoid), -inf past the text
    pred_boxes: torch.Tensor  # (B, Q, 4) cxcywh normalized to the unpadded image, in [0, 1]; float32 in any model dtype


@dataclass
class TrainingOutput:
    """Everything the training losses read (`GroundingDINO.decode_train`). L decoder layers,
    Q queries, T = max_text_len token positions, N the prompt's tokens."""

    logits: torch.Tensor  # (L, B, Q, T) every decoder layer's query-token scores, -inf past the text; [-1] == decode's
    box_deltas: torch.Tensor  # (L, B, Q, 4) every layer's box head output, logit space, relative to `references`
    # (L, B, Q, 4) cxcywh in [0, 1]: the box each layer's prediction refines, not detached: [0] is the query
    # selection's (detached, as the decoder reads it), [i] the refinement made by layer i - 1
    references: torch.Tensor
    enc_logits: torch.Tensor  # (B, Q, T) the top-Q encoder positions scored against the encoder-enhanced text
    enc_boxes: torch.Tensor  # (B, Q, 4) cxcywh in [0, 1]: their boxes, not detached (the decoder starts from these)
    # (B, Q, T) the learned query embeddings (tgt_embed) scored by the encoder class head against the text before
    # the encoder: what transformers trains as its "encoder" output
    query_logits: torch.Tensor
    text_valid: torch.Tensor  # (B, N) bool, False on padding

    def pred_boxes(self, look_forward_twice: bool = False) -> torch.Tensor:
        """(L, B, Q, 4) every layer's boxes, cxcywh in [0, 1]. look_forward_twice=False: each box refines a
        detached reference (transformers); True: the undetached one, so that layer i's box loss also trains
        layer i - 1's box head (DINO's "look forward twice", the original training code)."""
        refs = self.references if look_forward_twice else self.references.detach()
        return (self.box_deltas + inverse_sigmoid(refs)).sigmoid()


class Transformer(nn.Module):
    """Encoder, query selection and decoder, with their embeddings (the checkpoints' `transformer.*`)."""

    def __init__(self, c: GroundingDINOConfig):
        super().__init__()
        self.level_embed = nn.Parameter(torch.zeros(c.num_feature_levels, c.d_model))
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.tgt_embed = nn.Embedding(c.num_queries, c.d_model)
        self.enc_output = nn.Linear(c.d_model, c.d_model)
        self.enc_output_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.enc_out_bbox_embed = MLP(c.d_model, c.d_model, 4, 3)
        if c.family == "mm_gdino":
            self.enc_out_class_embed = ScaledContrastiveHead(c.max_text_len)


class GroundingDINO(nn.Module):
    def __init__(self, config: GroundingDINOConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.backbone = SwinBackbone(c.swin)
        self.bert = build_bert(c.text)
        self.feat_map = nn.Linear(c.text.hidden_size, c.d_model)
        in_channels = list(c.swin.out_channels())
        proj = [nn.Sequential(nn.Conv2d(ch, c.d_model, 1), nn.GroupNorm(32, c.d_model)) for ch in in_channels]
        for i in range(c.num_feature_levels - len(in_channels)):
            ch = in_channels[-1] if i == 0 else c.d_model
            proj.append(nn.Sequential(nn.Conv2d(ch, c.d_model, 3, stride=2, padding=1), nn.GroupNorm(32, c.d_model)))
        self.input_proj = nn.ModuleList(proj)
        self.transformer = Transformer(c)
        if c.family == "mm_gdino":  # a box head and a class head per decoder layer
            self.bbox_embed = nn.ModuleList(MLP(c.d_model, c.d_model, 4, 3) for _ in range(c.decoder_layers))
            self.class_embed = nn.ModuleList(ScaledContrastiveHead(c.max_text_len) for _ in range(c.decoder_layers))
        else:
            self.bbox_embed = MLP(c.d_model, c.d_model, 4, 3)  # one box head shared by every decoder layer

    @property
    def dtype(self) -> torch.dtype:
        return self.feat_map.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.feat_map.weight.device

    def encode_image(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> ImageFeatures:
        """pixel_values: (B, 3, H, W) normalized; pixel_mask: (B, H, W), 1 on image pixels, 0 on padding."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
        b, _, h, w = pixel_values.shape
        pixel_values = pixel_values.to(self.dtype)
        if pixel_mask is None:
            pixel_mask = torch.ones((b, h, w), dtype=torch.bool, device=pixel_values.device)
        return self.encode_maps(self.backbone(pixel_values), pixel_mask.to(pixel_values.device))

    def encode_maps(self, maps: list[torch.Tensor], pixel_mask: torch.Tensor) -> ImageFeatures:
        """The neck on the backbone's feature maps (B, C_l, H_l, W_l) of (B, 3, H, W) pixels whose pixel_mask
        (B, H, W) is 1 on image pixels: `encode_image` after the backbone (training reuses frozen maps)."""
        sources = [proj(m) for proj, m in zip(self.input_proj, maps, strict=False)]
        for proj in self.input_proj[len(maps):]:
            sources.append(proj(maps[-1] if len(sources) == len(maps) else sources[-1]))
        tokens, pos, valid, shapes, ratios = [], [], [], [], []
        for level, src in enumerate(sources):
            lh, lw = src.shape[-2:]
            mask = F.interpolate(pixel_mask[None].float(), size=(lh, lw))[0].bool()  # nearest
            p = sine_embed_2d(mask, self.config.d_model // 2, self.config.position_temperature).to(src.dtype)
            tokens.append(src.flatten(2).transpose(1, 2))
            pos.append(p.flatten(2).transpose(1, 2) + self.transformer.level_embed[level].view(1, 1, -1))
            valid.append(mask.flatten(1))
            shapes.append((lh, lw))
            # geometry (valid ratios, reference points, boxes) stays float32 in a bfloat16 model: bfloat16 would move
            # a sampling point by up to half a pixel on the largest map
            ratios.append(torch.stack([mask[:, 0, :].sum(1) / lw, mask[:, :, 0].sum(1) / lh], -1).float())
        return ImageFeatures(torch.cat(tokens, 1), torch.cat(pos, 1), torch.cat(valid, 1), shapes,
                             torch.stack(ratios, 1))

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> TextFeatures:
        """input_ids, attention_mask, token_type_ids: (B, N) from the tokenizer, N <= max_text_len."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, N), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_text_len:
            raise ValueError(
                f"the prompt has {input_ids.shape[1]} tokens, more than the model's {self.config.max_text_len}; "
                "split the class list into several prompts (gdino.Detector does this for you)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        allowed, position_ids = phrase_masks(input_ids, self.config.special_token_ids)
        features = encode_text(self.bert, input_ids, allowed, position_ids, token_type_ids)
        return TextFeatures(self.feat_map(features), attention_mask.bool(), allowed, position_ids)

    def _encode(self, image: ImageFeatures, text: TextFeatures):
        """Fusion and feature enhancement. returns memory (B, S, D), enhanced text (B, N, D), the scored memory
        (B, S, D) and every position's box (B, S, 4), logit space."""
        c, t = self.config, self.transformer
        if image.tokens.shape[0] != text.tokens.shape[0]:
            raise ValueError(f"{image.tokens.shape[0]} images but {text.tokens.shape[0]} prompts")
        if image.tokens.shape[1] < c.num_queries:
            raise ValueError(f"the image is too small: {image.tokens.shape[1]} feature positions, the model "
                             f"selects {c.num_queries}; use a larger image (e.g. the processor's 800 px)")
        memory, text_tokens = t.encoder(image.tokens, image.pos, image.valid, image.spatial_shapes,
                                        image.valid_ratios, text.tokens, text.valid, text.allowed,
                                        text.position_ids)
        proposals, usable = encoder_proposals(image.valid, image.spatial_shapes, torch.float32)
        scored = t.enc_output_norm(t.enc_output(memory.masked_fill(~usable, 0.0)))
        return memory, text_tokens, scored, t.enc_out_bbox_embed(scored) + proposals

    def _class_logits(self, layer: int, hidden: torch.Tensor, text_tokens: torch.Tensor,
                      text_valid: torch.Tensor) -> torch.Tensor:
        if self.config.family == "mm_gdino":
            return self.class_embed[layer](hidden, text_tokens, text_valid)
        return contrastive_logits(hidden, text_tokens, text_valid, self.config.max_text_len)

    def decode(self, image: ImageFeatures, text: TextFeatures) -> GroundingDINOOutput:
        """Fusion, feature enhancement, query selection and decoding for one batch of image+text."""
        c, t = self.config, self.transformer
        memory, text_tokens, scored, box_logits = self._encode(image, text)
        mm = c.family == "mm_gdino"
        reference = select_queries(scored, box_logits, text_tokens, text.valid,
                                   c.num_queries, t.enc_out_class_embed if mm else None)
        queries = t.tgt_embed.weight[None].expand(memory.shape[0], -1, -1)
        box_heads = list(self.bbox_embed) if mm else [self.bbox_embed] * c.decoder_layers
        out = t.decoder(queries, reference, memory, image.valid, image.spatial_shapes, image.valid_ratios,
                        text_tokens, text.valid, box_heads)
        logits = self._class_logits(-1, out.hidden, text_tokens, text.valid)
        boxes = (box_heads[-1](out.hidden) + inverse_sigmoid(out.reference)).sigmoid()
        return GroundingDINOOutput(logits=logits, pred_boxes=boxes)

    def decode_train(self, image: ImageFeatures, text: TextFeatures) -> TrainingOutput:
        """`decode` for training: every decoder layer's outputs and the encoder stage's, for the losses
        (gdino.train.loss). The last layer's logits and boxes equal decode's."""
        c, t = self.config, self.transformer
        memory, text_tokens, scored, box_logits = self._encode(image, text)
        mm = c.family == "mm_gdino"
        enc_head = t.enc_out_class_embed if mm else None
        top = top_positions(scored, text_tokens, text.valid, c.num_queries, enc_head)
        top_memory = torch.gather(scored, 1, top[..., None].expand(-1, -1, scored.shape[-1]))
        enc_boxes = torch.gather(box_logits, 1, top[..., None].expand(-1, -1, 4)).sigmoid()
        queries = t.tgt_embed.weight[None].expand(memory.shape[0], -1, -1)
        if mm:
            enc_logits = enc_head(top_memory, text_tokens, text.valid)
            query_logits = enc_head(queries, text.tokens, text.valid)
        else:
            enc_logits = contrastive_logits(top_memory, text_tokens, text.valid, c.max_text_len)
            query_logits = contrastive_logits(queries, text.tokens, text.valid, c.max_text_len)
        box_heads = list(self.bbox_embed) if mm else [self.bbox_embed] * c.decoder_layers
        out = t.decoder(queries, enc_boxes.detach(), memory, image.valid, image.spatial_shapes, image.valid_ratios,
                        text_tokens, text.valid, box_heads, return_intermediate=True)
        logits = [self._class_logits(i, h, text_tokens, text.valid) for i, h in enumerate(out.layer_hidden)]
        deltas = [head(h) for head, h in zip(box_heads, out.layer_hidden, strict=True)]
        return TrainingOutput(logits=torch.stack(logits), box_deltas=torch.stack(deltas),
                              references=torch.stack(out.layer_references), enc_logits=enc_logits,
                              enc_boxes=enc_boxes, query_logits=query_logits, text_valid=text.valid)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> GroundingDINOOutput:
        """pixel_values (B, 3, H, W), input_ids (B, N) -> logits (B, Q, 256), pred_boxes (B, Q, 4)."""
        return self.decode(self.encode_image(pixel_values, pixel_mask),
                           self.encode_text(input_ids, attention_mask, token_type_ids))
