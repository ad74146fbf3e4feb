"""The models, loaded once per process, lazily, with a status the page can show.

Several detectors can be in use: each project chooses one of the models the server offers
(`AppConfig.offered_models`). The last `max_loaded_models` used stay loaded; an older one is dropped
when another is loaded (a job that holds it keeps it until it ends). SAMs alike: each project chooses one
of `AppConfig.offered_sams`, named in the page by a public key (`sam_keys`: a catalog name, or a file's or
folder's name, never its server path); the last `max_loaded_sams` used stay loaded.

`status` is computed each time it is read, from what is true now (loaded, loading, failed, the kernel
build), so a page that polls it never shows a stale line. `check_at_start` loads the default detector and
SAM when the server starts, so the log and the page say at once which ones are missing and which flag
fixes that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import gdino
from gdino.labeling.loading import DetectorSpec, SegmenterSpec, default_device, load_detector, load_segmenter
from gdino.modeling.config import PRESETS
from gdino.modeling.precision import default_precision, describe_precision
from gdino.ops import describe
from gdino.sam import catalog

from .app_config import AppConfig


class ModelHub:
    def __init__(self, config: AppConfig):
        self.config = config
        self._lock = threading.Lock()
        self._detectors: OrderedDict[str, gdino.Detector] = OrderedDict()  # least recently used first
        self._segmenters: OrderedDict[str, gdino.Segmenter] = OrderedDict()  # public key -> SAM, least recent first
        self._loading: str | None = None  # what is being loaded right now
        self.detector_errors: dict[str, str] = {}  # model -> why it could not be loaded (until it loads)
        self.sam_errors: dict[str, str] = {}  # public key -> why that SAM could not be loaded (until it loads)

    @property
    def device(self) -> str:
        return self.config.device or default_device()

    @property
    def sam_default(self) -> str:
        """The server's SAM (--sam, else the catalog's default for the device): a name, a path or "none"."""
        return self.config.sam_for(self.device.split(":")[0])

    @property
    def sam_enabled(self) -> bool:
        return self.sam_default.lower() != catalog.NONE

    @property
    def sam_keys(self) -> dict[str, str]:
        """public key -> what the loader reads, for every SAM a project may use, the server's first. A key is
        a catalog name, or a file's or folder's own name (never its server path), made unique."""
        keys: dict[str, str] = {}
        for spec in self.config.offered_sams(self.device.split(":")[0]):
            key = base = spec if spec in catalog.NAMED else catalog.describe(spec)
            n = 2
            while key in keys:
                key, n = f"{base} ({n})", n + 1
            keys[key] = spec
        return keys

    @property
    def sam_default_key(self) -> str | None:
        """The public key of the server's SAM (None with --sam none)."""
        return next(iter(self.sam_keys), None)

    @property
    def sam_error(self) -> str | None:
        """Why the server's SAM (--sam) could not be loaded, if it could not."""
        key = self.sam_default_key
        return None if key is None else self.sam_errors.get(key)

    @property
    def masks_available(self) -> bool:
        """SAM is on and has not failed to load (masks default to on only then)."""
        return self.sam_enabled and self.sam_error is None

    @property
    def detector_error(self) -> str | None:
        """Why the server's default detector (--model) could not be loaded, if it could not."""
        return self.detector_errors.get(self.config.model)

    @property
    def error(self) -> str | None:
        return self.detector_error or self.sam_error

    def detector(self, model: str | None = None, *, also: tuple[str, ...] | list[str] = ()) -> gdino.Detector:
        """The detector of `model` (default: --model), loaded on first use. Only offered models are loaded (the
        server's, and `also`: the project's own fine-tuned ones): a name from a page never reaches the loader
        unchecked."""
        model = model or self.config.model
        if model not in self.config.offered_models() and model not in also:
            raise ValueError("this server does not offer that model; choose one from the list")
        with self._lock:
            if model in self._detectors:
                self._detectors.move_to_end(model)
                return self._detectors[model]
            self._loading = f"Grounding DINO ({self._public(model)})"
            try:
                # the text encoder is for the server's own .pth checkpoint; hub checkpoints bring theirs
                text_encoder = self.config.text_encoder if model == self.config.model else None
                precision = self.config.precision or default_precision(self.device.split(":")[0])
                detector = load_detector(DetectorSpec(model, text_encoder=text_encoder, device=self.device,
                                                      precision=precision))
            except ValueError as err:
                self.detector_errors[model] = said_plainly(self._public(model), err)
                raise ValueError(self.detector_errors[model]) from err
            finally:
                self._loading = None
            self.detector_errors.pop(model, None)
            while len(self._detectors) >= max(1, self.config.max_loaded_models):
                self._detectors.popitem(last=False)  # the least recently used, once the new one loaded; freed
                # when no job holds it any more
            self._detectors[model] = detector
            return detector

    def _public(self, model: str) -> str:
        """A model's name for the status line every visitor sees: the server's own models by name, a project's
        fine-tuned model never by its path (that path holds the project's private link)."""
        return model if model in self.config.offered_models() else "a project's fine-tuned model"

    def segmenter(self, key: str | None = None) -> gdino.Segmenter:
        """The SAM of public key `key` (default: --sam), loaded on first use. Only offered SAMs are loaded: a key
        from a page never reaches the loader unchecked. Raises ValueError in the page's words."""
        if not self.sam_enabled:
            raise ValueError("masks are off: the server was started with --sam none")
        keys = self.sam_keys
        key = key or next(iter(keys))
        if key not in keys:
            raise ValueError("this server does not offer that SAM; choose one from the list")
        with self._lock:
            if key in self._segmenters:
                self._segmenters.move_to_end(key)
                return self._segmenters[key]
            self._loading = f"SAM ({sam_words(keys[key])})"
            try:
                segmenter = load_segmenter(SegmenterSpec(keys[key], device=self.device))
            except ValueError as err:
                self.sam_errors[key] = sam_said_plainly(key, keys[key], err)
                raise ValueError(self.sam_errors[key]) from err
            finally:
                self._loading = None
            self.sam_errors.pop(key, None)
            while len(self._segmenters) >= max(1, self.config.max_loaded_sams):
                self._segmenters.popitem(last=False)  # the least recently used; freed when no job holds it
            self._segmenters[key] = segmenter
            return segmenter

    def loaded_segmenter(self, key: str | None = None) -> gdino.Segmenter | None:
        """The SAM of `key` (default: --sam) if it is loaded now, else None; loads nothing."""
        key = key or self.sam_default_key
        # not under the lock: a load (minutes for a download) holds it, and the status line reads this every second
        return self._segmenters.get(key) if key is not None else None

    def check_at_start(self) -> list[str]:
        """Load both models now; returns one line per model that is missing, saying which flag fixes it."""
        problems = []
        try:
            self.detector()
        except ValueError as err:
            problems.append(f"Grounding DINO is unavailable: {err}. Start the app with --model /path/to/weights "
                            "(a transformers-layout folder or a .pth file).")
        if self.sam_enabled:
            try:
                self.segmenter()
            except ValueError as err:
                problems.append(f"SAM is unavailable, so masks are off: {err}. Start the app with --sam "
                                "/path/to/sam_vit_b_01ec64.pth (or another SAM) for masks, or --sam none to say you "
                                "want none.")
        return problems

    @property
    def status(self) -> str:
        """One line for the page, true as of now, with the server's SAM."""
        return self.status_line()

    def status_line(self, sam: str | None = None) -> str:
        """One line for a page whose project uses the SAM of public key `sam` (None: the server's), true as of
        now: "..., SAM 2.1 tiny on CPU, ..."."""
        parts = [f"running on {self.device.upper() if self.device == 'cpu' else self.device}"]
        if self._loading:
            parts.append(f"loading {self._loading} ...")
        loaded = list(self._detectors.items())
        if loaded:
            parts.append("detector " + " and ".join(self._public(model) for model, _ in loaded))
        elif self.detector_error:
            parts.append(f"detector unavailable ({self.detector_error}; start with --model /path/to/weights)")
        elif not self._loading:
            parts.append(f"detector {self.config.model} loads on the first detection")
        parts.append(self._sam_part(sam))
        if loaded:
            weight = next(loaded[-1][1].model.parameters())
            parts.append(f"precision: {describe_precision(loaded[-1][1].model)}")
            if getattr(loaded[-1][1], "family", None) == "sam3":
                parts.append("SAM 3: boxes with its own masks (Meta's SAM License)" + (
                    "; on a CPU about 30 s an image: a batch model (Auto-label), not an interactive one"
                    if weight.device.type == "cpu" else ""))
            else:
                parts.append(f"deformable attention: {describe(weight.device, weight.dtype)}")
        text = ", ".join(parts)
        odd = [self._public(model) for model, detector in loaded if not is_published_model(detector)]
        if odd:
            text += (f" -- WARNING: {', '.join(odd)} is not a published model (its sizes differ from Grounding DINO's "
                     "Swin-T/B/L and SAM 3's), e.g. the tests' tiny random model: its detections are meaningless")
        return text

    def _sam_part(self, sam: str | None) -> str:
        if not self.sam_enabled:
            return "masks off (--sam none)"
        keys = self.sam_keys
        key = sam if sam in keys else next(iter(keys))
        where = "CPU" if self.device == "cpu" else self.device
        error = self.sam_errors.get(key)
        if error and key == self.sam_default_key:
            return f"SAM unavailable, masks off ({error})"
        if error:  # "SAM 2.1 tiny could not be loaded: ... the flag that fixes it"
            return error
        if self.loaded_segmenter(key) is None:
            return f"{sam_words(keys[key])} on {where} (loads on first use)"
        return f"{sam_words(keys[key])} on {where}"


