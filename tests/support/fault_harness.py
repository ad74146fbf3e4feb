"""Kill real `gdino` processes at random moments of one phase, then check what they left.

Used by tests/store/test_faults.py (a seeded, bounded run in CI) and bench/fault_injection.py (hundreds of
kills, by hand). A phase is found by watching the project database from outside, read-only, the way a
second program would: "adding" counts the image rows, "labeling" the images that left "unlabeled". A
label-run kill waits until a random number of the remaining images are done, then SIGKILLs at a random
moment within one image's measured time, so it lands inside the phase however loaded the machine is.
Import and export kills come at a random moment within the command's measured length.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def gdino_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "gdino.cli", *map(str, args)]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def run(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(gdino_cmd(*args), env=env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def write_images(folder: Path, count: int, seed: int = 0, size=(40, 56)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        path = folder / f"img_{k:03d}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# -- looking at a project from outside --------------------------------------------------------------------


def query(project: Path, sql: str, args=()) -> list[tuple]:
    """A read-only query, as another program would run it (never blocks the writer: WAL)."""
    db_path = project / "project.sqlite"
    if not db_path.is_file():
        return []
    db = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        db.close()


def count(project: Path, sql: str) -> int:
    rows = query(project, sql)
    return rows[0][0] if rows else 0


def integrity(project: Path) -> str:
    db = sqlite3.connect(project / "project.sqlite")
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def duplicate_sources(project: Path) -> int:
    """Images added twice from the same file: the same pixels under two rows (an object-store image: the same
    URI under two rows)."""
    rows = query(project, "SELECT path, copied FROM images")
    digests = [p if "://" in p and not c else hashlib.sha1((project / p if c else Path(p)).read_bytes()).hexdigest()
               for p, c in rows]
    return len(digests) - len(set(digests))


def objects_by_image(project: Path) -> dict[str, list[tuple]]:
    """name -> the image's objects (class, rounded box, score, source), sorted: comparable across runs."""
    out: dict[str, list[tuple]] = {name: [] for (name,) in query(project, "SELECT name FROM images")}
    for name, cls, x0, y0, x1, y1, score, source in query(
            project, "SELECT i.name, c.name, o.x0, o.y0, o.x1, o.y1, o.score, o.source FROM objects o "
                     "JOIN images i ON i.id = o.image_id JOIN classes c ON c.id = o.class_id"):
        out[name].append((cls, round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2),
                          None if score is None else round(score, 4), source))
    return {name: sorted(objs) for name, objs in out.items()}


def statuses(project: Path) -> dict[str, str]:
    return dict(query(project, "SELECT name, status FROM images"))


# -- killing ----------------------------------------------------------------------------------------------


