"""`gdino label`: add images to a project and auto-label the ones still unlabeled, resumably.

The flags become typed settings here (LabelSettings, DetectorSpec / SegmenterSpec, RayOptions) and the run
is the labeling package's: plan_sources -> add_planned -> label_plain or label_on_ray_driver; this module
prints what happened. Exit codes: 0 all fine, 1 some image failed, 2 usage or model errors, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..formats.export import FORMATS
from ..labeling import LabelSettings, parse_class_text
from ..labeling.inputs import find_images
from ..labeling.loading import DTYPES, DetectorSpec, SegmenterSpec
from ..labeling.plan import plan_sources
from ..labeling.ray_session import RayOptions
from ..labeling.run import LabelRun, add_planned, label_plain
from ..modeling.config import DEFAULT_MODEL
from ..modeling.precision import PRECISIONS, default_precision, describe_precision, native_bfloat16
from ..prompts import PromptError, parse_classes
from ..sam.catalog import CPU_DEFAULT as SAM_CPU_DEFAULT
from ..sam.catalog import CUDA_DEFAULT as SAM_CUDA_DEFAULT
from ..sam.catalog import NAMES as SAM_NAMES
from ..sam3 import BOX_THRESHOLD as SAM3_BOX_THRESHOLD
from ..store import DB_NAME, Project
from .args import UsageError, add_split_flags, device_flag, nonnegative, para, positive_int, results_folder, unit
from .bars import Bars
from .export import export_project


def _iou_or_off(text: str) -> float | None:
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        return unit(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an IoU between 0 and 1 nor 'off'") from None


def add_parser(commands) -> None:
    defaults = LabelSettings()
    p = commands.add_parser(
        "label", help="auto-label images into a project", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=para("Add images to a project (created if missing) and auto-label the ones still unlabeled. "
                    "Resumable: a re-run adds only new files and labels only images still unlabeled; files "
                    "that failed before are tried again. Unreadable images are reported and skipped."),
        epilog="examples:\n"
               "  gdino label photos/ --classes \"cat, remote control\" --out myproject\n"
               "  gdino label 'shots/**/*.jpg' --classes \"car: car, automobile; person\" --out cars --sam default\n"
               "  gdino label photos/ --prompt \"a cat on a red couch\" --out proj --export coco --export-dir coco/\n"
               "  gdino label --classes cat --out myproject     # label the images already in the project\n"
               "  gdino label photos/ --classes cat --out myproject --engine ray --actors 2   # on Ray (gdino[ray])\n\n"
               "exit codes: 0 all fine, 1 some images failed, 2 usage or model errors, 130 interrupted "
               "(run it again to resume)")
    p.add_argument("images", nargs="*", metavar="IMAGES",
                   help="image files, folders (searched recursively), glob patterns (quote them: 'a/**/*.png') or "
                        "object-store URIs (s3://bucket/photos/: referenced, not copied; credentials from the "
                        "environment); none: label the project's unlabeled images")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--classes", help="class names as in the app: \"cat, remote control\", or with synonyms "
                                        "\"car: car, automobile; person\"")
    what.add_argument("--prompt", help="free text instead of classes; the phrases found become classes")
    p.add_argument("--out", required=True, metavar="PROJECT_DIR", help="the project directory (created if missing)")
    p.add_argument("--sam", default="none", metavar="NAME|PATH|none",
                   help="also segment each box with SAM: a name (" + ", ".join(SAM_NAMES) + ", or sam3: SAM 3's "
                        f"interactive head, gated; 'default' is {SAM_CPU_DEFAULT} on CPU, {SAM_CUDA_DEFAULT} on CUDA), "
                        "a SAM 1 .pth, SAM 2.1 .pt or SAM 3 sam3.pt file, a model folder (facebook/sam3's included), "
                        "or none (the default: boxes only). The embeddings are kept in the project "
                        "(.cache/sam), so that clicks in review on these images run only SAM's decoder")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"hub id, local directory or .pth file (default: {DEFAULT_MODEL}); `gdino models` lists the "
                        "recommended checkpoints with their published accuracy")
    p.add_argument("--text-encoder", metavar="BERT", help="BERT directory or hub id for original .pth checkpoints")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="float32 (the default), bfloat16 (fast only on CUDA and on CPUs with bfloat16 units), float16 "
                        "(CUDA only)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="fast (the default on a CPU, without --dtype): the heavy layers multiply in bfloat16 where "
                        "the CPU has bfloat16 units, else with int8 weights; the box-placing ones stay float32 "
                        "(checked on a trained model: the same mAP, the same boxes). exact (the default on CUDA or "
                        "with --dtype): float32, transformers' outputs. fast on CUDA is bfloat16")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="images per model call (default: 1)")
    p.add_argument("--box-threshold", type=unit, default=None, metavar="T",
                   help=f"keep boxes scoring above this (default: {defaults.box_threshold}; with a SAM 3 --model, "
                        f"SAM 3's own {SAM3_BOX_THRESHOLD})")
    p.add_argument("--text-threshold", type=unit, default=defaults.text_threshold, metavar="T",
                   help=f"--prompt only: words scoring above this join a phrase (default: {defaults.text_threshold})")
    p.add_argument("--nms-iou", type=_iou_or_off, default=defaults.nms_iou, metavar="IOU|off",
                   help=f"merge boxes of one class that overlap more than this (default: {defaults.nms_iou})")
    p.add_argument("--cross-class-nms-iou", type=_iou_or_off, default=defaults.agnostic_nms_iou, metavar="IOU|off",
                   help="also merge boxes of different classes that overlap more than this, keeping the higher "
                        "score, for near classes such as car / truck (default: off)")
    p.add_argument("--copy", action=argparse.BooleanOptionalAction, default=True,
                   help="copy images into the project (default), or --no-copy to reference them where they are")
    p.add_argument("--add-removed", action="store_true",
                   help="also add back files whose images were removed from the project (gdino rm, the app); "
                        "by default a re-run leaves them out")
    p.add_argument("--export", choices=FORMATS, help="after labeling, export the project in this format")
    p.add_argument("--export-dir", metavar="DIR", help="where --export writes")
    p.add_argument("--overwrite", action="store_true", help="let --export replace a non-empty --export-dir whole")
    add_split_flags(p)
    _add_ray_flags(p)
    p.set_defaults(run=run)


def _add_ray_flags(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group("on Ray (pip install \"gdino[ray]\")", "detection on a Ray actor pool, locally or on a "
                               "cluster; this process stays the only writer of the project")
    ray.add_argument("--engine", choices=("plain", "ray"), default="plain",
                     help="plain: in this process (default); ray: on Ray Data actors")
    ray.add_argument("--address", metavar="auto|ray://HOST:10001",
                     help="join this Ray cluster (default: start a private local Ray for the run)")
    ray.add_argument("--actors", type=positive_int, metavar="N", help="model copies, each loaded once (default: 1)")
    ray.add_argument("--cpus-per-actor", type=nonnegative, metavar="C",
                     help="CPUs (and torch threads) per actor (default: this machine's CPUs shared by the actors; "
                          "1 on a cluster)")
    ray.add_argument("--gpus-per-actor", type=nonnegative, metavar="G", help="GPUs per actor, e.g. 1 or 0.5 (default: 0)")
    ray.add_argument("--results", metavar="DIR|URI",
                     help="the actors write results as Parquet shards here instead of into the project; "
                          "then `gdino import-results DIR --into PROJECT`. A re-run skips the images DIR holds")
    ray.add_argument("--verbose", action="store_true", help="show Ray's own progress bars and logs")


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)  # the classes are checked before anything is loaded or written
    if args.export and not args.export_dir:
        raise UsageError("--export needs --export-dir DIR")
    ray = _ray_options(args)  # None: the plain engine
    out = Path(args.out).expanduser().resolve()
    sources = find_images(args.images, exclude=out)
    project = Project.open(out) if (out / DB_NAME).is_file() else None
    if not args.images and project is None:
        raise UsageError(f"{out} is not a project yet: name the images to label (files, folders or glob patterns)")
    try:
        plan = plan_sources(project, sources, add_removed=args.add_removed)
        if plan.removed:
            print(f"left out {plan.removed} file(s) removed from the project earlier (gdino rm or the app); "
                  "--add-removed adds them again")
        if not plan.todo:
            print(f"nothing to do: no unlabeled images; {plan.done} image(s) already labeled or skipped in {out}")
            return _export_after(project, args) if args.export else 0
        detector, segmenter = _load_models(args)  # with Ray too: a bad --model or --sam is exit code 2, before any write
        settings = _for_model(settings, detector, args)
        _check_prompt(detector, settings)  # words the model's tokenizer does not know: before any file is copied
        if ray is not None:
            del detector, segmenter  # the actors load their own
        if project is None:
            project = Project.create(out, exist_ok=True)
        run = LabelRun()
        bars = Bars("gdino label: skipping {name}: {why}")
        try:
            add_planned(project, plan, run, copy=args.copy, defer_uris=ray is not None, reporter=bars)
            if ray is not None:
                from ..labeling.ray_driver import label_on_ray_driver

                sam = None if args.sam.lower() == "none" else SegmenterSpec(sam_flag(args.sam, _device_type(args)),
                                                                             args.device)
                spec = DetectorSpec(args.model, args.text_encoder, args.device, args.dtype,
                                    precision_flag(args, _device_type(args)))
                label_on_ray_driver(project, settings, spec, sam, ray, run, reporter=bars)
            else:
                label_plain(project, detector, segmenter, settings, run, batch_size=args.batch_size, reporter=bars)
        except KeyboardInterrupt:
            unlabeled = {r.id for r in project.images(status="unlabeled")}
            done = sum(1 for image_id in run.label_ids if image_id not in unlabeled)
            print(f"\ngdino label: interrupted after adding {run.added} and labeling {done} image(s); every image "
                  "is stored whole. Run the same command again to resume.", file=sys.stderr)
            return 130
        _print_summary(run, plan.done, project.path, None if ray is None else ray.results)
        code = 1 if run.failed or run.aborted else 0
        if args.export:
            code = max(code, _export_after(project, args))
        return code
    finally:
        if project is not None:
            project.close()


def _settings(args: argparse.Namespace) -> LabelSettings:
    classes = None
    if args.classes is not None:
        try:
            classes = parse_class_text(args.classes)
            parse_classes(classes)  # duplicates, names without words
        except PromptError as err:
            raise UsageError(f"--classes: {err}") from None
    if args.prompt is not None and not args.prompt.strip():
        raise UsageError("--prompt is empty: give the text to look for, e.g. --prompt \"a cat on a couch\"")
    return LabelSettings(classes=classes, prompt=args.prompt,
                         box_threshold=LabelSettings.box_threshold if args.box_threshold is None else args.box_threshold,
                         text_threshold=args.text_threshold, nms_iou=args.nms_iou,
                         agnostic_nms_iou=args.cross_class_nms_iou, masks=args.sam.lower() != "none")


def _for_model(settings: LabelSettings, detector, args: argparse.Namespace) -> LabelSettings:
    """The settings the loaded model's family changes: SAM 3 makes its own masks (stored; `_load_models` refuses
    --sam with it) and
    keeps boxes above its own 0.5 unless --box-threshold says otherwise."""
    if getattr(detector, "family", None) != "sam3":
        return settings
    threshold = SAM3_BOX_THRESHOLD if args.box_threshold is None else args.box_threshold
    return replace(settings, masks=True, box_threshold=threshold)


_RAY_FLAGS = ("address", "actors", "cpus_per_actor", "gpus_per_actor", "results")


def _ray_options(args: argparse.Namespace) -> RayOptions | None:
    """--engine ray's flags as RayOptions (None: --engine plain), checked before anything is loaded."""
    results = None if args.results is None else results_folder(args.results)
    given = [f"--{name.replace('_', '-')}" for name in _RAY_FLAGS if getattr(args, name) is not None]
    if args.engine != "ray" and given:
        raise UsageError(f"{', '.join(given)} only apply with --engine ray")
    if results is not None and args.export:
        raise UsageError(f"--export with --results: the labels stay in {results} until `gdino import-results`; "
                         "export after importing them")
    if args.engine != "ray":
        return None
    if args.device is not None and args.device.startswith("cuda") and not args.gpus_per_actor:
        raise UsageError(f"--device {args.device} with --engine ray needs --gpus-per-actor (a GPU for each actor)")
    return RayOptions(address=args.address, actors=args.actors or 1, cpus_per_actor=args.cpus_per_actor,
                      gpus_per_actor=args.gpus_per_actor or 0.0, batch_size=args.batch_size, results=results,
                      verbose=args.verbose)


