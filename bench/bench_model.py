"""gdino vs transformers' GroundingDinoForObjectDetection on the same weights, on this machine.

    python bench/bench_model.py [--size 800x1200] [--repeats 3] [--bf16] [--family gdino|mm] [--backbone swin_t|swin_b|swin_l]

--family mm: MM-Grounding-DINO instead (gdino's preset "mm_swin_t", per-layer heads) against transformers'
MMGroundingDinoForObjectDetection, on the same random weights. --backbone swin_b / swin_l: the base / large
architecture (swin_l: MM-Grounding-DINO large, five feature levels; --family mm only).

Builds a random full-size Swin-T Grounding DINO (the OGC architecture, BERT-base text encoder), saves it
in the transformers layout, checks that both implementations give the same outputs, then times each in
its own process (so peak memory is each one's own): per-image latency at 800x1200 with a 3-class
prompt, gdino's re-prompt latency (image features cached), gdino's batch throughput, and the
deformable-attention op alone (reference vs compiled) at the encoder's size. gdino keeps freed memory
for reuse (gdino/memory.py); two more rows run each side with the other's malloc setting, so that the
table shows how much of the gap that is. Prints a markdown table.
Random weights: speed and agreement are what is measured, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))
from timing import ENCODER_LEVELS, encoder_op_inputs, median_time, peak_mb  # noqa: E402

CAPTION = "cat . remote control . couch ."


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def inputs(tokenizer, h: int, w: int, batch: int = 1):
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, h, w, generator=g)
    enc = tokenizer([CAPTION] * batch, return_tensors="pt")
    return pixel_values, enc


# ------------------------------------------------------------------------------------ children

def transformers_class(mm: bool):
    from transformers import GroundingDinoForObjectDetection, MMGroundingDinoForObjectDetection

    return MMGroundingDinoForObjectDetection if mm else GroundingDinoForObjectDetection


def child_transformers(model_dir: str, h: int, w: int, repeats: int, mm: bool = False) -> dict:
    from tiny_models import make_tokenizer

    model = transformers_class(mm).from_pretrained(model_dir).eval()
    pixel_values, enc = inputs(make_tokenizer(), h, w)
    with torch.inference_mode():
        latency = median_time(lambda: model(pixel_values=pixel_values, **enc), repeats)
    return {"latency": latency, "peak_mb": peak_mb()}


def load_ours(model_dir: str, dtype: str):
    """gdino's model in `dtype` ("float32", "bfloat16"), or "fast": precision="fast" (gdino/modeling/precision.py)."""
    import gdino

    if dtype == "fast":
        return gdino.load_model(model_dir, precision="fast")
    return gdino.load_model(model_dir, dtype=getattr(torch, dtype))


def child_gdino(model_dir: str, h: int, w: int, repeats: int, dtype: str, forward_only: bool = False) -> dict:
    import numpy as np

    import gdino

    det = gdino.Detector(load_ours(model_dir, dtype), cache_size=4)
    model = det.model
    pixel_values, enc = inputs(model.tokenizer, h, w)
    result = {}
    with torch.inference_mode():
        result["latency"] = median_time(lambda: model(pixel_values, **enc), repeats)
        result["peak_mb"] = peak_mb()
        if forward_only:
            return result
        image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)  # resized to 800x1200 exactly
        det.detect(image, classes=["cat", "remote control", "couch"])  # fills the cache
        result["reprompt"] = median_time(lambda: det.detect(image, classes=["dog", "person", "car"]), repeats)
        det.clear_cache()
        result["detect"] = median_time(lambda: (det.clear_cache(), det.detect(image, classes=["cat", "dog", "car"])),
                                       repeats)
        batch = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8) for i in range(4)]
        t = median_time(lambda: (det.clear_cache(), det.detect_batch(batch, classes=["cat", "dog", "car"], batch_size=4)),
                        max(1, repeats - 1))
        result["batch4_images_per_s"] = 4 / t
    return result


def child_op(repeats: int) -> dict:
    from gdino.ops import compiled, ms_deform_attn_reference

    shapes = ENCODER_LEVELS
    value, loc, weights = encoder_op_inputs()
    spatial = value.shape[1]
    module = compiled.kernel("cpu")
    with torch.inference_mode():
        ref = median_time(lambda: ms_deform_attn_reference(value, shapes, loc, weights), repeats)
        out = {"queries": spatial, "reference": ref}
        if module is not None:
            out["compiled"] = median_time(lambda: compiled.run(module, value, shapes, loc, weights), repeats)
            diff = (compiled.run(module, value, shapes, loc, weights)
                    - ms_deform_attn_reference(value, shapes, loc, weights)).abs().max()
            out["max_diff"] = float(diff)
    return out


