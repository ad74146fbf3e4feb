"""BERT text encoder and the sub-sentence structure computed from `input_ids`.

A caption like "cat . remote control ." is read as phrases: each phrase ends at a delimiter token
([CLS], [SEP], ".", "?") and its tokens attend only within the phrase, with position ids that restart
at 0. The same mask and position ids feed BERT and the text self-attention of the feature enhancer.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from .config import TextConfig


def phrase_masks(input_ids: torch.Tensor, special_ids: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    input_ids: (B, N) token ids.
    returns:   allowed (B, N, N) bool, True where token i may attend to token j;
               position_ids (B, N) long.
    A block is the tokens after one delimiter up to and including the next. Delimiters at the first or
    the last position of the (padded) sequence, tokens after the last delimiter and padding form no
    block: they attend to themselves only, with position 0. (This matches the checkpoints' training
    code, including its quirk that a block ending at the very last position is not formed.)
    """
    batch, n = input_ids.shape
    device = input_ids.device
    is_delim = torch.isin(input_ids, torch.tensor(special_ids, device=device))
    idx = torch.arange(n, device=device).expand(batch, n)
    # index of the first delimiter at or after i (n if none), of the last delimiter strictly before i (-1)
    next_delim = torch.where(is_delim, idx, n).flip(1).cummin(1).values.flip(1)
    prev_delim = torch.where(is_delim, idx, -1).cummax(1).values
    prev_delim = torch.cat([prev_delim.new_full((batch, 1), -1), prev_delim[:, :-1]], dim=1)
    in_block = (next_delim != 0) & (next_delim != n - 1) & (next_delim != n)
    same_block = (next_delim[:, :, None] == next_delim[:, None, :]) & in_block[:, None, :]
    allowed = same_block | torch.eye(n, dtype=torch.bool, device=device)
    position_ids = torch.where(in_block, idx - prev_delim - 1, 0).clamp(min=0)
    return allowed, position_ids


def build_bert(config: TextConfig) -> BertModel:
    """A randomly initialised BERT of this shape, without the pooler (Grounding DINO never uses it)."""
    bert_config = BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act, max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return BertModel(bert_config, add_pooling_layer=False)


def encode_text(
    bert: nn.Module,
    input_ids: torch.Tensor,
    allowed: torch.Tensor,
    position_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
) -> torch.Tensor:
    """(B, N) ids + (B, N, N) phrase mask -> (B, N, hidden) BERT features."""
    out = bert(input_ids=input_ids, attention_mask=allowed[:, None], token_type_ids=token_type_ids,
               position_ids=position_ids)
    return out.last_hidden_state
