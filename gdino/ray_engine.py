"""`gdino label --engine ray`: detection on a Ray Data actor pool; the driver stays the only writer.

    tasks (image_id, key, name, path)  --from_items-->  actors: read bytes, decode (`processing.to_rgb`),
    detect (+ segment) with `labeling.detect_objects`  -->  result rows (`gdino.results`)  --iter_rows-->
    the driver, which stores each row as the plain engine does (`results.store_row`), or, with
    `results=DIR`, the actors write the rows as Parquet shards and the driver only counts them.

Each actor loads the Detector (and Segmenter) once, runs torch on as many threads as it has CPUs, and
turns every per-image failure (unreadable file, a model error) into an `error` in its row: one bad file
never kills the job. Paths are read inside the actors (local paths, or URIs that pyarrow's filesystems
open), so only small rows travel, and the pool never waits on a read stage for CPUs (a 2-CPU Ray whose
actors asked for every CPU deadlocked behind `read_binary_files` here).

Ray is imported here only, inside functions, so that `import gdino.ray_engine` costs nothing.
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
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from .processing import ImageError, to_rgb
from .results import COLUMNS, make_row, write_shard


class RayEngineError(ValueError):
    """Ray is missing, or the cluster cannot run what was asked (no GPUs): a usage error."""


class RayRunError(RuntimeError):
    """The Ray job itself failed (an actor died, a model would not load on a worker). What the driver stored
    before stays; a re-run resumes."""


@dataclass(frozen=True)
class ModelSpec:
    """What each actor loads: the flags of `gdino label`, as plain values (they travel to the actors)."""

    model: str
    text_encoder: str | None = None
    device: str | None = None  # None: cuda when the actor has a GPU, else cpu
    dtype: str = "float32"
    sam: str | None = None  # None: boxes only


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


@dataclass(frozen=True)
class Task:
    """One image to label. path: the file the actor reads (local path or URI); key: where it came from."""

    image_id: int
    key: str
    name: str
    path: str


def read_image(path: str):
    """A local path or a pyarrow-filesystem URI -> an upright RGB PIL image (`to_rgb`: the same checks and
    ImageErrors as the plain engine). A URI's bytes go to a temporary file first, so that decoding is
    exactly that of a local file."""
    if "://" not in path or path.startswith("file://"):
        return to_rgb(path.removeprefix("file://"))
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    suffix = os.path.splitext(inner)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        with filesystem.open_input_stream(inner) as stream:
            shutil.copyfileobj(stream, tmp)
        tmp.flush()
        try:
            return to_rgb(tmp.name)
        except ImageError as err:
            raise ImageError(str(err).replace(tmp.name, path)) from None


class Labeler:
    """The actor pool's callable: a batch of tasks (numpy columns) -> result rows (`gdino.results`)."""

    def __init__(self, spec: dict, run: dict, threads: int, batch_size: int, results: str | None):
        import torch

        from .detector import Detector
        from .labeling import LabelSettings
        from .segment import Segmenter

        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS, torch's own pool needs telling too
        model = ModelSpec(**spec)
        device = model.device or ("cuda" if torch.cuda.is_available() else "cpu")  # None only with a GPU asked for
        self.detector = Detector.from_pretrained(model.model, text_encoder=model.text_encoder, device=device,
                                                 dtype=getattr(torch, model.dtype))
        self.segmenter = None if model.sam is None else Segmenter.from_pretrained(model.sam, device=device)
        self.settings = LabelSettings.from_run(run)
        self.run = run
        self.batch_size = batch_size
        self.results = results

    def __call__(self, batch: dict) -> dict:
        tasks = [Task(int(i), str(k), str(n), str(p))
                 for i, k, n, p in zip(batch["image_id"], batch["key"], batch["name"], batch["path"], strict=True)]
        out = []
        for start in range(0, len(tasks), self.batch_size):  # decoded images held for one model call only
            out.extend(self._label(tasks[start:start + self.batch_size]))
        if self.results is not None:  # durable on the workers' side; the driver only counts
            write_shard(self.results, out)
            out = [{**row, "objects": "[]"} for row in out]
        return {c: [row[c] for row in out] for c in COLUMNS}

    def _label(self, tasks: list[Task]) -> list[dict]:
        from .labeling import detect_objects

        rows: dict[int, dict] = {}
        pixels, ok = [], []
        for k, task in enumerate(tasks):
            try:
                pixels.append(read_image(task.path))
                ok.append(k)
            except (ImageError, OSError) as err:
                rows[k] = make_row(task.image_id, task.key, task.name, error=str(err), run=self.run)
        try:
            found = detect_objects(self.detector, pixels, self.settings, segmenter=self.segmenter,
                                   batch_size=self.batch_size)
        except Exception as err:  # noqa: BLE001 - a model failure fails these images (listed, retried), not the job
            found = [ImageError(f"{type(err).__name__}: {err}")] * len(ok)
        for k, objects in zip(ok, found, strict=True):
            task = tasks[k]
            if isinstance(objects, ImageError):
                rows[k] = make_row(task.image_id, task.key, task.name, error=str(objects), run=self.run)
            else:
                rows[k] = make_row(task.image_id, task.key, task.name, objects=objects, run=self.run)
        return [rows[k] for k in range(len(tasks))]