def sam_flag(value: str, device_type: str) -> str:
    """--sam's value -> the SAM to load: 'default' is the device's default (gdino.sam.catalog.default_name)."""
    if value.lower() == "default":
        return SAM_CUDA_DEFAULT if device_type == "cuda" else SAM_CPU_DEFAULT
    return value


def _device_type(args: argparse.Namespace) -> str:
    """'cuda' or 'cpu': what --device names, or what the Ray actors will have (CUDA where they get GPUs)."""
    if args.device:
        return args.device.split(":")[0]
    return "cuda" if getattr(args, "gpus_per_actor", None) else "cpu"


def precision_flag(args: argparse.Namespace, device_type: str) -> str:
    """--precision, else exact when --dtype names a number format, else the default on that device."""
    if args.precision is not None:
        return args.precision
    return "exact" if args.dtype is not None else default_precision(device_type)


def _load_models(args: argparse.Namespace):
    """(Detector, Segmenter or None), as the flags ask; torch is imported here, not before."""
    from ..labeling.loading import default_device, load_detector, load_segmenter
    from ..ops import describe

    device = device_flag(args.device)
    name = None if device is None else str(device)
    device_type = (name or default_device()).split(":")[0]
    on_cpu = device_type != "cuda"
    precision = precision_flag(args, device_type)
    if precision == "fast" and args.dtype not in (None, "float32"):
        raise UsageError(f"--precision fast chooses the number format itself; leave out --dtype {args.dtype}")
    if args.dtype == "float16" and on_cpu:
        raise UsageError("--dtype float16 is for CUDA only; on a CPU, --precision fast is the fast mode")
    if args.dtype == "bfloat16" and on_cpu and not native_bfloat16():
        print("gdino label: this CPU has no bfloat16 units: --dtype bfloat16 runs several times slower than float32 "
              "here; --precision fast is the fast mode on this CPU", file=sys.stderr)
    try:  # every ValueError here is about the files named by --model / --text-encoder / --sam
        print(f"loading {args.model} ...", file=sys.stderr)
        detector = load_detector(DetectorSpec(args.model, args.text_encoder, name, args.dtype, precision))
        segmenter = None
        if getattr(detector, "family", None) == "sam3" and args.sam.lower() != "none":
            raise UsageError("--model is SAM 3, which makes its own masks: leave out --sam")
        if args.sam.lower() != "none":
            sam = sam_flag(args.sam, device_type)
            print(f"loading SAM {sam} ...", file=sys.stderr)
            segmenter = load_segmenter(SegmenterSpec(sam, name))
    except ValueError as err:
        raise UsageError(str(err)) from err
    weight = next(detector.model.parameters())
    print(f"precision: {describe_precision(detector.model)}", file=sys.stderr)
    if getattr(detector, "family", None) == "sam3":
        print("model: SAM 3 (Meta's weights, under the SAM License): boxes and masks from the class names",
              file=sys.stderr)
    else:
        print(f"deformable attention: {describe(weight.device, weight.dtype, build=True)}", file=sys.stderr)
    return detector, segmenter


