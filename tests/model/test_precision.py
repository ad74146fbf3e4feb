"""precision="fast" (issue 28): which layers it changes, which it never touches, what it refuses, and what it
says. Its quality on a trained model: tests/train/test_fast_mode_quality.py; its speed: bench/bench_model.py."""

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

import gdino
from gdino.modeling.bf16_linear import Bfloat16Linear
from gdino.modeling.precision import (
    KEEP_FLOAT,
    describe_precision,
    fast_quantized_count,
    make_fast_on_cpu,
    native_bfloat16,
    quantized_linear_names,
)

LAYER = {"int8": DynamicLinear, "bfloat16": Bfloat16Linear}


@pytest.fixture(scope="module", params=["int8", "bfloat16"])
def exact_and_fast(tiny_hf, request):
    """The tiny model exact, and fast of each kind (whatever this CPU has: bfloat16 is emulated without units)."""
    return gdino.load_model(tiny_hf[1]), make_fast_on_cpu(gdino.load_model(tiny_hf[1]), request.param)


def test_fast_runs_the_heavy_layers_in_a_smaller_type_and_keeps_every_box_placing_one_float(exact_and_fast):
    exact, fast = exact_and_fast
    planned = quantized_linear_names(exact)
    assert exact.precision == "exact" and fast_quantized_count(exact) == 0
    assert fast.precision == "fast" and fast_quantized_count(fast) == len(planned) > 0
    modules = dict(fast.named_modules())
    for name in planned:
        assert isinstance(modules[name], LAYER[fast.fast_kind]), name
    kept = [n for n, m in fast.named_modules() if type(m) is nn.Linear]
    for part in ("sampling_offsets", "attention_weights", "ref_point_head", "bbox_embed", "enc_output", "bert"):
        assert any(part in n.split(".") for n in kept), part  # the tiny model has them all, and they stay float
    assert not [n for n in planned if set(n.split(".")) & set(KEEP_FLOAT)]
    # the Swin blocks, the encoder's and decoder's feed-forward and value / output projections are int8
    for expected in ("backbone.layers.0.blocks.0.mlp.fc1", "transformer.encoder.layers.0.linear1",
                     "transformer.encoder.layers.0.self_attn.value_proj", "transformer.decoder.layers.0.linear2"):
        assert expected in planned, expected
    assert all(p.dtype == torch.float32 for p in fast.parameters())  # (bfloat16 weights are the layers' buffers)


def test_fast_runs_the_same_forward_and_stays_near_exact_on_random_weights(exact_and_fast, tokenizer):
    exact, fast = exact_and_fast
    pixels = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    enc = tokenizer(["cat . dog ."], return_tensors="pt")
    with torch.inference_mode():
        a, b = exact(pixels, **enc), fast(pixels, **enc)
    assert a.pred_boxes.shape == b.pred_boxes.shape and b.pred_boxes.dtype == torch.float32
    real = torch.isfinite(a.logits)  # -inf past the prompt's tokens, in both
    assert torch.equal(torch.isfinite(b.logits), real) and torch.isfinite(b.pred_boxes).all()
    assert not torch.equal(a.logits[real], b.logits[real])  # it does compute otherwise
    # the weights are random (the trained model's check is the real one), and the query selection may pick the
    # queries in another order: each exact box's nearest fast box, order-free, loosely
    nearest = torch.cdist(a.pred_boxes[0], b.pred_boxes[0], p=1).min(dim=1).values
    assert nearest.median() < 0.01, nearest.median()


def test_fast_chooses_the_dtype_and_refuses_a_wrong_name(tiny_hf):
    with pytest.raises(ValueError, match="precision must be one of exact, fast, got 'quick'"):
        gdino.load_model(tiny_hf[1], precision="quick")
    with pytest.raises(ValueError, match="precision='fast' chooses the dtype itself"):
        gdino.load_model(tiny_hf[1], precision="fast", dtype=torch.bfloat16)
    detector = gdino.Detector.from_pretrained(tiny_hf[1], device="cpu", precision="fast")
    assert detector.model.precision == "fast"  # the kind this CPU measured faster: bfloat16 with units, else int8
    assert detector.model.fast_kind == ("bfloat16" if native_bfloat16() else "int8")
    with pytest.raises(ValueError, match="kind must be one of bfloat16, int8, got 'fp8'"):
        make_fast_on_cpu(gdino.load_model(tiny_hf[1]), "fp8")


