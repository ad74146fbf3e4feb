"""Batch jobs off the request queue: *Auto-label all* and *Train on reviewed images* run in a background
thread of the server, one job per project: labeling image by image, training step by step.

Every model call of the process, the jobs' and the visitors' (Detect, a SAM click), holds `model_lock`
for one image at a time, so an interactive call waits at most for the image a job is on. The page does
not wait for a job: it starts it, then polls `status` (which outlives a reload: jobs are keyed by the
project folder, not by the browser tab). Cancel stops after the current image; starting again resumes
with the images still unlabeled. A training job holds `model_lock` for one step at a time; cancelled, it
keeps its last finished epoch, and starting the same training again resumes there.

`Prefetch` is the server's one thread that embeds, in review, the image each window would show next, so that
the first click there runs only SAM's decoder.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from gdino.labeling import LabelSettings, label_images, makes_masks

from .models import said_plainly


class TrainingBusyError(ValueError):
    """The server is training another project's model."""


class FairLock:
    """A lock handed out in the order it was asked for. A job releases the models after each image and
    asks again at once; with an ordinary lock it could win again and again over a waiting visitor."""

    def __init__(self):
        self._cond = threading.Condition()
        self._next = 0  # the next ticket to hand out
        self._serving = 0  # the ticket that holds the lock

    def __enter__(self) -> FairLock:
        with self._cond:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


@dataclass(kw_only=True)
class _Background:
    """What every job has: its state, its error, its stop switch and its thread."""

    state: str = "running"  # running, done, cancelled, failed
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(kw_only=True)
class Job(_Background):
    total: int
    done: int = 0
    labeled: int = 0
    objects: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # image id -> why
    kept: int = 0  # images a person marked meanwhile: left as they were
    started: float = field(default_factory=time.monotonic)

    # what the line says of the job: its name, and its last words when cancelled and when done
    title = "auto-label all"
    objects_are = "object(s)"
    when_cancelled = "cancelled; start it again to continue with the rest"
    when_done = "done"

    def text(self) -> str:
        """One line for the page."""
        head = f"{self.title}: {self.done} / {self.total} image(s), {self.objects} {self.objects_are}"
        if self.failed:
            head += f", {len(self.failed)} failed"
        if self.state == "running":
            return head + (" - cancelling after this image" if self.stop.is_set() else " - running")
        if self.state == "cancelled":
            return f"{head} - {self.when_cancelled}"
        if self.state == "failed":
            return head + f" - stopped: {self.error}"
        return f"{head} - {self.when_done}"


@dataclass(kw_only=True)
class SimilarJob(Job):
    """Find similar across the project: the exemplars of one image carried to the project's other images."""

    class_name: str
    objects_are = "object(s) added"
    when_cancelled = "cancelled; run it again to search the rest (what was found stays, nothing twice)"
    when_done = "done (Ctrl+Z on an image takes back what was added there)"

    @property
    def title(self) -> str:
        return f"find similar ({self.class_name}) in the other images"


@dataclass(kw_only=True)
class TrainJob(_Background):
    epochs: int
    out: Path  # the model directory it writes (under the project's models/)
    epoch: int = 0
    done: int = 0  # steps done (the page's poll notices progress by it)
    loss: float | None = None
    measuring: tuple[str, int, int] | None = None  # (which model, images done, of) while held-out images are measured
    result: object | None = None  # gdino.train.trainer.TrainResult once done
    failed: dict = field(default_factory=dict)  # no per-image failures: the shape of Job's

    def text(self) -> str:
        head = f"training: epoch {self.epoch} / {self.epochs}" + (f", loss {self.loss:.3f}" if self.loss is not None
                                                                   else ", preparing")
        if self.measuring is not None and self.state == "running":
            which, done, total = self.measuring
            head = (f"training: epoch {self.epoch} / {self.epochs}, measuring the {which} model on the held-out "
                    f"images ({done} / {total})")
        if self.state == "running":
            return head + (" - stopping after this step" if self.stop.is_set() else " - running")
        if self.state == "cancelled":
            return head + " - stopped; the last finished epoch is kept: train again with the same settings to resume"
        if self.state == "failed":
            return head + f" - stopped: {self.error}"
        r = self.result
        if r is None or r.base is None or r.tuned is None or r.base.map50 is None or r.tuned.map50 is None:
            return f"training done ({self.epochs} epochs, no held-out images to measure): 'Use the trained model' to " \
                   "label with it"
        return (f"training done: held-out mAP@0.5 {r.base.map50:.3f} (base model) -> {r.tuned.map50:.3f} (fine-tuned), "
                f"mAP@[.5:.95] {r.base.map:.3f} -> {r.tuned.map:.3f}, {r.val_images} held-out image(s); "
                "'Use the trained model' to label with it")


