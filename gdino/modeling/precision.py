"""How a loaded model computes: "exact" (its dtype as loaded: float32 gives transformers' outputs) or "fast".

fast, on a CPU: the linear layers that carry most of the work (Swin's, the encoder's and decoder's feed-forward
and attention projections) multiply in a smaller type: bfloat16 where the CPU has bfloat16 units (AMX or
AVX512-BF16, read at run time: gdino/modeling/bf16_linear.py), else int8 weights with the input quantized on
the fly, per tensor (dynamic quantization, fbgemm). Everything that places a box stays float32: the deformable
attention's sampling offsets and weights, the reference-point head, the box and class heads, the query
selection's projection, the fusion attention (which reads its weights directly), the text side (BERT, its
projection, the text layers). Speed: bench/bench_model.py; quality on a trained model: bench/bench_fast_quality.py.
fast, on CUDA: bfloat16 (the tensor cores' type), as `dtype=torch.bfloat16`.

The one place that says what "fast" means (make_fast_on_cpu changes the model it is given; the rest only read).
torch is imported when a model is made fast, not before (the command line reads PRECISIONS and native_bfloat16
before it loads anything).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

PRECISIONS = ("exact", "fast")

# module names (a part of the dotted path) whose linear layers stay float32 in fast mode: they place boxes
KEEP_FLOAT = ("sampling_offsets", "attention_weights", "ref_point_head", "bbox_embed", "enc_out_bbox_embed",
              "enc_output", "fusion_layers", "text_layers", "bert", "feat_map")


def default_precision(device_type: str) -> str:
    """What the app and `gdino label` run when no precision is asked for: "fast" on a CPU, where its check on a
    trained model holds (bench/bench_fast_quality.py: held-out mAP@0.5 0.793 exact, 0.793 bfloat16, 0.794 int8;
    every kept box matched at IoU >= 0.9 on every picture), "exact" on CUDA (bfloat16 there is not checked on a
    trained model yet). The Python API (load_model, Detector.from_pretrained) stays "exact" unless asked."""
    return "exact" if device_type == "cuda" else "fast"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@functools.lru_cache(maxsize=4)
def native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux);
    False where that cannot be read. Without it, PyTorch emulates bfloat16 and a forward is several times slower
    than float32 (6x measured on an AVX2-only EPYC)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def quantized_linear_names(model: nn.Module) -> list[str]:
    """The linear layers fast mode runs in bfloat16 or int8 on a CPU (all but KEEP_FLOAT's)."""
    from torch import nn

    return [name for name, m in model.named_modules()
            if type(m) is nn.Linear and not any(part in KEEP_FLOAT for part in name.split("."))]


FAST_KINDS = ("bfloat16", "int8")


def make_fast_on_cpu(model: nn.Module, kind: str | None = None) -> nn.Module:
    """In place, on a float32 model on the CPU: `quantized_linear_names(model)` become bfloat16 products
    (kind "bfloat16"; Bfloat16Linear) or int8 dynamic quantized ones (kind "int8"). kind None: bfloat16 where
    this CPU has bfloat16 units, else int8 (on a 2-core Xeon with AMX, bfloat16 measured ~7% faster than int8:
    bench/bench_model.py). Returns the model; its `precision` is "fast" and `fast_kind` the kind."""
    import torch

    kind = kind or ("bfloat16" if native_bfloat16() else "int8")
    if kind not in FAST_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FAST_KINDS)}, got {kind!r}")
    names = set(quantized_linear_names(model))
    if not names:
        raise ValueError("this model has no linear layers to quantize")
    if kind == "bfloat16":
        from .bf16_linear import Bfloat16Linear
        from .deform_attn import MSDeformAttn

        modules = dict(model.named_modules())
        for name in sorted(names):
            parent, _, leaf = name.rpartition(".")
            owner = modules[parent] if parent else model
            # answers kept in bfloat16 where the next reader takes bfloat16 anyway: the deformable attention's
            # values (it accumulates in float32), and the first layer of each feed-forward, whose ReLU / GELU
            # output the second layer rounds to bfloat16 (the (20,000 x 2048) hidden, cast twice less per layer).
            # The same numbers either way: tests/model/test_precision.py checks the outputs are bit-identical.
            keep = (leaf == "value_proj" and isinstance(owner, MSDeformAttn)) or leaf in ("linear1", "fc1")
            setattr(owner, leaf, Bfloat16Linear(modules[name], keep_bfloat16=keep))
    else:
        if "fbgemm" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "fbgemm"  # x86; elsewhere PyTorch's default (qnnpack on ARM)
        with warnings.catch_warnings():  # torch.ao.quantization's notice that it moves to torchao
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
    model.precision, model.fast_kind = "fast", kind
    return model


def fast_quantized_count(model: nn.Module) -> int:
    """How many of the model's linear layers run in fast mode's smaller type, bfloat16 or int8 (0: an exact
    model)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from .bf16_linear import Bfloat16Linear

    return sum(isinstance(m, (DynamicLinear, Bfloat16Linear)) for m in model.modules())


def describe_precision(model: nn.Module) -> str:
    """One line for a status line or a log: "exact (float32)", "fast (int8 weights in 111 of 271 linear layers,
    the rest float32)", "fast (bfloat16 products in 111 of 271 ...)", "fast (bfloat16)" (CUDA)."""
    from torch import nn

    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if getattr(model, "precision", "exact") != "fast":
        return f"exact ({dtype})"
    quantized = fast_quantized_count(model)
    if not quantized:
        return f"fast ({dtype})"
    total = quantized + sum(type(m) is nn.Linear for m in model.modules())
    what = "bfloat16 products" if getattr(model, "fast_kind", "int8") == "bfloat16" else "int8 weights"
    return f"fast ({what} in {quantized} of {total} linear layers, the rest {dtype})"
