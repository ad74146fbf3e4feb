"""gdino.memory: with freed memory kept, a repeated forward-like step stops page-faulting; without, every
step faults its activations in again."""

import os
import subprocess
import sys

import pytest

# a Linear + ReLU on 20,000 tokens (two 82 MB activations), 32 times; page faults of each step
PROBE = """
import resource, sys, threading, torch
from gdino.memory import keep_freed_memory
on = keep_freed_memory()
x, w, b = torch.randn(20000, 256), torch.randn(1024, 256), torch.randn(1024)
faults = []
def steps():
    for _ in range(32):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        y = torch.nn.functional.linear(x, w, b); z = y.relu(); del y, z
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
if sys.argv[1] == "thread":  # as in the app, whose server runs models in worker threads
    worker = threading.Thread(target=steps); worker.start(); worker.join()
else:
    steps()
print(on, *faults)
"""
PAGES = 2 * 20000 * 1024 * 4 // 4096  # both activations, in 4 KB pages


def _faults(setting: str, where: str = "main") -> tuple[bool, list[int]]:
    env = {**os.environ, "GDINO_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", PROBE, where], capture_output=True, text=True, env=env, check=True)
    on, *faults = out.stdout.split()
    return on == "True", [int(f) for f in faults]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
@pytest.mark.parametrize("where", ["main", "thread"])
def test_freed_memory_is_reused(where):
    on, kept = _faults("keep", where)
    off, system = _faults("system", where)
    assert on and not off
    # glibc's default unmaps large blocks on free: every step faults all its pages in again
    assert all(f > PAGES // 2 for f in system[-4:]), system
    # kept: once glibc's aligned allocations settle (seen after 2 to 12 steps over 20 runs in a fresh
    # venv, in a worker thread), the steps reuse the heap
    assert all(f < PAGES // 20 for f in kept[-4:]), kept


def test_load_model_turns_it_on(tiny_hf, monkeypatch):
    import gdino

    calls = []
    monkeypatch.setattr("gdino.weights.hub.keep_freed_memory", lambda: calls.append(1) or True)
    gdino.load_model(tiny_hf[1])
    assert calls == [1]


def test_a_mistyped_setting_is_refused(monkeypatch):
    from gdino import memory

    monkeypatch.setenv("GDINO_MALLOC", "off")
    memory.keep_freed_memory.cache_clear()
    try:
        with pytest.raises(ValueError, match="GDINO_MALLOC must be 'keep' \\(the default\\) or 'system', got 'off'"):
            memory.keep_freed_memory()
    finally:
        memory.keep_freed_memory.cache_clear()
