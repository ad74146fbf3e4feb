"""The CUDA kernels' source, run on the CPU by tests/support/cuda_emulator.cpp (no GPU needed): forward and
backward in float64 against the PyTorch reference, for head sizes that take the in-warp sums (1, 8, 32)
and the atomic path (3, 48), with partly filled last blocks."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from msda_inputs import msda_inputs, reference_gradients

ROOT = Path(__file__).resolve().parents[2]
CU = ROOT / "csrc" / "ms_deform_attn_cuda.cu"
BEGIN, END = "// ---- device code begin", "// ---- device code end"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("the emulator needs a C++20 compiler (g++)")
    folder = tmp_path_factory.mktemp("cuda_emulator")
    text = CU.read_text()
    assert BEGIN in text and END in text, "the device-code markers in csrc/ms_deform_attn_cuda.cu are gone"
    body = text[text.index(BEGIN):text.index(END)]
    (folder / "kernels_body.inc").write_text("\n".join(line for line in body.splitlines() if "#include" not in line))
    binary = folder / "cuda_emulator"
    build = subprocess.run([compiler, "-std=c++20", "-O1", "-pthread", f"-I{ROOT / 'csrc'}", f"-I{folder}",
                            str(ROOT / "tests" / "support" / "cuda_emulator.cpp"), "-o", str(binary)],
                           capture_output=True, text=True)
    if build.returncode != 0 and "barrier" in build.stderr and "No such file" in build.stderr:
        pytest.skip("this compiler has no C++20 <barrier>")
    assert build.returncode == 0, build.stderr[-3000:]
    return binary


@pytest.mark.parametrize("channels", [1, 3, 8, 32, 48])
@pytest.mark.parametrize("shapes", [[(7, 9)], [(20, 31), (10, 16), (5, 8), (3, 4)], [(1, 1), (2, 3)]])
def test_cuda_source_matches_the_reference(emulator, tmp_path, shapes, channels):
    batch, heads, queries, points = 2, 4, 13, 3  # 2*13*4*D outputs: the last block is partly filled
    value, loc, weights = msda_inputs(shapes, batch=batch, heads=heads, channels=channels, queries=queries,
                                      points=points, dtype=torch.float64)
    grad = torch.randn(batch, queries, heads * channels, dtype=torch.float64)
    want_out, want = reference_gradients(value, shapes, loc, weights, grad)
    levels = torch.tensor(shapes, dtype=torch.int64)
    starts = torch.cat([levels.new_zeros(1), (levels[:, 0] * levels[:, 1]).cumsum(0)[:-1]])
    for name, t in [("value", value), ("loc", loc), ("w", weights), ("grad", grad), ("shapes", levels),
                    ("starts", starts)]:
        t.contiguous().numpy().tofile(tmp_path / f"{name}.bin")
    sizes = [batch, value.shape[1], heads, channels, queries, len(shapes), points]
    run = subprocess.run([str(emulator), *map(str, sizes)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"in_warp={int(32 % channels == 0)}" in run.stdout

    def read(name, like):
        return torch.from_numpy(np.fromfile(tmp_path / f"{name}.bin", dtype=np.float64)).view(like.shape)

    got = [read("grad_value", want[0]), read("grad_loc", want[1]), read("grad_w", want[2])]
    assert (read("out", want_out) - want_out).abs().max() <= 1e-10
    got[1][:, :10], want[1][:, :10] = 0, 0  # kinks at pixel centres: see test_ops_compiled
    for name, g, expected in zip(("value", "locations", "weights"), got, want, strict=True):
        assert (g - expected).abs().max() <= 1e-9 * (1 + expected.abs().max().item()), name
