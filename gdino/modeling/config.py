"""Typed configuration of Grounding DINO and the named presets.

Everything the modules need to be built lives here; nothing else about the architecture is read from
files at run time. `weights.py` turns a checkpoint's own config (or its tensor shapes) into these.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

DEFAULT_MODEL = "IDEA-Research/grounding-dino-tiny"  # what Detector.from_pretrained, `gdino label` and the app load


@dataclass(frozen=True)
class SwinConfig:
    """Swin Transformer backbone (no absolute position embedding, qkv bias, patch norm)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    # Stages whose (normed) outputs feed the neck; 0-based. Strides 8/16/32 for (1, 2, 3).
    out_indices: tuple[int, ...] = (1, 2, 3)
    layer_norm_eps: float = 1e-5

    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    def out_channels(self) -> tuple[int, ...]:
        channels = self.stage_channels()
        return tuple(channels[i] for i in self.out_indices)


@dataclass(frozen=True)
class TextConfig:
    """BERT text encoder; the fields are those of `transformers.BertConfig`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0


Family = Literal["gdino", "mm_gdino"]


@dataclass(frozen=True)
class GroundingDINOConfig:
    # "gdino": IDEA's Grounding DINO: one box head shared by every decoder layer, a parameter-free (query . token)
    # class head. "mm_gdino": MM-Grounding-DINO (arXiv 2401.02361) and LLMDet: a box head and a class head per
    # decoder layer, an encoder class head of its own, and class heads that scale by 1/sqrt(d_model) and add a
    # learned bias. Everything else is the same network.
    family: Family = "gdino"
    swin: SwinConfig = field(default_factory=SwinConfig)
    text: TextConfig = field(default_factory=TextConfig)
    d_model: int = 256
    num_queries: int = 900
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    encoder_heads: int = 8
    decoder_heads: int = 8
    num_feature_levels: int = 4
    encoder_points: int = 4
    decoder_points: int = 4
    max_text_len: int = 256
    layer_norm_eps: float = 1e-5
    # Temperature of the 2-D sine position embedding of the image features.
    position_temperature: float = 20.0
    # Token ids that end a sub-sentence block ([CLS], [SEP], ".", "?" in bert-base-uncased).
    special_token_ids: tuple[int, ...] = (101, 102, 1012, 1029)

    # The text enhancer and the image-text fusion use half the heads and half the FFN width.
    @property
    def text_enhancer_heads(self) -> int:
        return self.encoder_heads // 2

    @property
    def text_enhancer_ffn_dim(self) -> int:
        return self.encoder_ffn_dim // 2

    @property
    def fusion_heads(self) -> int:
        return self.encoder_heads // 2

    @property
    def fusion_dim(self) -> int:
        return self.encoder_ffn_dim // 2

    def validate(self) -> None:
        checks = [
            (self.d_model % 32 == 0, f"d_model ({self.d_model}) must be a multiple of 32 (GroupNorm(32))"),
            (self.d_model % self.encoder_heads == 0, "d_model must be divisible by encoder_heads"),
            (self.d_model % self.decoder_heads == 0, "d_model must be divisible by decoder_heads"),
            (len(self.swin.depths) == len(self.swin.num_heads), "swin depths and num_heads differ in length"),
            (self.num_feature_levels >= len(self.swin.out_indices), "fewer feature levels than backbone outputs"),
            (self.encoder_heads % 2 == 0, "encoder_heads must be even (text enhancer and fusion use half)"),
            (self.family in ("gdino", "mm_gdino"), f"unknown family {self.family!r} (gdino or mm_gdino)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid GroundingDINOConfig: {message}")


SWIN_T = GroundingDINOConfig()
SWIN_B = GroundingDINOConfig(
    swin=SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12)
)
# A model small enough to build in a unit test in milliseconds.
TINY = GroundingDINOConfig(
    swin=SwinConfig(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=7),
    text=TextConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=300),
    d_model=64, num_queries=30, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
)

# MM-Grounding-DINO / LLMDet: the same backbones; Swin-L reads all four stages (strides 4-32) and adds a fifth
# level, as the conversion of its mmdetection config does.
MM_SWIN_T = replace(SWIN_T, family="mm_gdino")
MM_SWIN_B = replace(SWIN_B, family="mm_gdino")
MM_SWIN_L = GroundingDINOConfig(
    family="mm_gdino", num_feature_levels=5,
    swin=SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12,
                    out_indices=(0, 1, 2, 3)),
)
# not in PRESETS: the app treats every preset but "tiny" as published. Three decoder layers, so that a middle
# layer's own box head is exercised.
MM_TINY = replace(TINY, family="mm_gdino", decoder_layers=3)

PRESETS: dict[str, GroundingDINOConfig] = {
    "swin_t": SWIN_T, "swin_b": SWIN_B, "tiny": TINY, "mm_swin_t": MM_SWIN_T, "mm_swin_b": MM_SWIN_B, "mm_swin_l": MM_SWIN_L,
}


def preset(name: str, **overrides) -> GroundingDINOConfig:
    """A named preset (`swin_t`, `swin_b`, `tiny`; `mm_swin_t`, `mm_swin_b`, `mm_swin_l` for MM-Grounding-DINO
    and LLMDet), optionally with top-level fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
