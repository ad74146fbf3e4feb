"""Fine-tune a detector on a project's reviewed labels: the loop, its checkpoints, and the result.

    result = train(project, "IDEA-Research/grounding-dino-tiny", "models/cats-v1", TrainConfig(epochs=12))

The base model is read, never written: the result is a new directory in the transformers layout
(`gdino.weights.save.save_pretrained`) with a model card and `gdino_training.json` (data, settings, both mAPs).
While training, `OUT.partial/` holds a checkpoint after every epoch (`workdir.py`); after an interruption
the same command resumes from it, and the finished directory appears only at the end, whole.

Every batch is trained on every prompt chunk of the class list (a list longer than one prompt is split as
`Detector` splits it), so each image sees every class as a positive or a negative. The backbone and BERT
are frozen by default; frozen, they run in eval mode (no dropout), and with augmentation off the
backbone's feature maps of each image are computed once and reused every epoch (the fast path on CPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..processing import ImageError
from ..prompts import build_chunks, parse_classes
from ..store import Project
from .data import Augment, Batch, Example, ExampleSet, batches, examples_from_project, split_examples
from .evaluate import MapResult, evaluate_detector
from .loss import LossConfig, grounding_loss
from .settings import TrainConfig, TrainingError
from .targets import ChunkClasses, chunk_classes, chunk_target
from .workdir import CARD, WorkDir


@dataclass
class Progress:
    epoch: int  # 1-based
    epochs: int
    step: int  # within the epoch, 1-based
    steps: int
    loss: float  # this step's total loss
    images_per_s: float


@dataclass
class TrainResult:
    directory: Path
    base: MapResult | None  # validation mAP of the base model (None without validation images)
    tuned: MapResult | None
    first_loss: float  # mean loss of the first epoch
    last_loss: float  # mean loss of the last epoch
    epochs: int
    train_images: int
    val_images: int
    seconds: float


# ------------------------------------------------------------------------------------------- prompts

@dataclass(frozen=True)
class _Chunk:
    input_ids: torch.Tensor  # (1, N)
    classes: ChunkClasses


def _chunks(classes: tuple[str, ...], tokenizer, max_len: int) -> list[_Chunk]:
    prompt = parse_classes(list(classes))
    return [_Chunk(torch.tensor([chunk.input_ids]), chunk_classes(prompt, chunk, max_len))
            for chunk in build_chunks(prompt, tokenizer, max_len)]


# ------------------------------------------------------------------------------------------ features

class _FeatureCache:
    """Backbone feature maps per image (frozen backbone, no augmentation: the same every epoch), kept on the
    CPU as computed, up to a memory budget, so that a cached step equals an uncached one. Batches of images
    of one size only (no padding): each image's maps are then its own, whatever it is batched with."""

    def __init__(self, budget_bytes: float):
        self.budget = budget_bytes
        self.used = 0
        self.maps: dict[int, list[torch.Tensor]] = {}

    def get(self, model, batch: Batch) -> list[torch.Tensor]:
        if all(i in self.maps for i in batch.image_ids):
            parts = [self.maps[i] for i in batch.image_ids]
            return [torch.cat([p[level] for p in parts]).to(batch.pixel_values.device) for level in range(len(parts[0]))]
        with torch.no_grad():
            maps = model.backbone(batch.pixel_values.to(model.dtype))
        for k, image_id in enumerate(batch.image_ids):
            size = sum(m[k].numel() * m.element_size() for m in maps)
            if self.used + size <= self.budget:
                self.maps[image_id] = [m[k:k + 1].detach().cpu() for m in maps]
                self.used += size
        return maps


def _image_features(model, batch: Batch, cache: _FeatureCache | None):
    pixel_values = batch.pixel_values.to(model.device)
    pixel_mask = batch.pixel_mask.to(model.device)
    if cache is None:
        return model.encode_image(pixel_values, pixel_mask)
    b = replace(batch, pixel_values=pixel_values)
    return model.encode_maps(cache.get(model, b), pixel_mask)


# ---------------------------------------------------------------------------------------- the loop

