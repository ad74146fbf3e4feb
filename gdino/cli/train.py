"""`gdino train`: fine-tune the detector on a project's reviewed images (gdino.train.trainer)."""

from __future__ import annotations

import argparse
import sys

from ..modeling.config import DEFAULT_MODEL
from .args import device_flag, fraction, para, positive_int, rate, whole


def add_parser(commands) -> None:
    from ..train.settings import TrainConfig

    d = TrainConfig()
    p = commands.add_parser(
        "train", help="fine-tune the detector on the project's reviewed images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Fine-tune Grounding DINO on the images of a project that a person marked reviewed, and "
                          "write the result as a new model directory (the base model is never changed). A held-out "
                          "part of the images measures both models (COCO mAP), printed side by side and stored in "
                          "the model card. Interrupted (Ctrl-C, a crash), the same command resumes from the last "
                          "finished epoch."),
        epilog="examples:\n"
               "  gdino train myproject --out models/cats-v1\n"
               "  gdino train myproject --out models/cats-v2 --epochs 24 --no-augment      # fast on a CPU\n"
               "  gdino label more/ --classes \"cat, dog\" --out myproject --model models/cats-v1\n\n"
               "exit codes: 0 trained, 2 usage errors or nothing to train on, 130 interrupted (run it again to "
               "resume)")
    p.add_argument("project", metavar="PROJECT", help="the project directory")
    p.add_argument("--out", required=True, metavar="DIR", help="a new directory for the fine-tuned model")
    p.add_argument("--model", default=None, metavar="BASE",
                   help="the model to start from: hub id, directory or .pth (default: the project's model in the app, "
                        f"else {DEFAULT_MODEL})")
    p.add_argument("--text-encoder", metavar="BERT", help="BERT directory or hub id for original .pth checkpoints")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, metavar="N", help=f"(default {d.epochs})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, metavar="N",
                   help=f"images per step (default {d.batch_size})")
    p.add_argument("--lr", type=rate, default=d.lr, help=f"learning rate (default {d.lr:g})")
    p.add_argument("--lr-backbone", type=rate, default=d.lr_backbone,
                   help=f"learning rate of the backbone and BERT when unfrozen (default {d.lr_backbone:g})")
    p.add_argument("--train-backbone", action="store_true", help="train the Swin backbone too (default: frozen)")
    p.add_argument("--train-text-encoder", action="store_true", help="train BERT too (default: frozen)")
    p.add_argument("--no-augment", action="store_true",
                   help="no random resizing or flips; with the backbone frozen, its features are then computed once "
                        "per image and reused (much faster on a CPU)")
    p.add_argument("--image-size", type=whole(64), default=d.image_size, metavar="PX",
                   help=f"shorter side of the images without augmentation, and where both models are measured "
                        f"(default {d.image_size}, the models' own; smaller is faster and misses small objects)")
    p.add_argument("--val-fraction", type=fraction, default=d.val_fraction, metavar="F",
                   help=f"images held out to measure both models (default {d.val_fraction})")
    p.add_argument("--touched", action="store_true",
                   help="also train on images a person edited but did not mark reviewed")
    p.add_argument("--seed", type=int, default=d.seed, help=f"for the split, the order and the augmentation "
                                                            f"(default {d.seed})")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.set_defaults(run=run)


class _Bar:
    """One line on stderr, rewritten in place on a terminal; one line per epoch elsewhere."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, p) -> None:
        done = p.step / max(p.steps, 1)
        bar = "#" * int(done * 20)
        line = (f"epoch {p.epoch}/{p.epochs} [{bar:<20}] step {p.step}/{p.steps} loss {p.loss:.4f} "
                f"{p.images_per_s:.2f} images/s")
        if self.tty:
            print("\r" + line, end="\n" if p.step == p.steps else "", file=self.stream, flush=True)
        elif p.step == p.steps:
            print(line, file=self.stream, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..store import Project
    from ..train.settings import TrainConfig
    from ..train.trainer import train

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_backbone=args.lr_backbone,
                         freeze_backbone=not args.train_backbone, freeze_text=not args.train_text_encoder,
                         augment=not args.no_augment, image_size=args.image_size, val_fraction=args.val_fraction, seed=args.seed,
                         touched=args.touched)
    device = device_flag(args.device)
    with Project.open(args.project) as project:
        base = args.model or _project_model(project) or DEFAULT_MODEL
        print(f"gdino train: base model {base}" + ("" if args.model else " (the project's model; --model to choose)"),
              file=sys.stderr)
        result = train(project, base, args.out, config, device=device, progress=_Bar(),
                       log=lambda line: print(f"gdino train: {line}", file=sys.stderr, flush=True),
                       text_encoder=args.text_encoder)
    print(f"fine-tuned model: {result.directory}")
    print(f"training loss: {result.first_loss:.4f} (first epoch) -> {result.last_loss:.4f} (last epoch)")
    if result.base is not None and result.tuned is not None:
        print(f"validation ({result.val_images} image(s)), COCO box mAP@[.5:.95] / mAP@0.5:")
        print(f"  base model  {_ap(result.base.map)} / {_ap(result.base.map50)}")
        print(f"  fine-tuned  {_ap(result.tuned.map)} / {_ap(result.tuned.map50)}")
    else:
        print("no validation images (--val-fraction 0, or one image): no mAP measured")
    return 0


def _project_model(project) -> str | None:
    """The model the app chose for the project: a hub id or a path as stored, or one of its own fine-tuned
    models ("models/NAME", inside the project)."""
    chosen = project.setting("model")
    if not isinstance(chosen, str) or not chosen:
        return None
    if chosen.startswith("models/"):
        local = project.path / chosen
        return str(local) if local.is_dir() and not local.is_symlink() else None
    return chosen


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
