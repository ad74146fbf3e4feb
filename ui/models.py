"""The models, loaded once per process, lazily, with a status the page can show."""

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
        self.error: str | None = None
        self.status = "models not loaded yet (they load on the first detection)"

    @property
    def device(self) -> str:
        return self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def sam_enabled(self) -> bool:
        return self.config.sam.lower() != "none"

    def detector(self) -> gdino.Detector:
        with self._lock:
            if self._detector is None:
                self.status = f"loading {self.config.model} ..."
                try:
                    self._detector = gdino.Detector.from_pretrained(self.config.model, text_encoder=self.config.text_encoder,
                                                                    device=self.device)
                except ValueError as err:
                    self.error = str(err)
                    self.status = f"could not load the detector: {err}"
                    raise
                self.error = None
                self.status = self._describe()
            return self._detector

    def segmenter(self) -> gdino.Segmenter:
        if not self.sam_enabled:
            raise ValueError("masks are off: the server was started with --sam none")
        with self._lock:
            if self._segmenter is None:
                try:
                    self._segmenter = gdino.Segmenter.from_pretrained(self.config.sam, device=self.device)
                except ValueError as err:
                    self.error = str(err)
                    raise
                self.status = self._describe()
            return self._segmenter

    def _describe(self) -> str:
        parts = [f"running on {self.device.upper() if self.device == 'cpu' else self.device}", f"detector {self.config.model}"]
        if self._segmenter is not None:
            parts.append(f"SAM {self.config.sam}")
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
