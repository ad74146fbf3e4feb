"""The models, loaded once per process, lazily, with a status the page can show.

Several detectors can be in use: each project chooses one of the models the server offers
(`AppConfig.offered_models`). The last `max_loaded_models` used stay loaded; an older one is dropped
when another is loaded (a job that holds it keeps it until it ends).

`status` is computed each time it is read, from what is true now (loaded, loading, failed, the kernel
build), so a page that polls it never shows a stale line. `check_at_start` loads the default detector and
SAM when the server starts, so the log and the page say at once which ones are missing and which flag
fixes that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import gdino
from gdino.labeling.loading import DetectorSpec, SegmenterSpec, default_device, load_detector, load_segmenter
from gdino.modeling.config import PRESETS
from gdino.ops import describe

from .app_config import AppConfig


class ModelHub:
    def __init__(self, config: AppConfig):
        self.config = config
        self._lock = threading.Lock()
        self._detectors: OrderedDict[str, gdino.Detector] = OrderedDict()  # least recently used first
        self._segmenter = None
        self._loading: str | None = None  # what is being loaded right now
        self.detector_errors: dict[str, str] = {}  # model -> why it could not be loaded (until it loads)
        self.sam_error: str | None = None

    @property
    def device(self) -> str:
        return self.config.device or default_device()

    @property
    def sam_enabled(self) -> bool:
        return self.config.sam.lower() != "none"

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
                detector = load_detector(DetectorSpec(model, text_encoder=text_encoder, device=self.device))
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

    def segmenter(self) -> gdino.Segmenter:
        if not self.sam_enabled:
            raise ValueError("masks are off: the server was started with --sam none")
        with self._lock:
            if self._segmenter is None:
                self._loading = f"SAM ({self.config.sam})"
                try:
                    self._segmenter = load_segmenter(SegmenterSpec(self.config.sam, device=self.device))
                except ValueError as err:
                    self.sam_error = str(err)
                    raise
                finally:
                    self._loading = None
                self.sam_error = None
            return self._segmenter

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
                                "/path/to/sam_vit_b_01ec64.pth for masks, or --sam none to say you want none.")
        return problems

    @property
    def status(self) -> str:
        """One line for the page, true as of now."""
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
        if not self.sam_enabled:
            parts.append("masks off (--sam none)")
        elif self._segmenter is not None:
            parts.append(f"SAM {self.config.sam}")
        elif self.sam_error:
            parts.append(f"SAM unavailable, masks off ({self.sam_error}; start with --sam /path/to/sam.pth)")
        if loaded:
            weight = next(loaded[-1][1].model.parameters())
            parts.append(f"deformable attention: {describe(weight.device, weight.dtype)}")
        text = ", ".join(parts)
        odd = [self._public(model) for model, detector in loaded if not is_published_model(detector)]
        if odd:
            text += (f" -- WARNING: {', '.join(odd)} is not a published Grounding DINO model (its sizes differ from "
                     "Swin-T/B/L), e.g. the tests' tiny random model: its detections are meaningless")
        return text


def said_plainly(model: str, err: ValueError) -> str:
    """A loading error in the words of someone running or using the app (no Python calls)."""
    text = str(err)
    if text.startswith("could not get"):
        return (f"the model {model} could not be downloaded from the Hugging Face Hub (offline, or the repo is "
                "private). Choose another model, or start the server with --model or --models naming a local copy "
                f"(`hf download {model}` on a machine that is online)")
    return f"the model {model} could not be loaded: {text.split(' e.g. gdino.')[0]}"


def is_published_model(detector: gdino.Detector) -> bool:
    c = detector.model.config
    return any(c.swin == p.swin and c.d_model == p.d_model and c.num_queries == p.num_queries
               for name, p in PRESETS.items() if name != "tiny")