def _parameter_groups(model, config: TrainConfig) -> list[dict]:
    slow, fast = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (slow if name.startswith(("backbone.", "bert.")) else fast).append(p)
    groups = [{"params": fast, "lr": config.lr, "base_lr": config.lr}]
    if slow:
        groups.append({"params": slow, "lr": config.lr_backbone, "base_lr": config.lr_backbone})
    return groups


def _freeze(model, config: TrainConfig) -> None:
    model.train()
    model.requires_grad_(True)  # load_model hands out a model for inference, gradients off
    for module, frozen in ((model.backbone, config.freeze_backbone), (model.bert, config.freeze_text)):
        module.requires_grad_(not frozen)
        if frozen:
            module.eval()  # no dropout in what is not trained: its outputs are fixed, and cacheable


def _fingerprint(base: str, config: TrainConfig, data: ExampleSet) -> str:
    """What a checkpoint was made from: resuming needs the same base, settings, classes and images."""
    facts = {"base": base, "config": asdict(config), "classes": data.classes,
             "images": [(e.name, e.boxes.tolist(), e.class_ids.tolist()) for e in data.examples]}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _is_trained(model, key: str) -> bool:
    frozen = tuple(p for p, m in (("backbone.", model.backbone), ("bert.", model.bert))
                   if not any(q.requires_grad for q in m.parameters()))
    return not key.startswith(frozen)


def train(project: Project | str | os.PathLike, base: str, out: str | os.PathLike, config: TrainConfig | None = None,
          *, device: str | torch.device | None = None, progress: Callable[[Progress], None] | None = None,
          log: Callable[[str], None] = lambda line: None, text_encoder: str | None = None,
          step_lock: contextlib.AbstractContextManager | None = None, images: Callable[[int], Path | str] | None = None,
          restart_other_run: bool = False, measuring: Callable[[str, int, int], None] | None = None) -> TrainResult:
    """Fine-tune `base` (hub id, directory or .pth, as gdino.load_model takes) on the project's reviewed images;
    write the result to the new directory `out`. Resumes from `out`.partial when it holds a checkpoint of the
    same run (same base, settings, classes, images and boxes); a checkpoint of another run is refused
    (restart_other_run: discarded, and the run starts over). Raises TrainingError (nothing to train on, `out`
    exists, another run's folder, the loss diverged, the disk is full).
    progress is called after every step; raising KeyboardInterrupt there stops the run as Ctrl-C does (the last
    finished epoch is kept). measuring is called after each validation image measured, with which model ("base" or
    "fine-tuned"), how many are done and of how many; raising KeyboardInterrupt there stops the run the same way
    (a measurement is not kept: it is made again on resuming). step_lock is held for each step and each image
    measured (the app shares its models' lock this way). images: image_id -> the checked file to read (the app's
    rules; see examples_from_project)."""
    from .. import Detector
    from ..weights.hub import load_model

    config = config or TrainConfig()
    config.check()
    loss_config = LossConfig(mode=config.loss_mode)
    start = time.monotonic()
    out = Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise TrainingError(f"{out} already exists; choose a new directory for the fine-tuned model (a model is "
                            "never overwritten)")
    own = isinstance(project, (str, os.PathLike))
    project = Project.open(project) if own else project
    try:
        data = examples_from_project(project, touched=config.touched, images=images)
        split = split_examples(data.examples, config.val_fraction, config.seed)
    finally:
        if own:
            project.close()
    fingerprint = _fingerprint(base, config, data)
    work = WorkDir(out).open()
    try:
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_model(base, text_encoder=text_encoder, device=device)
        chunks = _chunks(data.classes, model.tokenizer, model.config.max_text_len)
        log(f"{len(split.train)} training image(s), {len(split.val)} validation image(s), {len(data.classes)} "
            f"class(es) in {len(chunks)} prompt(s), on {device}")
        _freeze(model, config)
        optimizer = torch.optim.AdamW(_parameter_groups(model, config), weight_decay=config.weight_decay)
        first_epoch, losses, base_map = 0, [], None
        if work.has_checkpoint():
            if work.fingerprint() != fingerprint:
                if not restart_other_run:
                    raise TrainingError(f"{work.path} holds a checkpoint of another run (other images, boxes, classes "
                                        "or settings); delete it to start again, or choose another --out")
                log("the labels or settings changed since the stopped run: training starts again")
            else:
                saved = work.load(device)
                missing, unexpected = model.load_state_dict(saved["model"], strict=False)
                if unexpected or any(_is_trained(model, k) for k in missing):
                    raise TrainingError(f"{work.path}: the checkpoint does not fit this model; delete it to start again")
                optimizer.load_state_dict(saved["optimizer"])
                first_epoch, losses, base_map = int(saved["epoch"]), list(saved["losses"]), saved["base_map"]
                log(f"resuming after epoch {first_epoch} of {config.epochs}")

        def measure(what: str) -> MapResult:
            log(f"measuring the {what} model on the validation images ...")
            done = (lambda n, total: measuring(what, n, total)) if measuring is not None else None
            result = evaluate_detector(_Locked(Detector(model, image_size=config.image_size), step_lock), split.val,
                                       data.classes, progress=done)
            _freeze(model, config)
            return result

        base_result = None
        if split.val and base_map is None:
            base_result = measure("base")
            base_map = asdict(base_result)
        elif base_map is not None:
            base_result = MapResult(**base_map)
        losses = _epochs(model, optimizer, data, split, chunks, config, loss_config, work, fingerprint, base_map,
                         first_epoch, losses, device, progress, step_lock, log)
        tuned = measure("fine-tuned") if split.val else None
        result = TrainResult(out, base_result, tuned, losses[0] if losses else math.nan,
                             losses[-1] if losses else math.nan, config.epochs, len(split.train), len(split.val), 0.0)
        result.seconds = time.monotonic() - start
        _write_model(model.float().eval(), out, _record(project.path, base, config, data, split.train, split.val,
                                                        result))
        work.remove()
        return result
    finally:
        work.close()


