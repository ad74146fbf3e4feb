"""Helpers shared by the benchmark scripts: timing, peak memory, and the deformable-attention op's inputs."""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import torch

ENCODER_LEVELS = [(100, 150), (50, 75), (25, 38), (13, 19)]  # the encoder's levels at 800x1200


def encoder_op_inputs(device="cpu", dtype=torch.float32):
    """value (1, S, 8, 32) in `dtype`; locations (1, S, 8, 4, 4, 2) and weights (1, S, 8, 4, 4) in float32,
    as the model hands them to the op; S = 19,947 queries."""
    spatial = sum(h * w for h, w in ENCODER_LEVELS)
    g = torch.Generator().manual_seed(0)
    value = torch.randn(1, spatial, 8, 32, generator=g).to(device, dtype)
    loc = torch.rand(1, spatial, 8, 4, 4, 2, generator=g).to(device)
    weights = torch.rand(1, spatial, 8, 16, generator=g).softmax(-1).view(1, spatial, 8, 4, 4).to(device)
    return value, loc, weights


def median_time(fn, repeats: int) -> float:
    """Seconds per call of `fn`: one warm-up call (caches, kernel builds), then the median of `repeats`."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_mb() -> float:
    """This process's peak resident memory in MB: VmHWM, which starts anew at exec. (ru_maxrss does not: a child
    started by a parent that held a model reports at least the parent's size at the fork.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