class Jobs:
    def __init__(self):
        self.model_lock = FairLock()  # one image at a time through the models, jobs and visitors alike
        self._jobs: dict[Path, Job] = {}
        self._lock = threading.Lock()

    def get(self, project_dir: Path) -> Job | None:
        with self._lock:
            return self._jobs.get(project_dir)

    def start(self, project, detector: Callable, settings: LabelSettings, segmenter: Callable | None = None,
              images: Callable[[int], object] | None = None) -> Job:
        """Start labeling the project's unlabeled images, unless a job of this project is running (that one
        is returned). `detector` / `segmenter` are called in the job's thread to get the models, so a slow
        first load does not hold up the request either. images: image_id -> what to read (as in
        `label_images`; the app checks each file at the moment it is read)."""
        with self._lock:
            job = self._jobs.get(project.path)
            if job is not None and job.running:
                return job
            todo = [r.id for r in project.images(status="unlabeled", order="name")]
            job = Job(total=len(todo))
            job.thread = threading.Thread(target=self._run, args=(job, project, todo, detector, settings, segmenter, images),
                                          name=f"gdino-job-{project.path.name}", daemon=True)
            self._jobs[project.path] = job
        job.thread.start()
        return job

    def start_similar(self, project, detector: Callable, source_id: int, positive_ids, negative_ids, class_name: str,
                      images: Callable[[int], object]) -> Job:
        """Search the project's other images (gdino.labeling.similar.similar_targets) for more like the exemplars,
        unless a job of this project is running (that one is returned). `detector` is called in the job's thread."""
        from gdino.labeling.similar import similar_targets

        with self._lock:
            job = self._jobs.get(project.path)
            if job is not None and job.running:
                return job
            targets = similar_targets(project, source_id)
            job = SimilarJob(total=len(targets), class_name=class_name)
            args = (job, project, detector, source_id, tuple(positive_ids), tuple(negative_ids), targets, images)
            job.thread = threading.Thread(target=self._similar, args=args, name=f"gdino-similar-{project.path.name}",
                                          daemon=True)
            self._jobs[project.path] = job
        job.thread.start()
        return job

    def _similar(self, job: SimilarJob, project, detector: Callable, source_id: int, positive_ids, negative_ids,
                 targets: list[int], images: Callable[[int], object]) -> None:
        from gdino.labeling.similar import similar_in_project

        def progress(summary) -> None:
            job.done = len(summary.searched) + len(summary.failed) + len(summary.kept)
            job.kept = len(summary.kept)
            job.objects = summary.objects
            job.failed = dict(summary.failed)
        try:
            det = detector()
            if getattr(det, "family", None) != "sam3":
                raise ValueError("find similar needs a SAM 3 model; this project uses Grounding DINO: choose a SAM 3 "
                                 "model under Model")
            summary = similar_in_project(project, det, source_id, positive_ids, negative_ids, targets, images,
                                         lock=self.model_lock, should_stop=job.stop.is_set, progress=progress)
            progress(summary)
            job.state = "cancelled" if summary.cancelled else "done"
        except Exception as err:  # the model failed to load, the examples are gone, the disk is full: in the page
            job.error = str(err)
            job.state = "failed"

    def start_training(self, project, base: str, out: Path, config, device: str | None = None,
                       text_encoder: str | None = None, images: Callable[[int], object] | None = None) -> TrainJob | Job:
        """Fine-tune `base` on the project's reviewed images into `out` (gdino.train.train), unless a job of this
        project is running (that one is returned). One training at a time on the server: each holds a model of
        its own and its optimizer; another project's request is refused with a message."""
        with self._lock:
            job = self._jobs.get(project.path)
            if job is not None and job.running:
                return job
            if any(isinstance(j, TrainJob) and j.running for j in self._jobs.values()):
                raise TrainingBusyError("another project is training on this server now; train again when it has ended")
            job = TrainJob(epochs=config.epochs, out=out)
            job.thread = threading.Thread(target=self._train, args=(job, project, base, config, device, text_encoder,
                                                                    images),
                                          name=f"gdino-train-{project.path.name}", daemon=True)
            self._jobs[project.path] = job
        job.thread.start()
        return job

    def _train(self, job: TrainJob, project, base: str, config, device: str | None, text_encoder: str | None,
               images) -> None:
        from gdino.train.trainer import train
        from gdino.weights.hub import WeightsError

        def progress(p) -> None:
            job.epoch, job.loss, job.done, job.measuring = p.epoch, p.loss, job.done + 1, None
            if job.stop.is_set():
                raise KeyboardInterrupt  # the trainer keeps its last finished epoch

        def measuring(which: str, done: int, total: int) -> None:
            job.measuring, job.done = (which, done, total), job.done + 1
            if job.stop.is_set():
                raise KeyboardInterrupt
        try:
            job.result = train(project, base, job.out, config, device=device, progress=progress,
                               step_lock=self.model_lock, text_encoder=text_encoder, images=images,
                               restart_other_run=True,  # changed labels since a stopped run: start over
                               measuring=measuring)
            job.epoch = job.epochs
            job.state = "done"
        except KeyboardInterrupt:
            job.state = "cancelled"
        except WeightsError as err:
            job.error = said_plainly("the base model", err)
            job.state = "failed"
        except Exception as err:  # nothing to train on, the disk is full: said in the page
            job.error = str(err).replace("run the same command again", "train again with the same settings")
            job.state = "failed"

    def running_any(self) -> bool:
        """Whether any job (auto-label or training) runs on the server's models now."""
        with self._lock:
            return any(job.running for job in self._jobs.values())

    def busy(self, project_dir: Path) -> bool:
        """Whether a job is running on the project (its Project must stay open)."""
        job = self.get(project_dir)
        return job is not None and job.running

    def cancel(self, project_dir: Path) -> Job | None:
        job = self.get(project_dir)
        if job is not None and job.running:
            job.stop.set()
        return job

    def _run(self, job: Job, project, todo: list[int], detector: Callable, settings: LabelSettings,
             segmenter: Callable | None, images: Callable[[int], object] | None = None) -> None:
        try:
            det = detector()
            if makes_masks(det):  # SAM 3: its own masks, always stored; no SAM needed
                settings = replace(settings, masks=True)
            seg = segmenter() if settings.masks and segmenter is not None and not makes_masks(det) else None
            for image_id in todo:
                if job.stop.is_set():
                    job.state = "cancelled"
                    return
                with self.model_lock:  # one image; a visitor's call goes next if one is waiting
                    summary = label_images(project, det, [image_id], settings, segmenter=seg, images=images,
                                           if_status=("unlabeled",), add_all_classes=False, keep_phrases=True)
                job.done += 1
                job.labeled += len(summary.labeled)
                job.objects += summary.objects
                job.kept += len(summary.kept)
                job.failed.update(summary.failed)
            job.state = "done"
        except Exception as err:  # the models failed to load, the disk is full: said in the page
            job.error = str(err)
            job.state = "failed"

    def wait(self, project_dir: Path, timeout: float | None = None) -> Job | None:
        """Block until the project's job ends (tests, shutdown)."""
        job = self.get(project_dir)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        return job