class _Locked:
    """A Detector whose every detection holds `lock` (the app's models' lock), one image at a time."""

    def __init__(self, detector, lock):
        self.detector, self.lock = detector, lock

    def detect(self, *args, **kwargs):
        with self.lock or contextlib.nullcontext():
            return self.detector.detect(*args, **kwargs)


def _epochs(model, optimizer, data: ExampleSet, split, chunks, config: TrainConfig, loss_config: LossConfig,
            work: WorkDir, fingerprint: str, base_map, first_epoch: int, losses: list[float], device, progress,
            step_lock, log) -> list[float]:
    """The training epochs from first_epoch on, a checkpoint after each; returns the mean loss of every epoch."""
    augment = Augment() if config.augment else None
    cache = _FeatureCache(config.cache_gb * 2**30) if config.freeze_backbone and not config.augment else None
    drop_at = max(1, math.ceil(config.epochs * config.lr_drop)) if config.lr_drop < 1 else config.epochs + 1
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    trainable = [p for p in model.parameters() if p.requires_grad]
    epoch = first_epoch
    try:
        for epoch in range(first_epoch, config.epochs):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * (0.1 if epoch + 1 > drop_at else 1.0)
            epoch_losses = []
            steps = math.ceil(len(split.train) / config.batch_size) if cache is None else None
            tick = time.monotonic()
            seen = 0
            stream = batches(split.train, config.batch_size, augment=augment, seed=config.seed, epoch=epoch,
                             same_size=cache is not None, size=config.image_size)
            for step, batch in enumerate(_named_failures(stream), start=1):
                with step_lock or contextlib.nullcontext():
                    with autocast:
                        image = _image_features(model, batch, cache)
                        total = 0.0
                        for chunk in chunks:
                            ids = chunk.input_ids.to(device).expand(len(batch.image_ids), -1)
                            text = model.encode_text(ids, torch.ones_like(ids))
                            out_ = model.decode_train(image, text)
                            targets = [chunk_target(t.class_ids, t.boxes, chunk.classes) for t in batch.targets]
                            total = total + grounding_loss(out_, targets, chunk.classes.token_map, loss_config).total
                    value = float(total.detach())
                    if not math.isfinite(value):
                        raise TrainingError(f"the loss became {value} in epoch {epoch + 1}, step {step}: "
                                            "training diverged; train again with a lower learning rate")
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    torch.nn.utils.clip_grad_norm_(trainable, config.clip)
                    optimizer.step()
                epoch_losses.append(value)
                seen += len(batch.image_ids)
                if progress is not None:
                    progress(Progress(epoch + 1, config.epochs, step, steps or step, epoch_losses[-1],
                                      seen / max(time.monotonic() - tick, 1e-9)))
            losses.append(sum(epoch_losses) / max(len(epoch_losses), 1))
            trained = {k: v for k, v in model.state_dict().items() if _is_trained(model, k)}
            work.save({"model": trained, "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "losses": losses,
                       "base_map": base_map}, fingerprint)
    except KeyboardInterrupt:
        log(f"interrupted in epoch {epoch + 1}: the last finished epoch is kept in {work.path}; run the same command "
            "again to resume")
        raise
    return losses


