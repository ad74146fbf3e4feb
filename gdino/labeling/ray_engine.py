"""`gdino label --engine ray`: detection on a Ray Data actor pool; the driver stays the only writer.

    tasks (image_id, key, name, path)  --from_items-->  actors: read and decode (`sources.read_image`:
    local files and object-store URIs), detect (+ segment) with `labeling.detect_objects`  -->  result rows
    (`results.py`)  --iter_rows-->  the driver, which stores them as the plain engine does
    (`results.store_row`, a batch per transaction), or, with `results=DIR`, the actors write the rows as
    Parquet shards and the driver only counts them.

Each actor loads the Detector (and Segmenter) once, runs torch on as many threads as it has CPUs, and
turns every per-image failure (unreadable file, a model error) into an `error` in its row: one bad file
never kills the job. Paths are read inside the actors (local paths, or URIs that pyarrow's filesystems
open), so only small rows travel, and the pool never waits on a read stage for CPUs (a 2-CPU Ray whose
actors asked for every CPU deadlocked behind `read_binary_files` here).

Ray is imported here and in `ray_session` only, inside functions, so that `import gdino.labeling.ray_engine`
costs nothing.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from ..processing import ImageError
from ..sources import read_image
from .label import detect_objects
from .loading import DetectorSpec, SegmenterSpec, load_detector, load_segmenter
from .ray_session import RayEngineError, RayOptions, ray_session
from .results import COLUMNS, NEW_IMAGE, make_row, write_shard
from .settings import LabelSettings

__all__ = ["NEW_IMAGE", "Labeler", "RayEngineError", "RayOptions", "RayRunError", "Task", "label_on_ray"]


class RayRunError(RuntimeError):
    """The Ray job itself failed (an actor died, a model would not load on a worker). What the driver stored
    before stays; a re-run resumes."""


@dataclass(frozen=True)
class Task:
    """One image to label. path: the file the actor reads (local path or URI); key: where it came from;
    image_id: NEW_IMAGE for an object-store image the project does not hold yet."""

    image_id: int
    key: str
    name: str
    path: str


class Labeler:
    """The actor pool's callable: a batch of tasks (numpy columns) -> result rows (`results.py`)."""

    def __init__(self, detector: dict, segmenter: dict | None, run: dict, threads: int, batch_size: int,
                 results: str | None):
        import torch

        torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS, torch's own pool needs telling too
        # a device of None (only with a GPU asked for): CUDA when the actor has one
        self.detector = load_detector(DetectorSpec(**detector))
        self.segmenter = None if segmenter is None else load_segmenter(SegmenterSpec(**segmenter))
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
                rows[k] = make_row(task.image_id, task.key, task.name, objects=objects, run=self.run,
                                   size=pixels[ok.index(k)].size)
        return [rows[k] for k in range(len(tasks))]


def label_on_ray(tasks: Sequence[Task], detector: DetectorSpec, segmenter: SegmenterSpec | None, run: dict,
                 options: RayOptions, on_row: Callable[[dict], None], on_start: Callable[[], None] | None = None) -> None:
    """Label `tasks` on Ray, each actor loading `detector` (and `segmenter`; None: boxes only). `on_row(row)`
    is called on the driver for each result, as it arrives (in no particular order). Starts a private local
    Ray (or joins options.address) and leaves it when done, also on an error or Ctrl-C. on_start: called
    once Ray is up (e.g. to start a progress clock)."""
    if not tasks:
        return
    with ray_session(options) as (ray, cpus_per_actor):
        gpus = options.gpus_per_actor
        if gpus > 0 and ray.cluster_resources().get("GPU", 0) < gpus:
            raise RayEngineError(f"--gpus-per-actor {gpus:g}: the Ray cluster has {ray.cluster_resources().get('GPU', 0):g} "
                                 "GPU(s); an actor asking for more would wait forever. Use --gpus-per-actor 0 (CPU)")
        if gpus == 0:  # a GPU Ray did not assign stays free for the actors that asked for it
            detector = detector if detector.device is not None else replace(detector, device="cpu")
            segmenter = segmenter if segmenter is None or segmenter.device is not None else replace(segmenter, device="cpu")
        threads = max(1, int(cpus_per_actor))
        ds = ray.data.from_items([asdict(t) for t in tasks], override_num_blocks=max(1, min(len(tasks), 200)))
        per_call = max(options.batch_size, options.rows_per_call or (64 if options.results else 16))
        models = {"detector": asdict(detector), "segmenter": None if segmenter is None else asdict(segmenter)}
        with warnings.catch_warnings():  # Ray 2.60's notice that **ray_remote_args (max_restarts) goes in 2.64
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(Labeler, batch_size=per_call, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=options.actors), num_cpus=cpus_per_actor,
                                num_gpus=gpus or None, fn_constructor_kwargs={
                                    **models, "run": run, "threads": threads, "batch_size": options.batch_size,
                                    "results": options.results}, **no_restarts(ray.data.Dataset.map_batches))
        if on_start is not None:
            on_start()
        try:
            for row in ds.iter_rows():
                on_row(row)
        except ray.exceptions.RayError as err:
            first = str(err).strip().splitlines()
            raise RayRunError(f"{type(err).__name__}: {first[-1] if first else ''}") from err


def no_restarts(map_batches) -> dict:
    """map_batches' argument for actors that are not restarted: an actor that dies (out of memory) fails the
    run at once, where Ray's default restarts it forever; what was stored stays and a re-run resumes. It
    also spares the run Ray's error line about restartable actors' constructor arguments
    (ray-project/ray#53727). Ray 2.60 takes it only through **ray_remote_args (deprecated for 2.64: the call
    is made with that warning silenced); a Ray that takes neither keeps its default."""
    parameters = inspect.signature(map_batches).parameters
    named = "max_restarts" in parameters
    if named or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return {"max_restarts": 0}
    return {}