def sam_words(spec: str) -> str:
    """A SAM as the page names it: "SAM 2.1 tiny", "SAM 1 vit_b", "EdgeTAM", "SAM sam_vit_b.pth" (a file's
    name only: never a server path)."""
    words = catalog.describe(spec)
    return words if words.startswith(("SAM ", "EdgeTAM")) else f"SAM {words}"


def sam_said_plainly(key: str, spec: str, err: ValueError) -> str:
    """A SAM's loading error in the page's words: no server path (the file is named by its key), and the flag
    that fixes it."""
    text = str(err)
    if spec not in catalog.NAMED:  # a file or folder: its server path becomes its key
        path = Path(spec).expanduser()
        for shown in sorted({spec, str(path), str(path.resolve())}, key=len, reverse=True):
            text = text.replace(shown, key)
        for folder in {str(path.parent), str(path.resolve().parent)} - {"."}:
            text = text.replace(folder + "/", "")
    text = text.split(" e.g. gdino.")[0].rstrip(". ")
    return (f"{sam_words(spec)} could not be loaded: {text}. Choose another SAM, or start the server with --sam or "
            "--sams naming a local copy")


def said_plainly(model: str, err: ValueError) -> str:
    """A loading error in the words of someone running or using the app (no Python calls)."""
    text = str(err)
    if text.startswith("could not get"):
        return (f"the model {model} could not be downloaded from the Hugging Face Hub (offline, or the repo is "
                "private or gated: a gated one such as SAM 3 needs its license accepted on its page and `hf auth "
                "login` on the server). Choose another model, or start the server with --model or --models naming a "
                f"local copy (`hf download {model}` on a machine that is online)")
    return f"the model {model} could not be loaded: {text.split(' e.g. gdino.')[0]}"


def is_published_model(detector: gdino.Detector) -> bool:
    c = detector.model.config
    if getattr(detector, "family", None) == "sam3":  # SAM 3's one published size: a 1024-wide, 32-layer ViT
        vit = c.vision_config.backbone_config
        return vit.hidden_size == 1024 and vit.num_hidden_layers == 32
    return any(c.swin == p.swin and c.d_model == p.d_model and c.num_queries == p.num_queries
               for name, p in PRESETS.items() if name != "tiny")