def label_on_ray(tasks: Sequence[Task], spec: ModelSpec, run: dict, options: RayOptions,
                 on_row: Callable[[dict], None], on_start: Callable[[], None] | None = None) -> None:
    """Label `tasks` on Ray; `on_row(row)` is called on the driver for each result, as it arrives (in no
    particular order). Starts a private local Ray (or joins options.address) and leaves it when done,
    also on an error or Ctrl-C. on_start: called once Ray is up (e.g. to start a progress clock)."""
    if not tasks:
        return
    with ray_session(options) as (ray, cpus_per_actor):
        gpus = options.gpus_per_actor
        if gpus > 0 and ray.cluster_resources().get("GPU", 0) < gpus:
            raise RayEngineError(f"--gpus-per-actor {gpus:g}: the Ray cluster has {ray.cluster_resources().get('GPU', 0):g} "
                                 "GPU(s); an actor asking for more would wait forever. Use --gpus-per-actor 0 (CPU)")
        model = asdict(spec)
        if model["device"] is None and gpus == 0:
            model["device"] = "cpu"  # a GPU Ray did not assign stays free for the actors that asked for it
        threads = max(1, int(cpus_per_actor))
        ds = ray.data.from_items([asdict(t) for t in tasks], override_num_blocks=max(1, min(len(tasks), 200)))
        with warnings.catch_warnings():
            # max_restarts has no named parameter yet (Ray 2.60 warns that the kwargs path goes in 2.64). 0: an actor
            # that dies (out of memory) fails the run at once, where Ray's default restarts it forever; the
            # results stored so far stay and a re-run resumes. It also spares the run Ray's error line about
            # restartable actors' constructor arguments (ray-project/ray#53727).
            warnings.simplefilter("ignore", DeprecationWarning)
            per_call = max(options.batch_size, options.rows_per_call or (64 if options.results else 16))
            ds = ds.map_batches(Labeler, batch_size=per_call, batch_format="numpy", concurrency=options.actors,
                                num_cpus=cpus_per_actor, num_gpus=gpus or None,
                                fn_constructor_kwargs={"spec": model, "run": run, "threads": threads,
                                                       "batch_size": options.batch_size, "results": options.results},
                                max_restarts=0)
        if on_start is not None:
            on_start()
        try:
            for row in ds.iter_rows():
                on_row(row)
        except ray.exceptions.RayError as err:
            first = str(err).strip().splitlines()
            raise RayRunError(f"{type(err).__name__}: {first[-1] if first else ''}") from err


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
    code = "import sys; from gdino.ray_engine import reap; reap(sys.argv[1], int(sys.argv[2]))"
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
