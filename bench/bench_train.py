"""Fine-tuning, measured: what training buys on held-out images, and what a training step costs against
transformers' on the same batch.

    python bench/bench_train.py quality [--train 16] [--held-out 8] [--epochs 60] [--image-size 320]
    python bench/bench_train.py step [--device cuda] [--batch 4] [--size 800x1200] [--dtype bfloat16] [--repeats 5]

quality: a tiny random Grounding DINO fine-tuned (gdino.train.train, all of it trained) on synthetic
pictures of red squares and blue circles (tests/support/train_shapes.py), COCO mAP on pictures it never saw, before
and after, and the time per step. Random weights, so "before" is ~0: this shows the loop learns what
generalises, not what a published model gains.

step: one optimizer step of a random full-size Swin-T Grounding DINO, gdino (decode_train + grounding_loss in
"transformers" mode + AdamW) against GroundingDinoForObjectDetection(labels=...) + AdamW, same weights, same
batch (pixel values, one prompt, 3 boxes per image), backbone and BERT frozen in both (the fine-tuning
default), bfloat16 autocast on CUDA; median seconds per step, images/s and peak GPU memory. The first
step's losses are printed side by side but differ: in train mode transformers applies dropout 0.1 (its
config default), while our model, like the original configs (dropout 0.0), has none.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))
from timing import median_time  # noqa: E402

CAPTION = "cat . remote control . couch ."


def quality(args) -> None:
    import numpy as np
    from tiny_models import make_hf_model, make_tokenizer, save_hf
    from train_shapes import CLASSES, draw, shapes_project

    import gdino
    from gdino.store import ObjectState, Project
    from gdino.train import TrainConfig, train
    from gdino.train.data import examples_from_project
    from gdino.train.evaluate import evaluate_detector

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = save_hf(make_hf_model("tiny", seed=0), make_tokenizer(), tmp / "base")
        project = shapes_project(tmp / "train", n=args.train, seed=0)
        held = Project.create(tmp / "held", CLASSES)
        rng = np.random.default_rng(12345)
        for i in range(args.held_out):
            image, objects = draw(rng)
            image_id = held.add_image(image, name=f"held{i}.png").id
            held.edit_objects(image_id, new=[ObjectState(o["class_name"], o["box"], o.get("score"), mask=o.get("mask"))
                                             for o in objects])
            held.set_status(image_id, "reviewed")
        config = TrainConfig(epochs=args.epochs, batch_size=2, lr=5e-4, lr_backbone=5e-4, freeze_backbone=False,
                             freeze_text=False, augment=False, image_size=args.image_size, val_fraction=0.0,
                             lr_drop=0.8)
        steps = []
        t = time.perf_counter()
        result = train(project, str(base), tmp / "tuned", config, progress=lambda p: steps.append(p))
        seconds = time.perf_counter() - t
        held_examples = examples_from_project(held).examples
        train_examples = examples_from_project(project).examples
        rows = []
        for name, model_dir in (("base (random)", base), ("fine-tuned", result.directory)):
            det = gdino.Detector(gdino.load_model(model_dir), image_size=args.image_size)
            rows.append((name, evaluate_detector(det, train_examples, CLASSES),
                         evaluate_detector(det, held_examples, CLASSES)))
    print(f"tiny random Grounding DINO, {args.train} training / {args.held_out} held-out synthetic pictures, "
          f"{args.epochs} epochs at {args.image_size} px, {torch.get_num_threads()} threads")
    print(f"{len(steps)} steps of 2 images in {seconds:.1f} s ({seconds / max(len(steps), 1):.3f} s per step, "
          f"evaluation and saving included); loss per epoch {result.first_loss:.1f} -> {result.last_loss:.2f}\n")
    print("| model | train mAP@0.5 | held-out mAP@0.5 | held-out mAP@[.5:.95] |")
    print("|---|---:|---:|---:|")
    for name, on_train, on_held in rows:
        print(f"| {name} | {on_train.map50:.3f} | {on_held.map50:.3f} | {on_held.map:.3f} |")


def step(args) -> None:
    from tiny_models import make_hf_model, make_tokenizer, save_hf
    from transformers import GroundingDinoForObjectDetection

    import gdino
    from gdino.prompts import build_chunks, parse_classes
    from gdino.train import LossConfig, chunk_classes, chunk_target, grounding_loss

    device = torch.device(args.device)
    h, w = (int(v) for v in args.size.split("x"))
    tokenizer = make_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_hf(make_hf_model("swin_t", seed=0), tokenizer, Path(tmp) / "swin_t")
        theirs = GroundingDinoForObjectDetection.from_pretrained(model_dir).to(device)
        ours = gdino.load_model(model_dir, device=device)
    theirs.train()
    ours.train()
    ours.requires_grad_(True)
    for module in (ours.backbone, ours.bert):
        module.requires_grad_(False)
    for name, p in theirs.named_parameters():
        p.requires_grad_(not name.startswith(("model.backbone.", "model.text_backbone.")))

    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(args.batch, 3, h, w, generator=g).to(device)
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2], [0.5, 0.7, 0.4, 0.3]])
    classes = torch.tensor([0, 1, 2])
    labels = [{"class_labels": classes.to(device), "boxes": boxes.to(device)} for _ in range(args.batch)]
    enc = {k: v.to(device) for k, v in tokenizer([CAPTION] * args.batch, return_tensors="pt").items()}
    prompt = parse_classes(["cat", "remote control", "couch"])
    [chunk] = build_chunks(prompt, tokenizer)
    token_map = chunk_classes(prompt, chunk).token_map
    targets = [chunk_target(classes, boxes, chunk_classes(prompt, chunk)) for _ in range(args.batch)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def make_step(model, loss_of):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def one():
            with autocast:
                loss = loss_of()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 0.1)
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return float(loss.detach())
        return one

    def theirs_loss():
        return theirs(pixel_values=pixel_values, **enc, labels=labels).loss

    def ours_loss():
        image = ours.encode_image(pixel_values)
        text = ours.encode_text(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        return grounding_loss(ours.decode_train(image, text), targets, token_map, LossConfig(mode="transformers",
                                                                                               aux_loss=False)).total

    rows = []
    for name, model, loss_of in (("transformers", theirs, theirs_loss), ("gdino", ours, ours_loss)):
        one = make_step(model, loss_of)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        first = one()
        seconds = median_time(one, args.repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        rows.append((name, first, seconds, peak))
        model.to("cpu")  # the other one gets the device's memory to itself
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"one training step, random Swin-T Grounding DINO, batch {args.batch} x {h}x{w}, {args.dtype}, "
          f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"backbone and BERT frozen, AdamW, median of {args.repeats}\n")
    print("| | first loss | s / step | images / s | peak memory (GB) |")
    print("|---|---:|---:|---:|---:|")
    for name, first, seconds, peak in rows:
        print(f"| {name} | {first:.4f} | {seconds:.3f} | {args.batch / seconds:.2f} | "
              f"{'-' if peak is None else f'{peak:.1f}'} |")
    print(f"\ngdino / transformers time per step: {rows[1][2] / rows[0][2]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--train", type=int, default=16)
    q.add_argument("--held-out", type=int, default=8)
    q.add_argument("--epochs", type=int, default=60)
    q.add_argument("--image-size", type=int, default=320)
    s = sub.add_parser("step")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--batch", type=int, default=4)
    s.add_argument("--size", default="800x1200")
    s.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    s.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    quality(args) if args.what == "quality" else step(args)


if __name__ == "__main__":
    main()
