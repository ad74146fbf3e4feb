"""Cross-modality decoder: queries refine boxes layer by layer, reading the text and the image."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention
from .config import GroundingDINOConfig
from .deform_attn import MSDeformAttn
from .heads import MLP, inverse_sigmoid
from .position import sine_embed_coords


class DecoderLayer(nn.Module):
    """self-attention -> text cross-attention -> deformable image cross-attention -> FFN, post-norm."""

    def __init__(self, c: GroundingDINOConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(c.d_model, c.decoder_heads)
        self.norm2 = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.ca_text = MultiheadAttention(c.d_model, c.decoder_heads)
        self.catext_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.cross_attn = MSDeformAttn(c.d_model, c.decoder_heads, c.num_feature_levels, c.decoder_points)
        self.norm1 = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.linear1 = nn.Linear(c.d_model, c.decoder_ffn_dim)
        self.linear2 = nn.Linear(c.decoder_ffn_dim, c.d_model)
        self.norm3 = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)

    def forward(self, x, pos, reference_points, memory, memory_valid, spatial_shapes, text, text_valid):
        """x, pos: (B, Q, D); reference_points: (B, Q, L, 4); memory: (B, S, D); memory_valid: (B, S);
        text: (B, N, D); text_valid: (B, N) -> (B, Q, D)."""
        qk = x + pos
        x = self.norm2(x + self.self_attn(qk, qk, x))
        x = self.catext_norm(x + self.ca_text(x + pos, text, text, text_valid[:, None, None, :]))
        x = self.norm1(x + self.cross_attn(x + pos, reference_points, memory, memory_valid, spatial_shapes))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


@dataclass
class DecoderOutput:
    hidden: torch.Tensor  # (B, Q, D) last layer's output after the final LayerNorm
    reference: torch.Tensor  # (B, Q, 4) cxcywh in [0, 1]: the reference boxes the last layer read
    # with return_intermediate=True (training), one entry per layer:
    layer_hidden: list[torch.Tensor] | None = None  # (B, Q, D) each layer's output after the final LayerNorm
    # (B, Q, 4) cxcywh in [0, 1]: the reference each layer read, NOT detached: entry 0 is the initial
    # reference as given, entry i > 0 the refinement made by layer i - 1 (the layers read it detached)
    layer_references: list[torch.Tensor] | None = None


class Decoder(nn.Module):
    def __init__(self, c: GroundingDINOConfig):
        super().__init__()
        self.d_model = c.d_model
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_layers))
        self.norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.ref_point_head = MLP(2 * c.d_model, c.d_model, c.d_model, 2)

    def forward(
        self,
        queries: torch.Tensor,
        reference: torch.Tensor,
        memory: torch.Tensor,
        memory_valid: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        valid_ratios: torch.Tensor,
        text: torch.Tensor,
        text_valid: torch.Tensor,
        box_heads: list[nn.Module],
        return_intermediate: bool = False,
    ) -> DecoderOutput:
        """
        queries: (B, Q, D) content queries; reference: (B, Q, 4) initial boxes, cxcywh in [0, 1].
        memory: (B, S, D) encoder image features; valid_ratios: (B, L, 2) as (w, h).
        box_heads: one per layer (the same module repeated where the model shares it), each mapping
        (B, Q, D) -> (B, Q, 4) box deltas in logit space.
        return_intermediate: also return every layer's normed output and undetached reference (the
        training losses read them); the outputs above are the same either way.
        """
        x = queries
        ratios = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # (B, 1, L, 4)
        hidden: list[torch.Tensor] = []
        references = [reference]
        for i, layer in enumerate(self.layers):
            per_level = reference[:, :, None] * ratios  # (B, Q, L, 4)
            pos = self.ref_point_head(sine_embed_coords(per_level[:, :, 0, :], self.d_model // 2).to(x.dtype))
            x = layer(x, pos, per_level, memory, memory_valid, spatial_shapes, text, text_valid)
            if return_intermediate and i < len(self.layers) - 1:
                hidden.append(self.norm(x))
            if i < len(self.layers) - 1:  # the last refinement is made by the caller, from the normed state
                refined = (box_heads[i](x) + inverse_sigmoid(reference)).sigmoid()
                references.append(refined)
                reference = refined.detach()
        out = DecoderOutput(hidden=self.norm(x), reference=reference)
        if return_intermediate:
            out.layer_hidden = hidden + [out.hidden]
            out.layer_references = references
        return out