def kill_during(cmd: list[str], started: Callable[[], bool], window: float, rng: random.Random,
                timeout: float = 120) -> tuple[bool, float]:
    """Start `cmd`; once `started()` turns true, SIGKILL it after a delay uniform in [0, window].
    Returns (killed, delay): killed is False if the process ended on its own first."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while not started():
            if proc.poll() is not None:
                return False, 0.0
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd} did not reach its phase in {timeout} s")
            time.sleep(0.005)
        delay = rng.uniform(0, window)
        try:
            proc.wait(timeout=delay)
            return False, delay
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, delay
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def tree_digest(folder: Path) -> dict[str, str]:
    """relative path -> sha1 of every file under folder ({} if it does not exist)."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {folder.name: hashlib.sha1(folder.read_bytes()).hexdigest()}
    return {p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the phases -------------------------------------------------------------------------------------------


def _phase_times(cmd: list[str], project: Path, n: int) -> dict[str, float]:
    """Run `cmd` to the end, watching the project: when adding and labeling began and ended (seconds)."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    marks: dict[str, float] = {}
    start = time.monotonic()
    while proc.poll() is None:
        now = time.monotonic() - start
        added = count(project, "SELECT COUNT(*) FROM images")
        labeled = count(project, "SELECT COUNT(*) FROM images WHERE status != 'unlabeled'")
        for key, hit in (("add0", added >= 1), ("add1", added >= n), ("lab0", labeled >= 1), ("lab1", labeled >= n)):
            if hit and key not in marks:
                marks[key] = now
        time.sleep(0.005)
    assert proc.returncode == 0, proc.stderr.read()
    end = time.monotonic() - start
    return {"add": max(marks.get("add1", end) - marks.get("add0", 0), 0.05),
            "label": max(marks.get("lab1", end) - marks.get("lab0", 0), 0.05)}


BOX_STEP, SCORE_STEP = 0.05, 5e-3  # how far two processes' runs of the same picture were seen apart, with room


def _close(a: tuple, b: tuple) -> bool:
    """Two objects of `objects_by_image` are the same object: class and source equal, box within BOX_STEP px,
    score within SCORE_STEP. Two `gdino label` processes on the same picture are not always bit-equal: in CI, on
    fresh clones, a picture's boxes came out equal to 0.01 px while two of its scores were 1e-4 and 7e-4 apart
    (the default fast mode on a CPU: bfloat16 products, where a change in the last bit of a sum can move a
    rounding); here, 12 runs in separate processes, some under load, were bit-equal. What this check is for is
    that no image holds part of its objects: a missing or added object, or one of another class, fails."""
    if (a[0], a[-1]) != (b[0], b[-1]) or (a[5] is None) != (b[5] is None):
        return False
    box = max(abs(x - y) for x, y in zip(a[1:5], b[1:5], strict=True))
    return box <= BOX_STEP and (a[5] is None or abs(a[5] - b[5]) <= SCORE_STEP)


def same_objects(got: list[tuple], expected: list[tuple]) -> bool:
    """The same objects, each within `_close` of one of the others (one to one): an object missing, added,
    moved or rescored beyond those steps is a difference."""
    if len(got) != len(expected):
        return False
    left = list(got)
    for obj in expected:
        match = next((k for k, other in enumerate(left) if _close(obj, other)), None)
        if match is None:
            return False
        left.pop(match)
    return True


def check_label_state(project: Path, reference: dict[str, list[tuple]], n: int) -> None:
    """After a kill: the database is sound, no file is in it twice, every image is whole (unlabeled and
    empty, or labeled with exactly the objects the uninterrupted run gave it)."""
    assert integrity(project) == "ok"
    images = count(project, "SELECT COUNT(*) FROM images")
    assert images <= n, f"{images} image rows for {n} files"
    assert duplicate_sources(project) == 0
    assert count(project, "SELECT COUNT(*) FROM sources") == images, "an image without its source key"
    objects = objects_by_image(project)
    for name, status in statuses(project).items():
        expected = [] if status == "unlabeled" else reference[name]
        got = objects[name]
        assert same_objects(got, expected), (f"{name} ({status}) holds part of its objects: only stored "
                                 f"{sorted(set(got) - set(expected), key=repr)}, only in the uninterrupted run "
                                 f"{sorted(set(expected) - set(got), key=repr)}")


def label_kills(tmp: Path, model_dir: Path, kills_per_phase: int, seed: int, n_images: int = 8) -> dict[str, int]:
    """SIGKILL `gdino label` during adding and during labeling, resuming each time; checks after every kill
    and at the end (the project equals an uninterrupted run's). Returns the kills per phase."""
    rng = random.Random(seed)
    photos = tmp / "photos"
    write_images(photos, n_images, seed, size=(48, 48))  # square: the model's smallest input (800x800)

    def label_cmd(project: Path) -> list[str]:
        return gdino_cmd("label", photos, "--classes", "cat, remote control", "--out", project, "--model", model_dir,
                         "--device", "cpu", "--box-threshold", "0.05")

    reference_project = tmp / "reference"
    times = _phase_times(label_cmd(reference_project), reference_project, n_images)
    reference = objects_by_image(reference_project)
    assert sum(map(len, reference.values())) > 0, "the reference run found no objects: the check would be empty"
    kills = {"adding": 0, "labeling": 0}
    chain = 0
    while min(kills.values()) < kills_per_phase:
        chain += 1
        assert chain <= 2 * kills_per_phase, f"could not land the kills: {kills}"
        project = tmp / f"chain{chain}"
        for phase in ("adding", "labeling"):
            for _ in range(4):  # a few kills of each phase per chain, so that several chains share them
                if kills[phase] >= kills_per_phase:
                    break
                sql = ("SELECT COUNT(*) FROM images" if phase == "adding"
                       else "SELECT COUNT(*) FROM images WHERE status != 'unlabeled'")
                before = count(project, sql)
                if n_images - before < 2:
                    break  # the last image's progress is seen only once it is done: nothing left to kill into
                # kill while the phase is on its (k+1)-th remaining image: k images done, then a random moment
                # within one image's time, so the kill lands inside the phase however fast the machine is now
                k = rng.randint(1, n_images - before - 1)
                per_image = times["add" if phase == "adding" else "label"] / max(n_images - 1, 1)

                def started(project=project, sql=sql, target=before + k) -> bool:
                    return count(project, sql) >= target

                killed, _ = kill_during(label_cmd(project), started, per_image, rng)
                if killed:
                    kills[phase] += 1
                    check_label_state(project, reference, n_images)
        final = subprocess.run(label_cmd(project), env=env(), capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert final.returncode == 0, final.stderr
        check_label_state(project, reference, n_images)
        assert statuses(project) == statuses(reference_project)
        final_objects = objects_by_image(project)
        assert final_objects.keys() == reference.keys()
        assert all(same_objects(final_objects[name], reference[name]) for name in reference)
    return kills


def similar_kills(tmp: Path, model_dir: Path, kills: int, seed: int, n_images: int = 10) -> int:
    """SIGKILL a run of find similar across a project (tests/support/similar_run.py, the app job's code path) while
    it adds what it found, image after image; after each kill every image holds what it had (nothing, and no edit)
    or exactly what an uninterrupted run added there (and one edit, undoable); a rerun then completes it to the
    uninterrupted run's project. Returns the kills that landed."""
    from gdino.store import ObjectState, Project

    rng = random.Random(seed)
    photos = write_images(tmp / "photos", n_images, seed, size=(120, 160))

    def fresh(name: str) -> tuple[Path, list]:
        folder = tmp / name
        with Project.create(folder) as project:
            ids = [project.add_image(p).id for p in photos]
            cup, pen = project.edit_objects(ids[0], new=[ObjectState("cup", (20, 30, 70, 90)),
                                                         ObjectState("pen", (90, 20, 150, 100))])
        return folder, [ids[0], cup.id, pen.id]

    def cmd(folder: Path, args: list) -> list[str]:
        return [sys.executable, str(ROOT / "tests" / "support" / "similar_run.py"), str(folder), str(model_dir),
                *map(str, args)]

    def found(folder: Path) -> int:  # images the run has added to
        return count(folder, "SELECT COUNT(DISTINCT image_id) FROM objects WHERE source = 'model'")

    def edits(folder: Path) -> dict[str, int]:
        return dict(query(folder, "SELECT i.name, COUNT(*) FROM edits e JOIN images i ON i.id = e.image_id "
                                  "WHERE e.undone = 0 GROUP BY i.name"))

    reference, args = fresh("reference")
    proc = subprocess.Popen(cmd(reference, args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    first = None  # when the first image got its additions: the time before it is the model's loading
    while proc.poll() is None:
        if first is None and found(reference) >= 1:
            first = time.monotonic()
        time.sleep(0.005)
    assert proc.returncode == 0, proc.stderr.read()
    expected, expected_edits = objects_by_image(reference), edits(reference)
    touched = found(reference)
    assert touched >= 3, f"the uninterrupted run added to {touched} images: too few to kill between them"
    per_image = max((time.monotonic() - (first or time.monotonic())) / (touched - 1), 0.01)

    def check(folder: Path) -> None:
        assert integrity(folder) == "ok"
        got, got_edits = objects_by_image(folder), edits(folder)
        for name, objs in got.items():
            if name == photos[0].name:
                assert objs == expected[name] and got_edits.get(name) == expected_edits[name], "the source changed"
            elif objs:
                assert same_objects(objs, expected[name]), f"{name} holds part of what the run adds: {objs}"
                assert got_edits.get(name) == 1, f"{name}: its additions are not one undo step"
            else:
                assert name not in got_edits, f"{name}: an edit without its objects"

    landed, chain = 0, 0
    while landed < kills:
        chain += 1
        assert chain <= 3 * kills, f"could not land the kills: {landed}"
        folder, args = fresh(f"chain{chain}")
        while found(folder) < touched - 1:
            target = found(folder) + rng.randint(1, min(2, touched - 1 - found(folder)))  # a kill or two a chain

            def started(folder=folder, target=target) -> bool:
                return found(folder) >= target

            killed, _ = kill_during(cmd(folder, args), started, per_image, rng)
            if not killed:
                break
            landed += 1
            check(folder)
        final = subprocess.run(cmd(folder, args), env=env(), capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert final.returncode == 0, final.stderr
        check(folder)
        final_objects = objects_by_image(folder)
        assert all(same_objects(final_objects[name], expected[name]) for name in expected)
        assert edits(folder) == expected_edits
    return landed


def labeled_project(folder: Path, n_images: int, objects_per_image: int, seed: int = 0, size=(48, 64)) -> Path:
    """A project of random images, each with objects that have masks with holes, built in-process."""
    from gdino.masks import mask_to_rle
    from gdino.store import NewImage, Project

    rng = np.random.default_rng(seed)
    photos = write_images(folder / "photos", n_images, seed, size)
    h, w = size
    records = []
    for path in photos:
        objects = []
        for j in range(objects_per_image):
            x0, y0 = int(rng.integers(0, w - 12)), int(rng.integers(0, h - 12))
            x1, y1 = x0 + int(rng.integers(8, min(24, w - x0) + 1)), y0 + int(rng.integers(8, min(24, h - y0) + 1))
            mask = np.zeros((h, w), bool)
            mask[y0:y1, x0:x1] = True
            mask[y0 + 2:y0 + 5, x0 + 2:x0 + 5] = False  # a hole
            objects.append({"box": (x0, y0, x1, y1), "class_name": ("cat", "dog", "remote control")[j % 3],
                            "mask": mask_to_rle(mask), "score": None})
        records.append(NewImage(path, path.name, w, h, "reviewed", tuple(objects)))
    project_dir = folder / "source_project"
    with Project.create(project_dir) as project:
        project.add_labeled(records, ["cat", "dog", "remote control"])
    return project_dir


def import_kills(tmp: Path, kills: int, seed: int, n_images: int = 60) -> int:
    """SIGKILL `gdino import` of a COCO zip at random moments: each time the project holds all of it or
    nothing; a re-run then completes it to what an uninterrupted import gives."""
    rng = random.Random(seed)
    source = labeled_project(tmp / "src", n_images, 10, seed)
    archive = tmp / "dataset.zip"
    done = run("export", source, "--format", "coco", "--out", archive, "--zip")
    assert done.returncode == 0, done.stderr
    reference = tmp / "reference"
    start = time.monotonic()
    done = run("import", archive, "--out", reference)
    window = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    expected = objects_by_image(reference)
    assert len(expected) == n_images and sum(map(len, expected.values())) == 10 * n_images
    landed = 0
    for attempt in range(4 * kills):
        if landed >= kills:
            break
        project = tmp / f"import{attempt}"
        killed, _ = kill_during(gdino_cmd("import", archive, "--out", project), lambda: True, window, rng)
        if not killed:
            continue
        landed += 1
        if (project / "project.sqlite").is_file():
            assert integrity(project) == "ok"
            got = objects_by_image(project)
            assert got in ({}, expected), f"a killed import left {len(got)} of {n_images} images"
        if not objects_by_image(project):
            again = run("import", archive, "--out", project)
            assert again.returncode == 0, again.stderr
        assert objects_by_image(project) == expected
    assert landed >= kills, f"only {landed} kills landed"
    return landed


def export_kills(tmp: Path, kills: int, seed: int, as_zip: bool, n_images: int = 60) -> int:
    """SIGKILL `gdino export --overwrite` over a previous export: the target is always exactly the previous
    export or exactly the new one, never a mix or a partial one."""
    rng = random.Random(seed)
    source = labeled_project(tmp / "src", n_images, 10, seed)
    target = tmp / ("export.zip" if as_zip else "export")
    flags = ["--zip"] if as_zip else []

    def export(fraction: str, where: Path, *more) -> list[str]:
        return gdino_cmd("export", source, "--format", "coco", "--out", where, "--val-fraction", fraction, *flags, *more)

    def unzip_digest(path: Path) -> dict[str, str]:
        if not as_zip:
            return tree_digest(path)
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                return {n: hashlib.sha1(zf.read(n)).hexdigest() for n in zf.namelist()}
        except zipfile.BadZipFile:
            raise AssertionError(f"a killed export left {path.name} unreadable: the previous export is lost") from None

    for fraction, where in (("0.5", tmp / "old"), ("0.2", tmp / "new")):
        done = subprocess.run(export(fraction, where.with_suffix(".zip") if as_zip else where), env=env(),
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
    old = unzip_digest(tmp / ("old.zip" if as_zip else "old"))
    new = unzip_digest(tmp / ("new.zip" if as_zip else "new"))
    assert old != new and old and new
    subprocess.run(export("0.5", target), env=env(), capture_output=True, cwd=ROOT, check=True)

    def writing() -> bool:
        """A zip export spends most of its time building the folder; the kills aim at writing the zip:
        from the moment a partial zip appears beside the target, or the target itself changes."""
        if not as_zip:
            return True
        return (any(p.name.startswith(f".{target.name}.gdino-partial") for p in target.parent.iterdir())
                or target.stat().st_mtime_ns != before)

    before = target.stat().st_mtime_ns
    proc = subprocess.Popen(export("0.5", target, "--overwrite"), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not writing() and proc.poll() is None:
        time.sleep(0.002)
    start = time.monotonic()
    proc.wait()
    window = max(time.monotonic() - start, 0.02)
    landed = 0
    for _ in range(4 * kills):
        if landed >= kills:
            break
        before = target.stat().st_mtime_ns
        killed, _ = kill_during(export("0.2", target, "--overwrite"), writing, window, rng)
        now = unzip_digest(target)
        assert now in (old, new), "a killed export left a target that is neither the previous nor the new export"
        landed += killed
        if now == new:  # back to the previous export for the next kill
            subprocess.run(export("0.5", target, "--overwrite"), env=env(), capture_output=True, cwd=ROOT, check=True)
    done = subprocess.run(export("0.2", target, "--overwrite"), env=env(), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert unzip_digest(target) == new
    leftovers = [p.name for p in target.parent.iterdir() if ".gdino-partial-" in p.name]
    assert not leftovers, f"partial exports left beside the target: {leftovers}"
    assert landed >= kills, f"only {landed} kills landed"
    return landed
