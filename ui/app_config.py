"""The app's command line (`python app.py --help`): its settings as `AppConfig`. The model's own config is
gdino/modeling/config.py."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from gdino.modeling.config import DEFAULT_MODEL
from gdino.modeling.precision import PRECISIONS
from gdino.sam import catalog
from gdino.sources import SourceError, check_uri, is_uri
from gdino.weights.checkpoints import RECOMMENDED

_DEFAULT_WORKSPACE = Path.home() / ".cache" / "gdino" / "sessions"


@dataclass(frozen=True)
class AppConfig:
    model: str = DEFAULT_MODEL  # the default detector: new projects use it
    models: tuple[str, ...] | None = None  # what a project may choose besides `model`; None: the recommended ones
    max_loaded_models: int = 2  # detectors kept in memory at once
    text_encoder: str | None = None
    sam: str | None = None  # the default SAM (new projects use it); None: catalog.default_name for the device; "none": no masks
    sams: tuple[str, ...] | None = None  # what a project may choose besides `sam`; None: every name of catalog.NAMES
    max_loaded_sams: int = 2  # SAMs kept in memory at once when projects use different ones
    project: Path | None = None  # one shared project for every visitor
    device: str | None = None
    precision: str | None = None  # the detectors': "exact", "fast" (gdino/modeling/precision.py); None: the device's default
    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    allow_dirs: tuple[Path, ...] = ()
    allow_uris: tuple[str, ...] = ()  # object-store prefixes (s3://bucket/photos/?endpoint...) images may be read from
    workspace: Path = field(default_factory=lambda: Path(os.environ.get("GDINO_WORKSPACE", _DEFAULT_WORKSPACE)))
    max_upload_files: int = 500  # files in one upload
    max_upload_mb: int = 500  # one file
    max_upload_total_mb: int = 2048  # one upload, all files
    max_upload_members: int = 5000  # files inside the zips of one upload, counted across them

    def offered_models(self) -> tuple[str, ...]:
        """The models a project may use, the server's --model first. Nothing else is ever loaded for a page."""
        more = tuple(c.repo for c in RECOMMENDED) if self.models is None else self.models
        return tuple(dict.fromkeys((self.model, *more)))

    def sam_for(self, device_type: str) -> str:
        """The server's SAM on a device of this type ("cpu", "cuda"): --sam, else the catalog's default there."""
        return self.sam if self.sam is not None else catalog.default_name(device_type)

    def offered_sams(self, device_type: str) -> tuple[str, ...]:
        """The SAMs a project may use, the server's --sam first; none at all with --sam none."""
        default = self.sam_for(device_type)
        if default.lower() == catalog.NONE:
            return ()
        more = catalog.NAMES if self.sams is None else self.sams
        return tuple(dict.fromkeys(s for s in (default, *more) if s.lower() != catalog.NONE))


