"""Batch jobs off the request queue: *Auto-label all* runs in a background thread of the server, one job per
project, image by image.

Every model call of the process, the jobs' and the visitors' (Detect, a SAM click), holds `model_lock`
for one image at a time, so an interactive call waits at most for the image a job is on. The page does
not wait for a job: it starts it, then polls `status` (which outlives a reload: jobs are keyed by the
project folder, not by the browser tab). Cancel stops after the current image; starting again resumes
with the images still unlabeled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gdino.labeling import LabelSettings, label_images


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


@dataclass
class Job:
    total: int
    done: int = 0
    labeled: int = 0
    objects: int = 0
    failed: dict[int, str] = field(default_factory=dict)  # image id -> why
    kept: int = 0  # images a person marked meanwhile: left as they were
    state: str = "running"  # running, done, cancelled, failed
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def text(self) -> str:
        """One line for the page."""
        head = f"auto-label all: {self.done} / {self.total} image(s), {self.objects} object(s)"
        if self.failed:
            head += f", {len(self.failed)} failed"
        if self.state == "running":
            return head + (" - cancelling after this image" if self.stop.is_set() else " - running")
        if self.state == "cancelled":
            return head + " - cancelled; start it again to continue with the rest"
        if self.state == "failed":
            return head + f" - stopped: {self.error}"
        return head + " - done"


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
            seg = segmenter() if settings.masks and segmenter is not None else None
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