def test_the_status_words(exact_and_fast, tiny_hf):
    exact, fast = exact_and_fast
    assert describe_precision(exact) == "exact (float32)"
    n = fast_quantized_count(fast)
    total = n + sum(type(m) is nn.Linear for m in fast.modules())
    what = {"int8": "int8 weights", "bfloat16": "bfloat16 products"}[fast.fast_kind]
    assert describe_precision(fast) == f"fast ({what} in {n} of {total} linear layers, the rest float32)"
    assert describe_precision(gdino.load_model(tiny_hf[1], dtype=torch.bfloat16)) == "exact (bfloat16)"


def test_bfloat16_units_are_read_from_the_cpus_flags(tmp_path):
    with_units = tmp_path / "amx"
    with_units.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    avx512_bf16 = tmp_path / "avx512"
    avx512_bf16.write_text("flags\t: fpu avx2 avx512f avx512_bf16\n")
    without = tmp_path / "epyc"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff\xfe flags \x00")
    assert native_bfloat16(str(with_units)) and native_bfloat16(str(avx512_bf16))
    assert not native_bfloat16(str(without))
    assert not native_bfloat16(str(garbage)) and not native_bfloat16(str(tmp_path / "missing"))


def test_answers_kept_in_bfloat16_change_no_output(tiny_hf, tokenizer):
    """Fast bfloat16 hands the deformable attention its values, and each feed-forward's second layer its hidden,
    in bfloat16 (fewer casts, half the bytes): the same numbers they would read after a cast to float32 and back,
    so the outputs are bit-identical."""
    kept = make_fast_on_cpu(gdino.load_model(tiny_hf[1]), "bfloat16")
    cast = make_fast_on_cpu(gdino.load_model(tiny_hf[1]), "bfloat16")
    values = [m for n, m in cast.named_modules() if n.endswith((".value_proj", ".linear1", ".fc1"))
              and isinstance(m, Bfloat16Linear)]
    assert {n.rsplit(".", 1)[-1] for n, m in cast.named_modules() if getattr(m, "keep_bfloat16", False)} == {
        "value_proj", "linear1", "fc1"}
    assert values and all(m.keep_bfloat16 for m in values)
    for m in values:
        m.keep_bfloat16 = False
    pixels = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    enc = tokenizer(["cat . dog ."], return_tensors="pt")
    with torch.inference_mode():
        a, b = kept(pixels, **enc), cast(pixels, **enc)
    assert torch.equal(a.pred_boxes, b.pred_boxes) and torch.equal(a.logits, b.logits)
    assert a.pred_boxes.dtype == torch.float32


def test_a_fast_model_is_never_saved(exact_and_fast, tmp_path):
    from gdino.weights.save import save_pretrained

    _, fast = exact_and_fast
    with pytest.raises(ValueError, match="loaded with precision='fast'.*load it with precision='exact' to save it"):
        save_pretrained(fast, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fast_without_the_compiled_kernel_finds_what_fast_with_it_finds(tiny_hf, monkeypatch):
    """Where no C++ compiler builds the kernel, fast mode (the CPU default) runs the PyTorch reference in
    bfloat16: it must find what the compiled kernel finds (it found nothing before: NaN from torch's bfloat16
    grid_sample on a non-contiguous map)."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    det = gdino.Detector(make_fast_on_cpu(gdino.load_model(tiny_hf[1]), "bfloat16"))
    with_kernel = det.detect(image, classes=["cat", "remote control"], box_threshold=0.05)
    monkeypatch.setenv("GDINO_MSDA", "reference")
    det.clear_cache()
    without = det.detect(image, classes=["cat", "remote control"], box_threshold=0.05)
    assert len(with_kernel) > 5
    assert abs(len(without) - len(with_kernel)) <= max(2, len(with_kernel) // 10)
    assert np.isfinite(without.confidence).all() and np.isfinite(without.xyxy).all()
