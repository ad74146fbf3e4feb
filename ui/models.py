"""The models, loaded once per process, lazily, with a status the page can show.

`status` is computed each time it is read, from what is true now (loaded, loading, failed, the kernel
build), so a page that polls it never shows a stale line. `check_at_start` loads both models when the
server starts, so the log and the page say at once which ones are missing and which flag fixes that.
"""

from __future__ import annotations

import threading

import torch

import gdino
from gdino.config import PRESETS
from gdino.ops import describe

from .config import AppConfig


class ModelHub:
    def __init__(self, config: AppConfig):
        self.config = config
        self._lock = threading.Lock()
        self._detector = None
        self._segmenter = None
        self._loading: str | None = None  # what is being loaded right now
        self.detector_error: str | None = None
        self.sam_error: str | None = None

    @property
    def device(self) -> str:
        return self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def sam_enabled(self) -> bool:
        return self.config.sam.lower() != "none"

    @property
    def masks_available(self) -> bool:
        """SAM is on and has not failed to load (masks default to on only then)."""
        return self.sam_enabled and self.sam_error is None

    @property
    def error(self) -> str | None:
        return self.detector_error or self.sam_error

    def detector(self) -> gdino.Detector:
        with self._lock:
            if self._detector is None:
                self._loading = f"Grounding DINO ({self.config.model})"
                try:
                    self._detector = gdino.Detector.from_pretrained(self.config.model, text_encoder=self.config.text_encoder,
                                                                    device=self.device)
                except ValueError as err:
                    self.detector_error = str(err)
                    raise
                finally:
                    self._loading = None
                self.detector_error = None
            return self._detector

    def segmenter(self) -> gdino.Segmenter:
        if not self.sam_enabled:
            raise ValueError("masks are off: the server was started with --sam none")
        with self._lock:
            if self._segmenter is None:
                self._loading = f"SAM ({self.config.sam})"
                try:
                    self._segmenter = gdino.Segmenter.from_pretrained(self.config.sam, device=self.device)
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
        if self._detector is not None:
            parts.append(f"detector {self.config.model}")
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
        if self._detector is not None:
            weight = next(self._detector.model.parameters())
            parts.append(f"deformable attention: {describe(weight.device, weight.dtype)}")
        text = ", ".join(parts)
        if self._detector is not None and not self.is_published_model():
            text += (" -- WARNING: this is not a published Grounding DINO model (its sizes differ from Swin-T/Swin-B), "
                     "e.g. the tests' tiny random model: its detections are meaningless")
        return text

    def is_published_model(self) -> bool:
        c = self._detector.model.config
        return any(c.swin == p.swin and c.d_model == p.d_model and c.num_queries == p.num_queries
                   for name, p in PRESETS.items() if name != "tiny")
