"""The compiled CPU kernel (forward and backward) against the PyTorch reference, and the dispatcher."""

import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from compare import fraction_within, per_query_error
from msda_inputs import msda_inputs, reference_gradients

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
LEVELS = [[(7, 9)], [(20, 31), (10, 16), (5, 8), (3, 4)], [(1, 1), (2, 3)]]


@pytest.fixture(scope="module")
def cpu():
    module = compiled.kernel("cpu")
    assert module is not None, compiled._state["cpu"]["error"]
    return module


@needs_kernel
@pytest.mark.parametrize("shapes", LEVELS)
def test_float32_matches_the_reference(cpu, shapes):
    value, loc, weights = msda_inputs(shapes)
    ref = ms_deform_attn_reference(value, shapes, loc, weights)
    out = compiled.run(cpu, value, shapes, loc, weights)
    assert out.shape == ref.shape and (out - ref).abs().max() <= 1e-5


@needs_kernel
def test_bfloat16_is_close_to_float32(cpu):
    shapes = [(20, 31), (10, 16)]
    value, loc, weights = msda_inputs(shapes)
    ref = ms_deform_attn_reference(value, shapes, loc, weights)
    out = compiled.run(cpu, value.bfloat16(), shapes, loc, weights)  # locations and weights stay float32
    assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < 0.05


@needs_kernel
@pytest.mark.parametrize("shapes", LEVELS)
def test_backward_matches_the_reference(cpu, shapes):
    """Gradients of value, locations and weights, borders and pixel edges included. At a pixel centre the
    location's gradient jumps (bilinear has a kink there), and float32 rounding picks a side at random, so
    the location gradients of queries 0-9 (placed on edges and centres) are left out of that comparison."""
    value, loc, weights = msda_inputs(shapes)
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3])
    want_out, want = reference_gradients(value, shapes, loc, weights, grad)
    leaves = [t.clone().requires_grad_(True) for t in (value, loc, weights)]
    out = compiled.run(cpu, leaves[0], shapes, leaves[1], leaves[2])
    out.backward(grad)
    assert (out.detach().double() - want_out).abs().max() <= 1e-5
    leaves[1].grad[:, :10], want[1][:, :10] = 0, 0
    for name, leaf, expected in zip(("value", "locations", "weights"), leaves, want, strict=True):
        scale = 1 + expected.abs().max().item()
        assert (leaf.grad.double() - expected).abs().max() <= 1e-4 * scale, name


@needs_kernel
def test_gradcheck_float64(cpu):
    shapes = [(5, 6), (2, 3)]
    value, loc, weights = msda_inputs(shapes, batch=2, heads=2, channels=3, queries=6, points=2, dtype=torch.float64,
                                      edges=False)
    leaves = [t.requires_grad_(True) for t in (value, loc, weights)]
    assert torch.autograd.gradcheck(lambda v, lo, w: compiled.run(cpu, v, shapes, lo, w), leaves, eps=1e-6, atol=1e-5)


@needs_kernel
def test_bfloat16_backward_is_close(cpu):
    """Against the reference at the same (bfloat16-rounded) values: what is left is bfloat16 arithmetic."""
    shapes = [(9, 11), (4, 5)]
    value, loc, weights = msda_inputs(shapes, edges=False)
    value = value.bfloat16()
    grad = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3]).bfloat16()
    _, want = reference_gradients(value, shapes, loc, weights, grad)
    leaves = [t.clone().requires_grad_(True) for t in (value, loc, weights)]
    compiled.run(cpu, leaves[0], shapes, leaves[1], leaves[2]).backward(grad)
    assert [leaf.grad.dtype for leaf in leaves] == [torch.bfloat16, torch.float32, torch.float32]
    for leaf, expected in zip(leaves, want, strict=True):
        rel = (leaf.grad.double() - expected).norm() / expected.norm()
        assert rel < 0.03