def agreement(model_dir: str, dtype: str = "float32", mm: bool = False) -> dict:
    """Both models on the same small input (transformers in float32, gdino in `dtype`): the fraction of
    queries within 1e-3, the median and the largest per-query difference."""
    from compare import fraction_within, per_query_error

    ours = load_ours(model_dir, dtype)
    theirs = transformers_class(mm).from_pretrained(model_dir).eval()
    pixel_values, enc = inputs(ours.tokenizer, 320, 480)
    with torch.inference_mode():
        a, b = theirs(pixel_values=pixel_values, **enc), ours(pixel_values, **enc)
    err = per_query_error(a.logits, a.pred_boxes, b.logits.float(), b.pred_boxes.float())
    finite = err[torch.isfinite(err)]
    return {"within_1e-3": fraction_within(err, 1e-3), "median_error": float(err.median()),
            "max_error": float(finite.max()) if finite.numel() else float("inf"),
            **detections_moved(a.logits[0], a.pred_boxes[0], b.logits[0].float(), b.pred_boxes[0].float())}


def detections_moved(logits_a, boxes_a, logits_b, boxes_b, top: int = 100) -> dict:
    """Order-free: for each of A's `top` highest-scoring queries (score: the best token's logit; random
    weights saturate the sigmoid), the query of B whose box overlaps it most. The fraction found at IoU >= 0.9
    and >= 0.5, and the median score change of those at >= 0.9. logits: (Q, T), boxes: (Q, 4) cxcywh in [0, 1]."""
    from torchvision.ops import box_convert, box_iou

    score_a, score_b = logits_a.amax(-1), logits_b.amax(-1)
    keep = score_a.topk(min(top, score_a.numel())).indices
    iou = box_iou(box_convert(boxes_a[keep], "cxcywh", "xyxy"), box_convert(boxes_b, "cxcywh", "xyxy"))
    best, match = iou.max(-1)
    close = best >= 0.9
    change = (score_a[keep][close] - score_b[match[close]]).abs()
    return {"top": int(keep.numel()), "iou90": float(close.float().mean()), "iou50": float((best >= 0.5).float().mean()),
            "score_change": float(change.median()) if change.numel() else float("nan"),
            "score_spread": float(score_a[keep].std())}


# -------------------------------------------------------------------------------------- parent

# what gdino.memory sets with mallopt, as glibc's environment tunables (for the peer's process)
KEEP_FREED = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647:glibc.malloc.arena_max=1"


