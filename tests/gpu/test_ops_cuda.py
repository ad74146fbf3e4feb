"""The CUDA kernel: that it compiles (wherever there is a CUDA toolkit, GPU or not), and, on a GPU, that
it matches the reference forward and backward and passes gradcheck in float64."""

import os

import pytest
import torch
from compare import fraction_within, per_query_error
from msda_inputs import msda_inputs, reference_gradients

from gdino.ops import compiled, kernel_for, ms_deform_attn_reference


def _no_toolkit() -> str | None:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is not a CUDA build"
    if compiled.cuda_home() is None:
        return "no CUDA toolkit (nvcc) on this machine"
    return None


toolkit_missing = _no_toolkit()
needs_toolkit = pytest.mark.skipif(toolkit_missing is not None, reason=f"building the CUDA kernel: {toolkit_missing}")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="running the CUDA kernel needs a GPU")
LEVELS = [[(7, 9)], [(20, 31), (10, 16), (5, 8), (3, 4)], [(1, 1), (2, 3)]]


@needs_toolkit
def test_the_cuda_kernel_compiles(monkeypatch):
    """Without a GPU this builds for Hopper (sm_90), unless TORCH_CUDA_ARCH_LIST says otherwise. The build is
    kept like the runtime's, by content (the sources, torch, the toolkit, the flags; not the virtual
    environment's path): only a change to one of them compiles again (about two minutes on 2 cores)."""
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    module = compiled.build("cuda")
    assert callable(module.forward) and callable(module.backward)


@pytest.fixture(scope="module")
def cuda():
    module = compiled.kernel("cuda")
    assert module is not None, compiled._state["cuda"]["error"]
    return module


@needs_gpu
@needs_toolkit
@pytest.mark.parametrize("shapes", LEVELS)
def test_float32_matches_the_reference(cuda, shapes):
    value, loc, weights = msda_inputs(shapes)
    ref = ms_deform_attn_reference(value, shapes, loc, weights)
    out = compiled.run(cuda, value.cuda(), shapes, loc.cuda(), weights.cuda())
    assert out.shape == ref.shape and (out.cpu() - ref).abs().max() <= 1e-5


@needs_gpu
@needs_toolkit
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_are_close_to_float32(cuda, dtype):
    shapes = [(20, 31), (10, 16)]
    value, loc, weights = msda_inputs(shapes)
    ref = ms_deform_attn_reference(value, shapes, loc, weights)
    out = compiled.run(cuda, value.to("cuda", dtype), shapes, loc.cuda(), weights.cuda())
    assert out.dtype == dtype and (out.float().cpu() - ref).abs().max() < 0.05


@needs_gpu
@needs_toolkit
@pytest.mark.parametrize("channels", [8, 32, 48])  # in-warp sums (8, 32) and the atomic path (48)
@pytest.mark.parametrize("shapes", LEVELS)
def test_backward_matches_the_reference(cuda, shapes, channels):
    value, loc, weights = msda_inputs(shapes, channels=channels)
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * channels)
    want_out, want = reference_gradients(value, shapes, loc, weights, grad)
    leaves = [t.cuda().requires_grad_(True) for t in (value, loc, weights)]
    out = compiled.run(cuda, leaves[0], shapes, leaves[1], leaves[2])
    out.backward(grad.cuda())
    assert (out.detach().double().cpu() - want_out).abs().max() <= 1e-5
    got = [leaf.grad.double().cpu() for leaf in leaves]
    got[1][:, :10], want[1][:, :10] = 0, 0  # kinks at pixel centres: see test_ops_compiled
    for name, g, expected in zip(("value", "locations", "weights"), got, want, strict=True):
        assert (g - expected).abs().max() <= 1e-4 * (1 + expected.abs().max().item()), name


@needs_gpu
@needs_toolkit
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_backward_is_close(cuda, dtype):
    """Against the reference at the same (rounded) values: what is left is half-precision arithmetic."""
    shapes = [(9, 11), (4, 5)]
    value, loc, weights = msda_inputs(shapes, edges=False)
    value = value.to(dtype)
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3]).to(dtype)
    _, want = reference_gradients(value, shapes, loc, weights, grad)
    leaves = [t.cuda().requires_grad_(True) for t in (value, loc, weights)]
    compiled.run(cuda, leaves[0], shapes, leaves[1], leaves[2]).backward(grad.cuda())
    assert [leaf.grad.dtype for leaf in leaves] == [dtype, torch.float32, torch.float32]
    for leaf, expected in zip(leaves, want, strict=True):
        assert (leaf.grad.double().cpu() - expected).norm() / expected.norm() < 0.03


@needs_gpu
@needs_toolkit
@pytest.mark.parametrize("channels", [4, 3])  # the in-warp sums and the atomic path
def test_gradcheck_float64(cuda, channels):
    shapes = [(5, 6), (2, 3)]
    value, loc, weights = msda_inputs(shapes, batch=2, heads=2, channels=channels, queries=6, points=2,
                                      dtype=torch.float64, edges=False)
    leaves = [t.cuda().requires_grad_(True) for t in (value, loc, weights)]
    assert torch.autograd.gradcheck(lambda v, lo, w: compiled.run(cuda, v, shapes, lo, w), leaves, eps=1e-6, atol=1e-5)


@needs_gpu
@needs_toolkit
def test_dispatcher_and_model(cuda, tiny_ours, tokenizer, monkeypatch):
    monkeypatch.setenv("GDINO_MSDA", "auto")
    probe = torch.zeros(1, 1, 1, 1, device="cuda")
    assert kernel_for(probe) == "compiled" and kernel_for(probe.half()) == "compiled"
    assert kernel_for(probe.double()) == "reference"
    enc = {k: v.cuda() for k, v in tokenizer(["a cat . remote control ."], return_tensors="pt").items()}
    x = torch.randn(1, 3, 100, 131, device="cuda")
    model = tiny_ours.cuda()
    try:
        with torch.no_grad():
            monkeypatch.setenv("GDINO_MSDA", "reference")
            ref = model(x, **enc)
            monkeypatch.setenv("GDINO_MSDA", "compiled")
            out = model(x, **enc)
    finally:
        tiny_ours.cpu()
    err = per_query_error(ref.logits.cpu(), ref.pred_boxes.cpu(), out.logits.cpu(), out.pred_boxes.cpu())
    assert fraction_within(err, 1e-4) == 1.0