PREFETCH_NICE = 19  # the prefetch thread's niceness: a click (nice 0) gets nearly all the CPU while both run


def yield_to_clicks() -> None:
    """Lower the calling thread's priority to PREFETCH_NICE (Linux: niceness is per thread, and the OpenMP
    workers torch starts from this thread inherit it), so that an embedding computed ahead slows a click's
    decoder on the same cores by little. Where the system has no per-thread niceness: nothing changes."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PREFETCH_NICE)


@dataclass
class _Wanted:
    name: tuple  # what is embedded, for tests and logs: (project folder, image id, SAM key)
    read: Callable[[], object]  # -> the image's pixels
    embed: Callable[[object], None]  # pixels -> None: the embedding computed and kept (memory, the project's store)


class Prefetch:
    """One background thread for the whole server that embeds the images windows will show next, one at a time.

    Each window (a key) has at most one request waiting: a newer one replaces it (the person went elsewhere before
    it started). Requests run oldest first, one at a time, beside clicks (not under the model lock: a click on the
    image shown never waits for the next one's embedding); while `busy()` (a job runs on the models) a request is
    dropped instead. An image embedded before costs no encoder call (the Segmenter's caches); a click on the image being
    embedded waits for it (the Segmenter's in-flight table). Errors are dropped with the request: the click
    computes the embedding itself then. `hold()` / `release()` keep the thread from starting the next request
    (tests: deterministic queues)."""

    def __init__(self, busy: Callable[[], bool]):
        self._busy = busy
        self._cond = threading.Condition()
        self._waiting: dict[str, _Wanted] = {}  # window -> its request, oldest first
        self._current: _Wanted | None = None
        self._held = False
        self._thread: threading.Thread | None = None
        self.embedded: list[tuple] = []  # names of the requests run to the end, in order (the last 100)
        self.dropped = 0  # replaced before they started, or skipped while a job ran
        self.errors: list[str] = []  # the last few requests that failed (their image gone, SAM missing ...)

    def want(self, window: str, name: tuple, read: Callable[[], object], embed: Callable[[object], None]) -> None:
        """Queue `name` for `window`, replacing the window's request that has not started. A name embedded
        lately is not queued again (not even its picture is read)."""
        with self._cond:
            if name in self.embedded:
                return
            if self._waiting.pop(window, None) is not None:
                self.dropped += 1
            self._waiting[window] = _Wanted(name, read, embed)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="gdino-sam-prefetch", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def hold(self) -> None:
        with self._cond:
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def waiting(self) -> list[tuple]:
        """The names of the requests not started yet, oldest first."""
        with self._cond:
            return [w.name for w in self._waiting.values()]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is waiting or running (False on timeout, or while held with requests waiting)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and self._current is None, timeout)

    def _work(self) -> None:
        yield_to_clicks()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting and not self._held)
                window = next(iter(self._waiting))
                self._current = self._waiting.pop(window)
            wanted = self._current
            try:
                if self._busy():
                    with self._cond:
                        self.dropped += 1
                    continue
                wanted.embed(wanted.read())
                with self._cond:
                    self.embedded = [*self.embedded[-99:], wanted.name]
            except Exception as err:  # the image was removed, SAM cannot load: the click will say so
                with self._cond:
                    self.errors = [*self.errors[-9:], f"{wanted.name}: {err}"]
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()