def run_child(*args: str, env: dict | None = None, mm: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, *(["--family", "mm"] if mm else []), "--child", *args], capture_output=True,
                         text=True, check=False, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="800x1200", help="HxW of the model input")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time gdino in bfloat16")
    parser.add_argument("--family", choices=["gdino", "mm"], default="gdino",
                        help="mm: MM-Grounding-DINO (preset mm_swin_t) against MMGroundingDinoForObjectDetection")
    parser.add_argument("--backbone", choices=["swin_t", "swin_b", "swin_l"], default="swin_t",
                        help="the architecture's size (swin_l: MM-Grounding-DINO large, --family mm only)")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backbone == "swin_l" and args.family != "mm":
        parser.error("--backbone swin_l is MM-Grounding-DINO's large model: add --family mm")
    args.mm = args.family == "mm"
    h, w = (int(v) for v in args.size.split("x"))

    if args.child is not None:
        kind, *rest = args.child
        if kind == "transformers":
            result = child_transformers(rest[0], h, w, args.repeats, args.mm)
        elif kind == "gdino":
            result = child_gdino(rest[0], h, w, args.repeats, rest[1], forward_only="forward" in rest)
        elif kind == "op":
            result = child_op(args.repeats)
        else:
            result = agreement(rest[0], *rest[1:], mm=args.mm)
        print(json.dumps(result))
        return

    from tiny_models import make_hf_model, make_mm_hf_model, make_tokenizer, save_hf

    mm = args.mm
    with tempfile.TemporaryDirectory() as tmp:
        size = args.backbone
        hf = make_mm_hf_model(size, seed=0) if mm else make_hf_model(size, seed=0)
        model_dir = str(save_hf(hf, make_tokenizer(), Path(tmp) / size))
        del hf
        import gdino

        assert gdino.load_model(model_dir).config == gdino.preset(f"mm_{size}" if mm else size)
        agree = run_child("agree", model_dir, mm=mm)
        theirs = run_child("transformers", model_dir, mm=mm)
        ours = run_child("gdino", model_dir, "float32")
        # how much of the gap is malloc (gdino.memory): each with the other's setting
        theirs_keep = run_child("transformers", model_dir, env={"GLIBC_TUNABLES": KEEP_FREED}, mm=mm)
        ours_system = run_child("gdino", model_dir, "float32", "forward", env={"GDINO_MALLOC": "system"})
        fast = run_child("gdino", model_dir, "fast")
        agree_fast = run_child("agree", model_dir, "fast", mm=mm)
        ours16 = run_child("gdino", model_dir, "bfloat16") if args.bf16 else None
        agree16 = run_child("agree", model_dir, "bfloat16", mm=mm) if args.bf16 else None
        op = run_child("op")

    pretty = {"swin_t": "Swin-T", "swin_b": "Swin-B", "swin_l": "Swin-L"}[args.backbone]
    name = f"MM-Grounding-DINO {pretty} (gdino preset mm_{args.backbone} vs MMGroundingDinoForObjectDetection)" if mm \
        else f"Grounding DINO {pretty}"
    from gdino.modeling.precision import native_bfloat16

    print(f"{name} (random weights), input {h}x{w}, prompt {CAPTION!r}, {torch.get_num_threads()} threads,"
          f" median of {args.repeats}")
    print(f"CPU: {cpu_name()}; {torch.backends.cpu.get_cpu_capability()} kernels; bfloat16 units: "
          f"{'yes' if native_bfloat16() else 'no'}")
    print(f"same outputs: {agree['within_1e-3']:.1%} of queries within 1e-3 (median error {agree['median_error']:.1e})\n")
    print("| | transformers | gdino | gdino / transformers |")
    print("|---|---:|---:|---:|")
    ratio = ours["latency"] / theirs["latency"]
    print(f"| forward, 1 image (s) | {theirs['latency']:.2f} | {ours['latency']:.2f} | {ratio:.2f}x |")
    print(f"| forward, both keeping freed memory (s) | {theirs_keep['latency']:.2f} | {ours['latency']:.2f} | "
          f"{ours['latency'] / theirs_keep['latency']:.2f}x |")
    print(f"| forward, both with glibc's default malloc (s) | {theirs['latency']:.2f} | {ours_system['latency']:.2f} | "
          f"{ours_system['latency'] / theirs['latency']:.2f}x |")
    print(f"| peak memory (MB) | {theirs['peak_mb']:.0f} | {ours['peak_mb']:.0f} | {ours['peak_mb'] / theirs['peak_mb']:.2f}x |")
    print(f"| detect, 1 image, from pixels (s) | | {ours['detect']:.2f} | |")
    print(f"| re-prompt, cached image (s) | | {ours['reprompt']:.2f} | {ours['reprompt'] / ours['detect']:.2f}x of detect |")
    print(f"| detect_batch, 4 images (images/s) | | {ours['batch4_images_per_s']:.3f} | |")
    print(f"| forward, precision fast (s) | | {fast['latency']:.2f} | {fast['latency'] / theirs_keep['latency']:.2f}x "
          "(of keeping freed memory) |")
    print(f"| detect, 1 image, precision fast (s) | | {fast['detect']:.2f} | {fast['detect'] / ours['detect']:.2f}x of "
          "exact |")
    if ours16:
        print(f"| forward, bfloat16 (s) | | {ours16['latency']:.2f} | {ours16['latency'] / theirs['latency']:.2f}x |")
        print(f"| re-prompt, bfloat16 (s) | | {ours16['reprompt']:.2f} | |")
    line = f"\ndeformable attention alone ({op['queries']} queries, 4 levels, 8 heads, 4 points, 32 channels): " \
           f"reference {op['reference'] * 1000:.0f} ms"
    if "compiled" in op:
        speedup = op["reference"] / op["compiled"]
        line += f", compiled {op['compiled'] * 1000:.0f} ms ({speedup:.1f}x), max diff {op['max_diff']:.1e}"
    else:
        line += ", compiled kernel unavailable"
    print(line)
    if agree16:
        print(f"bfloat16 vs transformers float32: median per-query difference {agree16['median_error']:.2e}, "
              f"largest {agree16['max_error']:.2e} (logits and boxes, query by query)")
        print(f"order-free: of float32's top {agree16['top']} detections, {agree16['iou90']:.0%} have a bfloat16 box at "
              f"IoU >= 0.9 ({agree16['iou50']:.0%} at >= 0.5), their scores differ by a median "
              f"{agree16['score_change']:.2f} in the logits (their spread over the top {agree16['top']}: "
              f"{agree16['score_spread']:.2f})")
    print(f"float32 order-free check: {agree['iou90']:.0%} of the top {agree['top']} at IoU >= 0.9")
    print(f"precision fast vs transformers float32 (random weights): {agree_fast['within_1e-3']:.1%} of queries within "
          f"1e-3, median per-query difference {agree_fast['median_error']:.2e}; order-free, of float32's top "
          f"{agree_fast['top']} detections {agree_fast['iou90']:.0%} have a fast box at IoU >= 0.9 "
          f"({agree_fast['iou50']:.0%} at >= 0.5); random weights say little: bench/bench_fast_quality.py checks a "
          "trained model")


if __name__ == "__main__":
    main()
