"""Segment Anything, every backend behind one Segmenter.

    prompts.py     checks of boxes, points and labels; SegmenterError
    backend.py     the Backend protocol (embed, decode, upscale) and its coordinate spaces
    sam1.py        SAM 1 (segment-anything): official checkpoints, download, sizes from the tensors
    sam2.py        SAM 2.1 and EdgeTAM through transformers' classes; the sam2 repository's .pt files by a key map
    catalog.py     --sam NAME|PATH -> a backend: the one place; the defaults per device
    store.py       embeddings kept on disk (float16, bounded, least recently used first out, safe against kills)
    segmenter.py   Segmenter: segment, add_masks, refine, embed; the memory cache

Imports are lazy: `from gdino.sam import Segmenter` loads torch only then.
"""

from __future__ import annotations

_LAZY = {"Segmenter": "segmenter", "Masks": "segmenter", "Refined": "segmenter", "SegmenterError": "prompts"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