def _check_prompt(detector, settings: LabelSettings) -> None:
    """The classes or prompt against the loaded model's tokenizer (unknown words, too long)."""
    try:
        detector.check_prompt(settings.classes, prompt=settings.prompt)
    except PromptError as err:
        raise UsageError(f"{'--classes' if settings.prompt is None else '--prompt'}: {err}") from None


def _export_after(project: Project, args: argparse.Namespace) -> int:
    return export_project(project, args.export, Path(args.export_dir), reviewed_only=args.reviewed_only,
                          val_fraction=args.val_fraction, seed=args.seed, as_zip=False, overwrite=args.overwrite,
                          flag="--export-dir")


def _print_summary(run: LabelRun, skipped: int, project_dir: Path, results: str | None = None) -> None:
    if results is not None:
        print(f"labeled {run.labeled} image(s) in {run.seconds:.1f} s, {run.labeled / max(run.seconds, 1e-9):.2f} images/s, "
              f"into {results}; {run.kept} were there already (store them: gdino import-results {results} --into "
              f"{project_dir})")
    elif run.labeled:
        print(f"labeled {run.labeled} image(s), {run.objects} object(s) in {run.seconds:.1f} s, "
              f"{run.labeled / max(run.seconds, 1e-9):.2f} images/s")
    else:
        print("labeled 0 image(s)")
    if run.aborted is not None:
        print(f"the Ray run failed before the end: {run.aborted}\nthe results stored so far are kept; run the same "
              "command again to resume (--verbose shows Ray's logs)")
    if run.first_result is not None:
        print(f"the first result came {run.first_result:.1f} s after the start (Ray and the actors starting, the first "
              "batch)")
    print(f"added {run.added} new image(s); skipped {skipped} already labeled")
    if run.added_elsewhere:
        print(f"{run.added_elsewhere} file(s) were added by another run meanwhile (each is in the project once)")
    if run.labeled_elsewhere:
        print(f"left {run.labeled_elsewhere} image(s) as they were: another run labeled them first")
    if run.kept:
        print(f"left {run.kept} image(s) as they were: someone marked them skipped or reviewed during the run")
    if run.gone:
        print(f"not labeled {len(run.gone)} image(s) removed from the project during the run: "
              f"{', '.join(run.gone[:5])}{' ...' if len(run.gone) > 5 else ''}")
    if run.failed:
        print(f"failed {len(run.failed)} image(s) (fix or remove them; a re-run tries them again):")
        for name, why in run.failed:
            print(f"  {name}: {why}")
    print(f"project: {project_dir}  (gdino info {project_dir})")
