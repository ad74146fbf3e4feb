"""The image-text fusion's attention (gdino/modeling/fusion.py) computes its products against the text tokens,
not the embed_dim channels (issue 28's exact mode). Checked against the attention written the checkpoints' way:
project queries, keys and values, one score matrix for both directions, project back."""

import pytest
import torch

from gdino.modeling.fusion import BiMultiHeadAttention


def close(a, b, limit):
    """Equal up to `limit` of the larger tensor's largest magnitude: the sums are grouped otherwise."""
    assert a.shape == b.shape
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= limit * scale, ((a - b).abs().max().item(), scale)


def checkpoints_way(m: BiMultiHeadAttention, image, text, image_pad, text_pad):
    b, s, _ = image.shape
    n, h, eh = text.shape[1], m.num_heads, m.head_dim

    def heads(x):
        return x.view(b, x.shape[1], h, eh).transpose(1, 2)

    q = heads(m.v_proj(image) * m.scale)
    k = heads(m.l_proj(text))
    scores = q @ k.transpose(-1, -2)  # (B, H, S, N)
    scores = (scores - scores.max()).clamp(min=-50000).clamp(max=50000)
    scores_t = scores.transpose(-1, -2)
    scores_t = (scores_t - scores_t.max(dim=-1, keepdim=True).values).clamp(min=-50000).clamp(max=50000)
    scores_t = scores_t.masked_fill(image_pad[:, None, None, :], float("-inf")).softmax(-1)
    scores = scores.masked_fill(text_pad[:, None, None, :], float("-inf")).softmax(-1)
    image_out = (scores @ heads(m.values_l_proj(text))).transpose(1, 2).reshape(b, s, h * eh)
    text_out = (scores_t @ heads(m.values_v_proj(image))).transpose(1, 2).reshape(b, n, h * eh)
    return m.out_v_proj(image_out), m.out_l_proj(text_out)


def case(seed, b=2, s=300, n=9, d=32, e=64, heads=4):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m = BiMultiHeadAttention(d, e, heads)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    image = torch.randn(b, s, d, generator=g)
    text = torch.randn(b, n, d, generator=g)
    image_pad = torch.zeros(b, s, dtype=torch.bool)
    image_pad[1, s - 40:] = True  # the second image is smaller: padded
    text_pad = torch.zeros(b, n, dtype=torch.bool)
    text_pad[0, n - 3:] = True  # the first prompt is shorter
    return m, image, text, image_pad, text_pad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_updates_as_the_checkpoints_way(seed):
    m, *args = case(seed)
    with torch.no_grad():
        ours = m(*args)
        theirs = checkpoints_way(m, *args)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_large_scores_are_clamped_and_stabilised_the_same_way():
    m, image, text, image_pad, text_pad = case(3)
    image, text = image * 40, text * 40  # scores in the thousands: the max subtraction and clamps matter
    with torch.no_grad():
        ours = m(image, text, image_pad, text_pad)
        theirs = checkpoints_way(m, image, text, image_pad, text_pad)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.isfinite(a).all()
        close(a, b, 1e-4)  # scores in the thousands: rounding moves the sharpest softmax weights a little


def test_the_same_gradients_for_fine_tuning():
    m, image, text, image_pad, text_pad = case(4)
    image.requires_grad_(True)
    text.requires_grad_(True)
    grads = []
    for fn in (m.forward, lambda *a: checkpoints_way(m, *a)):
        m.zero_grad()
        image.grad = text.grad = None
        out_image, out_text = fn(image, text, image_pad, text_pad)
        (out_image.square().mean() + out_text.sin().sum()).backward()
        grads.append([image.grad.clone(), text.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads, strict=True):
        close(a, b, 1e-4)  # a bias gradient sums over every token, in another order
