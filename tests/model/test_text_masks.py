"""Sub-sentence (phrase) masks and position ids from input_ids."""

import torch

from gdino.modeling.text import phrase_masks

SPECIAL = (101, 102, 1012, 1029)


def test_phrase_blocks_by_hand():
    # [CLS] a cat . remote control . [SEP] [PAD]  (padded in a batch: [SEP] is not the last position)
    ids = torch.tensor([[101, 7, 8, 1012, 9, 10, 1012, 102, 0]])
    allowed, pos = phrase_masks(ids, SPECIAL)
    assert pos[0].tolist() == [0, 0, 1, 2, 0, 1, 2, 0, 0]
    a = allowed[0].int()
    assert a[1, :].tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0]  # "a" sees "a cat ."
    assert a[4, :].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0]  # "remote" sees "remote control ."
    assert a[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0]  # [CLS] only itself
    assert a[8].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1]  # padding only itself


def test_no_trailing_period_forms_no_last_block():
    # [CLS] a cat [SEP] as the whole sequence: the block ending at the last position is not formed
    ids = torch.tensor([[101, 7, 8, 102]])
    allowed, pos = phrase_masks(ids, SPECIAL)
    assert torch.equal(allowed[0], torch.eye(4, dtype=torch.bool))
    assert pos[0].tolist() == [0, 0, 0, 0]


def test_matches_transformers_on_random_sequences():
    from transformers.models.grounding_dino.modeling_grounding_dino import (
        generate_masks_with_special_tokens_and_transfer_map as oracle,
    )

    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        b, n = torch.randint(1, 4, (2,), generator=g).tolist()[0], torch.randint(2, 40, (1,), generator=g).item()
        ids = torch.randint(1000, 1100, (b, n), generator=g)
        ids[torch.rand(b, n, generator=g) < 0.2] = 1012
        ids[torch.rand(b, n, generator=g) < 0.05] = 1029
        ids[:, 0] = 101
        ids[:, -1] = 102
        ours_mask, ours_pos = phrase_masks(ids, SPECIAL)
        ref_mask, ref_pos = oracle(ids, torch.tensor(SPECIAL))
        assert torch.equal(ours_mask, ref_mask)
        assert torch.equal(ours_pos, ref_pos)