def _named_failures(stream):
    """Batches, with an image that can no longer be read (deleted, swapped, changed meanwhile) said by name."""
    try:
        yield from stream
    except ImageError as err:
        raise TrainingError(f"{err}; fix or remove that image and train again (the last finished epoch is kept)") \
            from err


def _write_model(model, out: Path, record: dict) -> None:
    from ..weights.save import save_pretrained

    try:
        save_pretrained(model, out, extra_files={"README.md": _card(record),
                                                 CARD: json.dumps(record, indent=2)})
    except (OSError, RuntimeError) as err:
        raise TrainingError(f"could not write the fine-tuned model to {out} ({err}); is the disk full? The training "
                            "is kept: run the same command again to write it") from err


# ------------------------------------------------------------------------------------------ records

def _map_dict(result: MapResult | None) -> dict | None:
    return None if result is None else {"map": result.map, "map50": result.map50}


def _record(project_dir: Path, base: str, config: TrainConfig, data: ExampleSet, train_set: tuple[Example, ...],
            val_set: tuple[Example, ...], result: TrainResult) -> dict:
    return {
        "base_model": base, "project": project_dir.name, "classes": list(data.classes),
        "train_images": [e.name for e in train_set], "val_images": [e.name for e in val_set],
        "objects": data.report.objects, "settings": asdict(config),
        "loss": {"first_epoch": result.first_loss, "last_epoch": result.last_loss},
        "validation": {"base": _map_dict(result.base), "fine_tuned": _map_dict(result.tuned)},
        "seconds": round(result.seconds, 1),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _card(record: dict) -> str:
    v = record["validation"]
    rows = "\n".join(f"| {name} | {_fmt((v[key] or {}).get('map'))} | {_fmt((v[key] or {}).get('map50'))} |"
                     for name, key in (("base model", "base"), ("fine-tuned", "fine_tuned")))
    s = record["settings"]
    return (f"---\nlicense: apache-2.0\nbase_model: {record['base_model']}\npipeline_tag: zero-shot-object-detection\n"
            f"library_name: transformers\n---\n\n# Fine-tuned Grounding DINO ({record['project']})\n\n"
            f"Fine-tuned with gdino from `{record['base_model']}` on {len(record['train_images'])} reviewed image(s) "
            f"({record['objects']} boxes) of the project `{record['project']}`, classes: "
            f"{', '.join(record['classes'])}.\n\n"
            f"## Validation ({len(record['val_images'])} image(s) held out, COCO box mAP)\n\n"
            f"| model | mAP@[.5:.95] | mAP@0.5 |\n|---|---:|---:|\n{rows}\n\n"
            f"## Settings\n\nepochs {s['epochs']}, batch {s['batch_size']}, lr {s['lr']} (backbone/BERT "
            f"{s['lr_backbone']}), AdamW weight decay {s['weight_decay']}, gradient clip {s['clip']}, lr x0.1 after "
            f"{s['lr_drop']:.0%} of the epochs, backbone {'frozen' if s['freeze_backbone'] else 'trained'}, BERT "
            f"{'frozen' if s['freeze_text'] else 'trained'}, augmentation {'on' if s['augment'] else 'off'}, "
            f"loss mode {s['loss_mode']}, seed {s['seed']}. Loss per epoch: first {record['loss']['first_epoch']:.4f}, "
            f"last {record['loss']['last_epoch']:.4f}.\n\nLoads with `gdino.load_model(DIR)` and with transformers' "
            "`AutoModelForZeroShotObjectDetection.from_pretrained(DIR)`.\n")
