"""Random inputs for the deformable-attention kernels, with the hard cases placed on purpose."""

import torch


def msda_inputs(shapes, batch=2, heads=4, channels=8, queries=50, points=3, dtype=torch.float32, seed=0, edges=True):
    """value (B, S, H, D), locations (B, Q, H, L, P, 2), weights (B, Q, H, L, P).

    Locations spread over [-0.3, 1.3] (a fifth of them outside the map). With `edges`, queries 0-4 sit
    exactly on the map's borders (0 or 1) and queries 5-9 on level 0's pixel edges and centres: the points
    where bilinear sampling has kinks (leave them out for finite-difference gradient checks)."""
    g = torch.Generator().manual_seed(seed)
    spatial = sum(h * w for h, w in shapes)
    value = torch.randn(batch, spatial, heads, channels, generator=g)
    loc = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g) * 1.6 - 0.3
    if edges:
        loc[:, :5] = torch.tensor([0.0, 1.0])[torch.randint(0, 2, loc[:, :5].shape, generator=g)]
        h0, w0 = shapes[0]
        loc[:, 5:10, :, 0, :, 0] = torch.randint(0, w0 + 1, (batch, 5, heads, points), generator=g) / w0
        loc[:, 5:10, :, 0, :, 1] = torch.randint(0, 2 * h0 + 1, (batch, 5, heads, points), generator=g) / (2 * h0)
    weights = torch.rand(batch, queries, heads, len(shapes) * points, generator=g).softmax(-1)
    weights = weights.view(batch, queries, heads, len(shapes), points)
    return value.to(dtype), loc.to(dtype), weights.to(dtype)


def reference_gradients(value, shapes, loc, weights, grad):
    """The reference's output and its gradients for value, locations and weights (float64 throughout)."""
    from gdino.ops import ms_deform_attn_reference

    leaves = [t.detach().double().requires_grad_(True) for t in (value, loc, weights)]
    out = ms_deform_attn_reference(leaves[0], shapes, leaves[1], leaves[2])
    out.backward(grad.double())
    return out.detach(), [t.grad for t in leaves]
