"""A private local Ray for one run, or a joined cluster, quiet unless asked (`ray_session`); and the reaper
that removes what a killed driver's private Ray leaves running (`reap`, `session_pids`).

Ray is imported here only, inside functions. Measured pitfalls behind the choices: ../shared/reference/ray.md
(a 2-CPU Ray deadlocked behind its own read tasks: one logical CPU more; socket paths of 107 bytes: a short
temp folder; token auth warns at every start: off for a private Ray bound to 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


class RayEngineError(ValueError):
    """Ray is missing, or the cluster cannot run what was asked (no GPUs): a usage error."""


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a private local Ray; "auto" or "ray://host:10001": join that cluster
    actors: int = 1
    cpus_per_actor: float | None = None  # None: a local Ray's CPUs shared by the actors; 1 on a cluster
    gpus_per_actor: float = 0.0
    batch_size: int = 1  # images per model call
    rows_per_call: int | None = None  # images per actor call: a progress step, and a Parquet shard with `results`
    # (default: 16 streaming, 64 into `results`)
    results: str | None = None  # a folder or URI: the actors write Parquet shards there instead of streaming objects
    verbose: bool = False  # Ray's own progress bars and logs


@contextmanager
def ray_session(options: RayOptions) -> Iterator[tuple[object, float]]:
    """(the ray module, CPUs per actor) on a started or joined Ray, quiet unless options.verbose."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayEngineError('--engine ray needs Ray: pip install "gdino[ray]"') from None
    if ray.is_initialized():  # a caller's own Ray (a notebook): use it, leave it running
        yield ray, _cpus_per_actor(ray, options, local=False)
        return
    _quiet(ray, options.verbose)
    level = logging.INFO if options.verbose else logging.ERROR
    if options.address is not None:
        ray.init(address=options.address, log_to_driver=options.verbose, logging_level=level)
        try:
            yield ray, _cpus_per_actor(ray, options, local=False)
        finally:
            ray.shutdown()
        return
    # A private Ray for this run: bound to this machine, in its own short temp folder (Ray's socket paths have
    # a 107-byte limit), gone afterwards. Token auth guards a shared cluster; here it would only print a
    # warning and write a token under ~/.ray, so it is off unless the caller chose otherwise.
    base = tempfile.gettempdir() if len(tempfile.gettempdir()) <= 40 else "/tmp"
    temp_dir = tempfile.mkdtemp(prefix="gdino-ray-", dir=base)
    reaper = _start_reaper(temp_dir)
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", SESSION_VAR)}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ[SESSION_VAR] = temp_dir  # inherited by every Ray process: how the reaper finds them
    try:
        cpus = os.cpu_count() or 1
        # one logical CPU more than the actors take, so Ray Data's own tasks are never starved by the pool
        ray.init(num_cpus=cpus + 1, include_dashboard=False, log_to_driver=options.verbose, logging_level=level,
                 _temp_dir=temp_dir, _node_ip_address="127.0.0.1", object_store_memory=_object_store_bytes())
        yield ray, _cpus_per_actor(ray, options, local=True)
    finally:
        try:
            ray.shutdown()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _stop_reaper(reaper)


SESSION_VAR = "GDINO_RAY_SESSION"


def _start_reaper(temp_dir: str) -> subprocess.Popen:
    """A small process that outlives this one: when our end of its stdin closes (we are done, or were
    killed), it kills what is left of the private Ray (a SIGKILLed driver leaves Ray's agents running for
    a minute or more) and removes the temp folder. Its own session: Ctrl-C in the terminal is not for it."""
    env = {k: v for k, v in os.environ.items() if k != SESSION_VAR}
    code = "import sys; from gdino.labeling.ray_session import reap; reap(sys.argv[1], int(sys.argv[2]))"
    return subprocess.Popen([sys.executable, "-c", code, temp_dir, str(os.getpid())], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _stop_reaper(reaper: subprocess.Popen) -> None:
    reaper.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):  # past that it goes on alone
        reaper.wait(timeout=30)


def reap(temp_dir: str, driver: int) -> None:
    """The reaper's body: wait for EOF on stdin, then SIGKILL every process of the Ray session in `temp_dir`:
    those whose environment carries the session marker, or that hold a file open under `temp_dir` (Ray's
    workers and agents rewrite their process titles, which clobbers /proc/PID/environ, but keep their log
    files open). Linux /proc only; elsewhere only the folder is removed."""
    sys.stdin.buffer.read()
    time.sleep(0.5)  # a normal shutdown is already under way: let Ray's processes exit on their own first
    for _ in range(3):
        pids = session_pids(temp_dir, exclude=(os.getpid(), driver))
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            break
        time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


def session_pids(temp_dir: str, exclude: Sequence[int] = ()) -> list[int]:
    """Live processes of the private Ray session in `temp_dir` (see `reap`); [] where there is no /proc."""
    marker, prefix = f"{SESSION_VAR}={temp_dir}".encode(), temp_dir.rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                ours = marker in f.read().split(b"\0")
            if not ours:
                links = (os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd"))
                ours = any(link.startswith(prefix) for link in links)
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        if ours:
            found.append(int(entry))
    return found


def _cpus_per_actor(ray, options: RayOptions, *, local: bool) -> float:
    if options.cpus_per_actor is not None:
        return options.cpus_per_actor
    if local:
        return max(1.0, (os.cpu_count() or 1) / options.actors)
    return 1.0


def _object_store_bytes() -> int:
    """Rows are small (paths in, boxes out): a modest store, not Ray's default of 30% of memory."""
    return 512 * 1024 * 1024


def _quiet(ray, verbose: bool) -> None:
    """Ray Data's progress bars, its start-of-run banner and its status blocks off, unless verbose."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
