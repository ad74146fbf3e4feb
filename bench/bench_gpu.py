"""gdino vs transformers' GroundingDinoForObjectDetection on a GPU, same weights, one process.

    python bench/bench_gpu.py [--size 800x1200] [--repeats 10] [--batches 1 8] [--family gdino|mm]

Builds a random full-size Swin-T Grounding DINO, saves it in the transformers layout and loads it with
both. Checks agreement in float32 (TF32 off), then times the forward of each in float32 and bfloat16
at each batch size (images/s and peak GPU memory), and the deformable-attention op alone at the
encoder's size, reference vs compiled, forward and forward+backward. Prints a markdown table.
`--device cpu --size 320x480 --repeats 1 --batches 1 2` is a smoke run of the script itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))
from timing import ENCODER_LEVELS, encoder_op_inputs, median_time  # noqa: E402

CAPTION = "cat . remote control . couch ."


def synced(fn, device: torch.device):
    def call():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out
    return call


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def inputs(tokenizer, h: int, w: int, batch: int, device, dtype):
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, h, w, generator=g).to(device, dtype)
    enc = {k: v.to(device) for k, v in tokenizer([CAPTION] * batch, return_tensors="pt").items()}
    return pixel_values, enc


def agreement(theirs, ours, tokenizer, device) -> dict:
    from compare import fraction_within, per_query_error

    pixel_values, enc = inputs(tokenizer, 320, 480, 1, device, torch.float32)
    with torch.inference_mode():
        a = theirs(pixel_values=pixel_values, **enc)
        b = ours(pixel_values, **enc)
    err = per_query_error(a.logits.cpu(), a.pred_boxes.cpu(), b.logits.cpu(), b.pred_boxes.cpu())
    return {"within_1e-3": fraction_within(err, 1e-3), "median": float(err.median())}


def time_forward(call, device, repeats: int) -> tuple[float | str, float | None]:
    """Seconds per call and peak memory (MB), or the error's first line if it fails (transformers in bf16)."""
    reset_peak(device)
    try:
        with torch.inference_mode():
            seconds = median_time(synced(call, device), repeats)
    except Exception as err:  # report, do not hide: the table says which run failed and why
        return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}", None
    return seconds, peak_mb(device)


def time_op(device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    from gdino.ops import compiled, ms_deform_attn_reference

    shapes = ENCODER_LEVELS
    value, loc, weights = encoder_op_inputs(device, dtype)  # locations and weights float32, as the model's
    module = compiled.kernel(device.type)
    # the reference wants one dtype throughout, as gdino.ops.ms_deform_attn gives it
    runs = {"reference": lambda v, s, lo, w: ms_deform_attn_reference(v, s, lo.to(v.dtype), w.to(v.dtype))}
    if module is not None:
        runs["compiled"] = lambda *a: compiled.run(module, *a)
    out = {}
    for name, op in runs.items():
        with torch.inference_mode():
            out[f"{name} forward"] = median_time(synced(lambda op=op: op(value, shapes, loc, weights), device), repeats)

        def train_step(op=op):
            leaves = [t.detach().requires_grad_(True) for t in (value, loc, weights)]
            op(leaves[0], shapes, leaves[1], leaves[2]).float().sum().backward()

        out[f"{name} forward+backward"] = median_time(synced(train_step, device), repeats)
    if module is None:
        out["note"] = f"compiled kernel unavailable: {compiled._state[device.type]['error']}"
    return out


def time_models(model_dir, tokenizer, device, h, w, batches, repeats, family="gdino") -> tuple[dict, list]:
    """Agreement in float32, then (dtype, batch, their s, their MB, our s, our MB) per dtype and batch."""
    from transformers import GroundingDinoForObjectDetection, MMGroundingDinoForObjectDetection

    import gdino

    oracle = MMGroundingDinoForObjectDetection if family == "mm" else GroundingDinoForObjectDetection
    theirs = oracle.from_pretrained(model_dir).eval().to(device)
    ours = gdino.load_model(model_dir, device=device)
    agree = agreement(theirs, ours, tokenizer, device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        theirs.to(dtype)
        ours.to(dtype)
        for batch in batches:
            pixel_values, enc = inputs(tokenizer, h, w, batch, device, dtype)
            t_theirs, m_theirs = time_forward(lambda: theirs(pixel_values=pixel_values, **enc), device, repeats)  # noqa: B023
            t_ours, m_ours = time_forward(lambda: ours(pixel_values, **enc), device, repeats)  # noqa: B023
            rows.append((dtype, batch, t_theirs, m_theirs, t_ours, m_ours))
    return agree, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="800x1200", help="HxW of the model input")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--family", choices=["gdino", "mm"], default="gdino",
                        help="mm: MM-Grounding-DINO (per-layer heads) against MMGroundingDinoForObjectDetection")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no GPU here (torch.cuda.is_available() is False); --device cpu for a smoke run")
    torch.backends.cuda.matmul.allow_tf32 = False  # agreement and float32 timings in true float32
    torch.backends.cudnn.allow_tf32 = False

    from tiny_models import make_hf_model, make_mm_hf_model, make_tokenizer, save_hf

    tokenizer = make_tokenizer()
    build = make_mm_hf_model if args.family == "mm" else make_hf_model
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(save_hf(build("swin_t", seed=0), tokenizer, Path(tmp) / "swin_t"))
        agree, rows = time_models(model_dir, tokenizer, device, h, w, args.batches, args.repeats, args.family)
    op = {dtype: time_op(device, dtype, args.repeats) for dtype in (torch.float32, torch.bfloat16)}

    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    title = "MM-Grounding-DINO" if args.family == "mm" else "Grounding DINO"
    print(f"{title} Swin-T (random weights) on {name}, input {h}x{w}, prompt {CAPTION!r}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, median of {args.repeats}")
    print(f"same outputs in float32: {agree['within_1e-3']:.1%} of queries within 1e-3 (median {agree['median']:.1e})\n")
    print("| dtype | batch | transformers (images/s) | gdino (images/s) | gdino speed-up | peak MB transformers / gdino |")
    print("|---|---:|---:|---:|---:|---:|")

    def rate(t, batch):
        return f"{batch / t:.2f}" if isinstance(t, float) else t

    for dtype, batch, t_theirs, m_theirs, t_ours, m_ours in rows:
        both = isinstance(t_theirs, float) and isinstance(t_ours, float)
        speedup = f"{t_theirs / t_ours:.2f}x" if both else ""
        memory = " / ".join(f"{m:.0f}" if m is not None else "-" for m in (m_theirs, m_ours))
        print(f"| {str(dtype).removeprefix('torch.')} | {batch} | {rate(t_theirs, batch)} | {rate(t_ours, batch)} | "
              f"{speedup} | {memory} |")
    print("\ndeformable attention alone (19,947 queries, 4 levels, 8 heads, 4 points, 32 channels), ms:")
    for dtype, result in op.items():
        cells = ", ".join(f"{k} {v * 1000:.2f}" if isinstance(v, float) else v for k, v in result.items())
        print(f"- {str(dtype).removeprefix('torch.')}: {cells}")


if __name__ == "__main__":
    main()