def parse_args(argv: list[str] | None = None) -> AppConfig:
    p = argparse.ArgumentParser(
        prog="app.py",
        description="gdino: label images in the browser with Grounding DINO boxes and SAM masks, then export COCO, "
                    "YOLO or VOC.",
        epilog="examples:\n"
               "  python app.py                                   # default weights, a private project per browser\n"
               "  python app.py --model ./grounding-dino-tiny --sam ./sam_vit_b_01ec64.pth   # offline, local files\n"
               "  python app.py --project ./my_labels --allow-dir /data/photos --port 7860\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"detector weights: Grounding DINO (hub id, transformers-layout directory or .pth) or SAM 3 "
                        f"(facebook/sam3, gated, or a local copy) (default {DEFAULT_MODEL})")
    p.add_argument("--models", default=None, metavar="ID,ID,...",
                   help="the other models a project may choose in the page, comma-separated hub ids or paths, or "
                        "'none' for --model alone (default: the recommended checkpoints, see `gdino models`; SAM 3 is "
                        "offered only when named, e.g. --models IDEA-Research/grounding-dino-tiny,facebook/sam3)")
    p.add_argument("--max-loaded-models", type=int, default=2, metavar="N",
                   help="detectors kept in memory at once when projects use different models (default 2)")
    p.add_argument("--text-encoder", default=None, help="BERT directory or hub id, for original .pth checkpoints")
    p.add_argument("--sam", default=None, metavar="NAME|PATH|none",
                   help=f"SAM for masks: one of {', '.join(catalog.NAMES)} (or {catalog.SAM3}: SAM 3's interactive "
                        "head, gated), a SAM 1 .pth, SAM 2.1 .pt or SAM 3 sam3.pt file, a model folder, or none for no "
                        f"masks (default: {catalog.CPU_DEFAULT} on CPU, {catalog.CUDA_DEFAULT} on CUDA)")
    p.add_argument("--sams", default=None, metavar="NAME,PATH,...",
                   help="the other SAMs a project may choose in the page, comma-separated names or paths, or 'none' for "
                        "--sam alone (default: every name above, downloaded on first use)")
    p.add_argument("--max-loaded-sams", type=int, default=2, metavar="N",
                   help="SAMs kept in memory at once when projects use different ones (default 2)")
    p.add_argument("--project", type=Path, default=None,
                   help="use this project directory for every visitor (created if missing); default: one project per "
                        "browser session")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="the detectors': fast (the default on a CPU: the heavy layers in bfloat16 where the CPU has "
                        "bfloat16 units, else int8 weights; the box-placing ones float32; checked on a trained "
                        "model) or exact (the default on CUDA: float32, transformers' outputs)")
    # Hugging Face Spaces tell the app where to listen through these variables
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 for every interface; default $GRADIO_SERVER_NAME or 127.0.0.1)")
    env_port = os.environ.get("GRADIO_SERVER_PORT")
    p.add_argument("--port", type=int, default=int(env_port) if env_port else None,
                   help="port (default: $GRADIO_SERVER_PORT, else 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--allow-dir", action="append", type=Path, default=[], metavar="DIR",
                   help="a server folder visitors may open projects or add images from (repeatable); without it "
                        "visitors can only upload")
    p.add_argument("--allow-uri", action="append", default=[], metavar="URI",
                   help="an object-store prefix (s3://bucket/photos/, with the same ?endpoint_override=... as the "
                        "project's images) whose images the page may show, for projects labeled with `gdino label "
                        "s3://...` (repeatable; credentials from the environment)")
    limits = AppConfig()
    p.add_argument("--max-upload-files", type=int, default=limits.max_upload_files, metavar="N",
                   help=f"files in one upload (default {limits.max_upload_files})")
    p.add_argument("--max-upload-mb", type=int, default=limits.max_upload_mb, metavar="MB",
                   help=f"size of one uploaded file (default {limits.max_upload_mb})")
    p.add_argument("--max-upload-total-mb", type=int, default=limits.max_upload_total_mb, metavar="MB",
                   help=f"size of one upload, all files (default {limits.max_upload_total_mb})")
    p.add_argument("--max-upload-members", type=int, default=limits.max_upload_members, metavar="N",
                   help=f"files inside the zips of one upload, counted across them (default {limits.max_upload_members})")
    p.add_argument("--workspace", type=Path, default=None,
                   help="where per-session projects are kept (default ~/.cache/gdino/sessions or $GDINO_WORKSPACE)")
    a = p.parse_args(argv)
    for uri in a.allow_uri:
        if not is_uri(uri):
            p.error(f"--allow-uri {uri}: not an object-store URI (s3://bucket/prefix/); for server folders use --allow-dir")
        try:
            check_uri(uri)  # credentials (refused without repeating them), parameters the store does not read
        except SourceError as err:
            p.error(f"--allow-uri: {err}")
    extra = {"workspace": a.workspace.resolve()} if a.workspace else {}
    if a.max_loaded_models < 1:
        p.error("--max-loaded-models must be at least 1")
    if a.max_loaded_sams < 1:
        p.error("--max-loaded-sams must be at least 1")
    models = None if a.models is None else tuple(m.strip() for m in a.models.split(",") if m.strip()
                                                     and m.strip().lower() != "none")
    sams = None if a.sams is None else tuple(m.strip() for m in a.sams.split(",") if m.strip()
                                             and m.strip().lower() != catalog.NONE)
    return AppConfig(model=a.model, models=models, max_loaded_models=a.max_loaded_models, text_encoder=a.text_encoder, sam=a.sam,
                     sams=sams, max_loaded_sams=a.max_loaded_sams,
                     project=a.project.resolve() if a.project else None, device=a.device, precision=a.precision,
                     host=a.host, port=a.port,
                     share=a.share, allow_dirs=tuple(d.resolve() for d in a.allow_dir), allow_uris=tuple(a.allow_uri),
                     max_upload_files=a.max_upload_files, max_upload_mb=a.max_upload_mb,
                     max_upload_total_mb=a.max_upload_total_mb, max_upload_members=a.max_upload_members, **extra)