@needs_kernel
def test_dispatcher(cpu, monkeypatch):
    value, loc, weights = msda_inputs([(7, 9)])
    monkeypatch.setenv("GDINO_MSDA", "auto")
    assert kernel_for(value) == "compiled" and kernel_for(value.bfloat16()) == "compiled"
    assert kernel_for(value.double()) == "reference"
    monkeypatch.setenv("GDINO_MSDA", "reference")
    assert kernel_for(value) == "reference"
    monkeypatch.setenv("GDINO_MSDA", "compiled")
    with pytest.raises(RuntimeError, match="no compiled kernel runs torch.float64"):
        kernel_for(value.double())
    monkeypatch.setenv("GDINO_MSDA", "sometimes")
    with pytest.raises(ValueError, match="GDINO_MSDA must be one of"):
        kernel_for(value)
    monkeypatch.setenv("GDINO_MSDA", "auto")
    value.requires_grad_(True)
    out = ms_deform_attn(value, [(7, 9)], loc, weights)  # a training-style call: the kernel, with its backward
    assert out.grad_fn is not None and "Function" in type(out.grad_fn).__name__
    out.sum().backward()
    assert value.grad is not None and value.grad.abs().sum() > 0


@needs_kernel
def test_model_outputs_are_the_same_with_the_kernel(cpu, tiny_ours, tokenizer, monkeypatch):
    enc = tokenizer(["a cat . remote control ."], return_tensors="pt")
    x = torch.randn(1, 3, 100, 131)
    with torch.no_grad():
        monkeypatch.setenv("GDINO_MSDA", "reference")
        ref = tiny_ours(x, **enc)
        monkeypatch.setenv("GDINO_MSDA", "compiled")
        out = tiny_ours(x, **enc)
    err = per_query_error(ref.logits, ref.pred_boxes, out.logits, out.pred_boxes)
    assert fraction_within(err, 1e-4) == 1.0


def _fresh_state(monkeypatch):
    monkeypatch.setattr(compiled, "_state", {kind: {"tried": False, "module": None, "error": None}
                                             for kind in compiled.SOURCES})
    monkeypatch.setenv("GDINO_MSDA", "auto")


@needs_kernel
def test_first_use_inside_inference_mode(cpu, monkeypatch, caplog):
    """The first-use check runs a backward: it must work when the first call comes from inference code."""
    monkeypatch.setattr(compiled, "build", lambda kind: cpu)
    _fresh_state(monkeypatch)
    value, loc, weights = msda_inputs([(7, 9)])
    with caplog.at_level("WARNING", logger="gdino"), torch.inference_mode():
        assert kernel_for(value) == "compiled"
        out = ms_deform_attn(value, [(7, 9)], loc, weights)
    assert "unavailable" not in caplog.text and (out - ms_deform_attn_reference(value, [(7, 9)], loc, weights)).abs().max() < 1e-5


