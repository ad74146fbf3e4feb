"""Swin Transformer backbone, built from timm's pieces, in the reference's layer order.

timm's own `SwinTransformerBlock` shifts before padding and keeps each stage's downsample at the start
of the next stage; the checkpoints were trained with the opposite (pad to the window, then shift;
downsample at the end of a stage), which changes outputs on sizes not divisible by the window. So the
block and the stage are written here, around timm's `WindowAttention`, `Mlp`, `PatchMerging` and
`PatchEmbed`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp, PatchEmbed
from timm.models.swin_transformer import PatchMerging, WindowAttention, window_partition, window_reverse
from torch import nn

from .config import SwinConfig


def shifted_window_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask (num_windows, window*window, window*window): 0 within a region, -100 across the
    seams the cyclic shift creates. `height`, `width` are the padded map size."""
    def regions(n: int) -> torch.Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - window).long() + (idx >= n - shift).long()

    label = (regions(height)[:, None] * 3 + regions(width)[None, :]).float()
    windows = window_partition(label[None, :, :, None], (window, window)).reshape(-1, window * window)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, num_heads=num_heads, window_size=window, qkv_bias=True)
        self.attn.fused_attn = True  # scaled_dot_product_attention; timm defaults to the explicit path
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C). `shift_mask` from `shifted_window_mask` on the padded size."""
        b, h, w, c = x.shape
        y = self.norm1(x)
        pad_h, pad_w = (-h) % self.window, (-w) % self.window
        y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))  # pad first, then shift: the reference's order
        hp, wp = h + pad_h, w + pad_w
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(y, (self.window, self.window)).view(-1, self.window * self.window, c)
        windows = self.attn(windows, mask=shift_mask if self.shift else None)
        y = window_reverse(windows.view(-1, self.window, self.window, c), (self.window, self.window), hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y[:, :h, :w, :]
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, eps: float,
                 downsample: bool):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, eps)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, H, W, C) -> (stage output (B, H, W, C), next stage input (B, ceil(H/2), ceil(W/2), 2C))."""
        _, h, w, _ = x.shape
        mask = None
        if len(self.blocks) > 1:
            mask = shifted_window_mask(-(-h // self.window) * self.window, -(-w // self.window) * self.window,
                                       self.window, self.window // 2, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else x)


class SwinBackbone(nn.Module):
    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(
            img_size=None, patch_size=config.patch_size, in_chans=3, embed_dim=config.embed_dim,
            norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False, dynamic_img_pad=True,
        )
        channels = config.stage_channels()
        last = len(config.depths) - 1
        self.layers = nn.ModuleList(
            SwinStage(channels[i], config.depths[i], config.num_heads[i], config.window_size, config.mlp_ratio,
                      config.layer_norm_eps, downsample=i < last)
            for i in range(len(config.depths))
        )
        # One LayerNorm per output stage, named norm{i} as in the original checkpoints.
        for i in config.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(channels[i], eps=config.layer_norm_eps))

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """pixel_values: (B, 3, H, W), any H, W -> per out stage (B, C_i, ceil(H/s_i), ceil(W/s_i))."""
        x = self.patch_embed(pixel_values)
        outputs = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            if i in self.config.out_indices:
                outputs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
        return outputs
