"""The compiled CPU kernel against the PyTorch reference, and the dispatcher's choices."""

import shutil

import pytest
import torch
from compare import fraction_within, per_query_error

from gdino.ops import compiled, kernel_for, ms_deform_attn, ms_deform_attn_reference


def _compiler_missing() -> str | None:
    if not (shutil.which("c++") or shutil.which("g++")):
        return "no C++ compiler on this machine"
    try:
        import ninja  # noqa: F401
    except ImportError:
        return "ninja is not installed"
    return None


reason = _compiler_missing()
needs_kernel = pytest.mark.skipif(reason is not None, reason=f"the compiled kernel needs a compiler: {reason}")


def inputs(shapes, batch=2, heads=4, channels=8, queries=50, points=3, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    spatial = sum(h * w for h, w in shapes)
    value = torch.randn(batch, spatial, heads, channels, generator=g)
    # outside [0, 1] (zero padding), exactly on the borders, and at pixel edges / centres
    loc = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g) * 1.6 - 0.3
    loc[:, :5] = torch.tensor([0.0, 1.0])[torch.randint(0, 2, loc[:, :5].shape, generator=g)]
    h0, w0 = shapes[0]
    loc[:, 5:10, :, 0, :, 0] = (torch.randint(0, w0 + 1, (batch, 5, heads, points), generator=g) / w0)
    loc[:, 5:10, :, 0, :, 1] = (torch.randint(0, 2 * h0 + 1, (batch, 5, heads, points), generator=g) / (2 * h0))
    weights = torch.rand(batch, queries, heads, len(shapes) * points, generator=g).softmax(-1)
    weights = weights.view(batch, queries, heads, len(shapes), points)
    return value.to(dtype), loc.to(dtype), weights.to(dtype)


@needs_kernel
@pytest.mark.parametrize("shapes", [[(7, 9)], [(20, 31), (10, 16), (5, 8), (3, 4)], [(1, 1), (2, 3)]])
def test_float32_matches_the_reference(shapes):
    module = compiled.cpu_kernel()
    assert module is not None, compiled._cpu["error"]
    value, loc, weights = inputs(shapes)
    ref = ms_deform_attn_reference(value, shapes, loc, weights)
    out = compiled.cpu_forward(module, value, shapes, loc, weights)
    assert out.shape == ref.shape and (out - ref).abs().max() <= 1e-5


@needs_kernel
def test_bfloat16_is_close_to_float32():
    shapes = [(20, 31), (10, 16)]
    value, loc, weights = inputs(shapes)
    ref = ms_deform_attn_reference(value, shapes, loc, weights)
    out = compiled.cpu_forward(compiled.cpu_kernel(), value.bfloat16(), shapes, loc.bfloat16(), weights.bfloat16())
    assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < 0.05


@needs_kernel
def test_dispatcher(monkeypatch):
    value, loc, weights = inputs([(7, 9)])
    monkeypatch.setenv("GDINO_MSDA", "auto")
    assert kernel_for(value, needs_grad=False) == "compiled"
    assert kernel_for(value, needs_grad=True) == "reference"  # the CPU kernel has no backward
    assert kernel_for(value.double(), needs_grad=False) == "reference"
    monkeypatch.setenv("GDINO_MSDA", "reference")
    assert kernel_for(value, needs_grad=False) == "reference"
    monkeypatch.setenv("GDINO_MSDA", "compiled")
    with pytest.raises(RuntimeError, match="no compiled kernel runs torch.float64"):
        kernel_for(value.double(), needs_grad=False)
    monkeypatch.setenv("GDINO_MSDA", "sometimes")
    with pytest.raises(ValueError, match="GDINO_MSDA must be one of"):
        kernel_for(value, needs_grad=False)
    monkeypatch.setenv("GDINO_MSDA", "auto")
    value.requires_grad_(True)
    out = ms_deform_attn(value, [(7, 9)], loc, weights)  # training-style call: the reference, with gradients
    out.sum().backward()
    assert value.grad is not None


@needs_kernel
def test_model_outputs_are_the_same_with_the_kernel(tiny_ours, tokenizer, monkeypatch):
    enc = tokenizer(["a cat . remote control ."], return_tensors="pt")
    x = torch.randn(1, 3, 100, 131)
    with torch.no_grad():
        monkeypatch.setenv("GDINO_MSDA", "reference")
        ref = tiny_ours(x, **enc)
        monkeypatch.setenv("GDINO_MSDA", "compiled")
        out = tiny_ours(x, **enc)
    err = per_query_error(ref.logits, ref.pred_boxes, out.logits, out.pred_boxes)
    assert fraction_within(err, 1e-4) == 1.0


def test_a_failed_build_falls_back_in_one_line(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(compiled, "CSRC", tmp_path / "nowhere")
    monkeypatch.setattr(compiled, "_cpu", {"tried": False, "module": None, "error": None})
    monkeypatch.setenv("GDINO_MSDA", "auto")
    value, loc, weights = inputs([(7, 9)])
    with caplog.at_level("WARNING", logger="gdino"):
        out = ms_deform_attn(value, [(7, 9)], loc, weights)
        ms_deform_attn(value, [(7, 9)], loc, weights)
    assert torch.equal(out, ms_deform_attn_reference(value, [(7, 9)], loc, weights))
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "using the PyTorch reference" in warnings[0].getMessage()
