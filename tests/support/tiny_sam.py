"""A small random SAM built from segment-anything's own modeling classes, saved like the real files."""

from functools import partial
from pathlib import Path

import torch


def make_tiny_sam(seed: int = 0):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=256, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
                                      global_attn_indexes=[1], window_size=4, out_chans=32),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 256),
                                     mask_in_chans=8),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8),
                                 transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    with torch.no_grad():
        for p in sam.parameters():  # rel-pos tables start at zero: give every path a signal
            p.add_(0.05 * torch.randn_like(p))
    return sam.eval()


def save_tiny_sam(path: Path, seed: int = 0) -> Path:
    torch.save(make_tiny_sam(seed).state_dict(), path)  # the official files are plain state dicts too
    return path
