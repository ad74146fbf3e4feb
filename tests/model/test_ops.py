"""The deformable-attention reference against a direct, loop-by-loop bilinear sampler."""

import math

import pytest
import torch
from msda_inputs import msda_inputs

from gdino.ops import ms_deform_attn, ms_deform_attn_reference


def naive(value, shapes, locations, weights):
    """Sample each point by hand: pixel centres at half-integers, zero outside the map."""
    b, _, h_, dh = value.shape
    _, q_, _, levels, points, _ = locations.shape
    out = torch.zeros(b, q_, h_, dh, dtype=torch.float64)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for bi in range(b):
        for qi in range(q_):
            for hi in range(h_):
                for li, (h, w) in enumerate(shapes):
                    v = value[bi, starts[li]:starts[li + 1], hi].view(h, w, dh).double()
                    for pi in range(points):
                        x = locations[bi, qi, hi, li, pi, 0].item() * w - 0.5
                        y = locations[bi, qi, hi, li, pi, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(dh, dtype=torch.float64)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += (1 - abs(x - xx)) * (1 - abs(y - yy)) * v[yy, xx]
                        out[bi, qi, hi] += weights[bi, qi, hi, li, pi].item() * acc
    return out.view(b, q_, h_ * dh)


def test_reference_equals_direct_sampling():
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4), (2, 2)]
    b, heads, dh, q, points = 2, 2, 3, 4, 3
    value = torch.randn(b, sum(h * w for h, w in shapes), heads, dh, generator=g)
    # some locations outside [0, 1] exercise the zero padding
    locations = torch.rand(b, q, heads, len(shapes), points, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(b, q, heads, len(shapes), points, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    ref = naive(value, shapes, locations, weights)
    out = ms_deform_attn_reference(value, shapes, locations, weights)
    assert out.shape == (b, q, heads * dh)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    # whichever kernel the dispatcher picks here (compiled if it builds), the same numbers
    assert torch.allclose(ms_deform_attn(value, shapes, locations, weights).double(), ref, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reference_in_a_reduced_type_matches_float32(dtype):
    """The reference in bfloat16 / float16 (what precision="fast" hands it where no compiled kernel can be built)
    follows the float32 reference within the type's rounding. torch 2.14's CPU grid_sample in these types reads
    a value map that is not contiguous (the per-level views the reference makes) wrongly: NaN and 3.4e38 seen."""
    shapes = [(100, 100), (50, 50), (13, 13)]  # the bug needs a large map (seen at 100 x 100, not 50 x 50)
    value, loc, weights = msda_inputs(shapes, batch=1, heads=8, channels=8, queries=200, points=4)  # as the model has them
    want = ms_deform_attn_reference(value, shapes, loc, weights)
    got = ms_deform_attn_reference(value.to(dtype), shapes, loc.to(dtype), weights.to(dtype)).float()
    assert torch.isfinite(got).all()
    # bfloat16 locations are off by up to 1/256 of the map: a few hundredths of a unit value, never more
    assert (got - want).abs().max().item() < 0.25
    assert (got - want).abs().mean().item() < 0.02