def test_a_failed_build_falls_back_in_one_line(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(compiled, "CSRC", tmp_path / "nowhere")
    _fresh_state(monkeypatch)
    value, loc, weights = msda_inputs([(7, 9)])
    with caplog.at_level("WARNING", logger="gdino"):
        out = ms_deform_attn(value, [(7, 9)], loc, weights)
        ms_deform_attn(value, [(7, 9)], loc, weights)
    assert torch.equal(out, ms_deform_attn_reference(value, [(7, 9)], loc, weights))
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "using the PyTorch reference" in warnings[0].getMessage()


@needs_kernel
def test_a_kernel_that_disagrees_with_the_reference_is_not_used(cpu, monkeypatch, caplog):
    """The first-use check: a kernel whose output is 1% off (here, a wrapper around the real one) is refused."""

    class OnePercentOff:
        def forward(self, *args):
            return cpu.forward(*args) * 1.01

        def backward(self, *args):
            return cpu.backward(*args)

    monkeypatch.setattr(compiled, "build", lambda kind: OnePercentOff())
    _fresh_state(monkeypatch)
    value, loc, weights = msda_inputs([(7, 9)])
    with caplog.at_level("WARNING", logger="gdino"):
        assert kernel_for(value) == "reference"
    assert "output differs from the reference" in caplog.text
    monkeypatch.setenv("GDINO_MSDA", "compiled")
    with pytest.raises(RuntimeError, match="cpu kernel is unavailable"):
        kernel_for(value)


def test_describe_says_what_runs_and_why(monkeypatch):
    from gdino.ops import describe

    monkeypatch.setenv("GDINO_MSDA", "reference")
    assert describe("cpu", torch.float32) == "PyTorch reference (GDINO_MSDA=reference)"
    monkeypatch.setenv("GDINO_MSDA", "auto")
    assert describe("cpu", torch.float64) == "PyTorch reference (no compiled kernel for float64 on cpu)"
    _fresh_state(monkeypatch)
    assert describe("cpu", torch.float32) == "compiled CPU kernel (being built)"  # build=False never waits
    monkeypatch.setattr(compiled, "CSRC", compiled.CSRC / "nowhere")
    text = describe("cpu", torch.float32, build=True)
    assert text.startswith("PyTorch reference (the compiled kernel is unavailable: FileNotFoundError")


@needs_kernel
def test_mismatched_shapes_are_refused_not_read_out_of_bounds(cpu):
    shapes = [(7, 9)]
    value, loc, weights = msda_inputs(shapes)
    bad = [
        ((value[:, :-1], loc, weights), "sum of h \\* w"),
        ((value, loc[:1], weights[:1]), "sampling_locations must be"),
        ((value, loc, weights[..., :-1]), "attention_weights must be"),
        ((value, loc[:, :, :2], weights[:, :, :2]), "sampling_locations must be"),
    ]
    for (v, lo, w), message in bad:
        with pytest.raises(RuntimeError, match=message):
            compiled.run(cpu, v.contiguous(), shapes, lo.contiguous(), w.contiguous())


def test_no_cuda_build_at_start_on_a_zero_gpu_space(monkeypatch):
    """The main process of a ZeroGPU Space must not initialize CUDA; the start-up build skips CUDA there."""
    built = []
    monkeypatch.setattr(compiled, "kernel", lambda kind: built.append(kind))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    compiled.prepare_in_background().join(timeout=10)
    assert built == ["cpu"]
    monkeypatch.setenv("SPACES_ZERO_GPU", "")
    built.clear()
    compiled.prepare_in_background().join(timeout=10)
    assert built == ["cpu", "cuda"]


def test_a_cuda_fault_in_the_first_use_check_is_not_papered_over(monkeypatch, caplog):
    def faulting_check(module, device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(compiled, "build", lambda kind: object())
    monkeypatch.setattr(compiled, "self_check", faulting_check)
    _fresh_state(monkeypatch)
    with caplog.at_level("WARNING", logger="gdino"), pytest.raises(RuntimeError, match="CUDA context is lost"):
        compiled.kernel("cuda")
    assert compiled._state["cuda"]["module"] is None and compiled._state["cuda"]["tried"]


_NO_COMPILER_RUN = """
import logging, sys
logging.basicConfig(format="%(name)s|%(levelname)s|%(message)s")
import torch
from gdino.ops import describe, kernel_for
print(kernel_for(torch.zeros(1, 63, 1, 4)))
print(describe("cpu", torch.float32))
print("torch.utils.cpp_extension" in sys.modules)
"""


@pytest.mark.parametrize("how", ["nothing on PATH", "CXX names a missing compiler"])
def test_without_a_compiler_one_log_line_says_so_and_torch_is_never_asked_to_build(tmp_path, how):
    """A machine without a C++ compiler: one line saying that, what runs instead and how to get the fast
    kernel; no "compiling" line, no torch warning block (torch's build is never started)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "GDINO_MSDA")}
    env["GDINO_CACHE"] = str(tmp_path / "cache")  # nothing cached from an earlier build
    if how == "nothing on PATH":
        (tmp_path / "bin").mkdir()
        env["PATH"] = str(tmp_path / "bin")
    else:
        env["CXX"] = str(tmp_path / "no-such-g++")
    result = subprocess.run([sys.executable, "-c", _NO_COMPILER_RUN], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    kernel, described, extension_imported = result.stdout.splitlines()
    assert kernel == "reference" and extension_imported == "False"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("gdino|WARNING|") and "no C++ compiler" in line
    assert "PyTorch reference" in line and "slower" in line and "apt-get install g++" in line
    assert ("c++" if how == "nothing on PATH" else "no-such-g++") in line  # what was looked for
    assert "no C++ compiler" in described
    assert not list((tmp_path / "cache").rglob("*.so"))


def test_torchs_own_build_warnings_do_not_reach_the_log(monkeypatch, tmp_path, caplog):
    """With a compiler, torch's build logs its own warnings (a compiler-compatibility block, CUDA_HOME
    guesses); they are kept out of the log (at DEBUG under gdino), our "compiling" line stays."""
    from torch.utils import cpp_extension

    torch_log = logging.getLogger("torch.utils.cpp_extension")
    passed = []
    handler = logging.Handler()
    handler.emit = passed.append

    def fake_load(**kwargs):
        torch_log.warning("!! WARNING !! Your compiler (c++) is not compatible with the compiler Pytorch was built with")
        raise RuntimeError("Error building extension 'gdino_msda_cpu'")

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setattr(compiled, "find_cxx", lambda: "/usr/bin/c++", raising=False)  # a compiler "is there"
    monkeypatch.setenv("GDINO_CACHE", str(tmp_path))
    torch_log.addHandler(handler)
    try:
        with caplog.at_level("DEBUG", logger="gdino"), pytest.raises(RuntimeError, match="Error building"):
            compiled.build("cpu")
        torch_log.warning("after the build")  # torch's logger is itself again
    finally:
        torch_log.removeHandler(handler)
    assert [r.getMessage() for r in passed] == ["after the build"]
    ours = [r for r in caplog.records if r.name == "gdino"]
    assert [r.levelname for r in ours] == ["WARNING", "DEBUG"] and "compiling" in ours[0].getMessage()
    assert "not compatible" in ours[1].getMessage()



@needs_kernel
def test_a_build_is_kept_by_content_and_loaded_without_ninja(cpu, monkeypatch, tmp_path):
    """A finished build is kept under a key of its sources, torch, Python and flags, not of paths: another
    process (a new virtual environment, whose include paths would make ninja compile again) loads it with
    neither a compiler nor torch's build; a changed source is another key and builds."""
    from torch.utils import cpp_extension

    loads = []

    def load(**kwargs):  # stands for torch's build: hands back the real module, whose file gets kept
        loads.append(kwargs["name"])
        return cpu

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setenv("GDINO_CACHE", str(tmp_path / "cache"))
    assert compiled.build("cpu") is cpu and loads == ["gdino_msda_cpu"]
    [kept] = (tmp_path / "cache").rglob("by-content/*/gdino_msda_cpu*")
    compiled.build("cpu")
    assert loads == ["gdino_msda_cpu"]  # loaded from the kept file

    env = {k: v for k, v in os.environ.items() if k not in ("CXX", "GDINO_MSDA")}
    env.update(GDINO_CACHE=str(tmp_path / "cache"), PATH=str(tmp_path / "empty"))  # no c++, no ninja
    result = subprocess.run([sys.executable, "-c", _NO_COMPILER_RUN], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["compiled", "compiled CPU kernel", "False"], result.stdout + result.stderr
    assert "compiling" not in result.stderr and kept.is_file()

    changed = tmp_path / "csrc"
    shutil.copytree(compiled.CSRC, changed)
    source = changed / compiled.SOURCES["cpu"]
    source.write_text(source.read_text() + "\n// changed\n")
    monkeypatch.setattr(compiled, "CSRC", changed)
    assert compiled.build("cpu") is cpu and loads == ["gdino_msda_cpu"] * 2
