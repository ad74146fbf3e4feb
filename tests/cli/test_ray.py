"""`gdino label --engine ray` against the plain engine, on a private local Ray per run (the command starts
and stops it), with the tiny random model: same project, the corrupt file listed, a SIGKILLed driver
resumed without duplicates, `--results` + `import-results`, and no Ray process left behind.

Each Ray run is a real `gdino` subprocess with a timeout (a hang fails the test, never the CI job), and
its Ray lives in a short temp folder of this module's own, so that leftovers can be looked for."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from fault_harness import count, duplicate_sources, gdino_cmd
from fault_harness import env as harness_env
from PIL import Image
from project_compare import GOOD, assert_same_project, snapshot

pytest.importorskip("ray.data", reason='Ray is not installed here (pip install "gdino[ray]")')

from gdino.cli import main  # noqa: E402
from gdino.labeling.ray_session import session_pids  # noqa: E402
from gdino.labeling.results import read_shards, shard_paths  # noqa: E402
from gdino.store import Project  # noqa: E402

CLASSES = "cat, remote control"
TIMEOUT = 240  # one Ray run at most, in seconds


@pytest.fixture(scope="module")
def ray_tmp():
    """A short temp folder for the runs' Ray sessions (socket paths: 107 bytes); none may survive."""
    base = tempfile.mkdtemp(prefix="gdt-", dir="/tmp")
    yield base
    left = session_pids(base)
    for pid in left:  # clean up whatever a failing test left, then fail on it
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)
    assert not left, f"Ray processes left behind: {left}"


def label_args(model, images, out, *more) -> list[str]:
    # --precision exact: these tests compare a Ray run's project with a plain run's box for box (1e-4 px). In fast mode
    # (the CPU default) the two differed by ~1.4e-4 px (bfloat16 products; the actors run one thread each, the plain
    # run two: the likely cause, not isolated)
    return ["label", str(images), "--classes", CLASSES, "--out", str(out), "--model", str(model), "--device", "cpu",
            "--box-threshold", "0.2", "--precision", "exact", *map(str, more)]


def ray_env(ray_tmp: str) -> dict:
    return {**harness_env(), "TMPDIR": ray_tmp}


def gdino(ray_tmp: str, *args) -> subprocess.CompletedProcess:
    result = subprocess.run(gdino_cmd(*args), env=ray_env(ray_tmp), capture_output=True, text=True, timeout=TIMEOUT)
    assert not session_pids(ray_tmp), "the run left Ray processes behind"
    return result


@pytest.fixture(scope="module")
def plain(plain_labeled, tmp_path_factory):
    """The plain engine's project (conftest, shared with the object-store tests): the reference."""
    return {**plain_labeled, "tmp": tmp_path_factory.mktemp("ray")}


def test_ray_labels_the_same_project_and_lists_the_corrupt_file(plain, ray_tmp):
    out = plain["tmp"] / "ray"
    result = gdino(ray_tmp, *label_args(plain["model"], plain["images"], out, "--engine", "ray", "--actors", "2"))
    assert result.returncode == 1, result.stderr  # the corrupt file, as without Ray
    assert "broken.jpg" in result.stdout and f"labeled {GOOD + 1} image(s)" in result.stdout
    assert "Traceback" not in result.stderr
    noise = [line for line in result.stderr.splitlines() if "WARNING" in line or "core_worker" in line or "(raylet)" in line]
    assert not noise, noise  # Ray's own logs are silenced without --verbose
    assert_same_project(plain["project"], out)
    classes, images = snapshot(out)
    assert images["rotated.jpg"][1:3] == (48, 32)  # upright
    assert len(images) == GOOD + 1 and {status for status, *_ in images.values()} == {"auto"}


def test_a_killed_driver_resumes_without_duplicates(plain, ray_tmp):
    out = plain["tmp"] / "killed"
    cmd = gdino_cmd(*label_args(plain["model"], plain["images"], out, "--engine", "ray"))
    proc = subprocess.Popen(cmd, env=ray_env(ray_tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while count(out, "SELECT COUNT(*) FROM images WHERE status = 'auto'") < GOOD // 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run did not get a third of the way"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    labeled = count(out, "SELECT COUNT(*) FROM images WHERE status = 'auto'")
    assert labeled < GOOD + 1, "killed too late to test a resume"
    for _ in range(100):  # the reaper clears the killed driver's Ray
        if not session_pids(ray_tmp):
            break
        time.sleep(0.1)
    assert not session_pids(ray_tmp), "a killed driver's Ray was left running"

    result = gdino(ray_tmp, *label_args(plain["model"], plain["images"], out, "--engine", "ray"))
    assert result.returncode == 1, result.stderr
    assert f"skipped {labeled} already labeled" in result.stdout and "broken.jpg" in result.stdout
    assert duplicate_sources(out) == 0
    assert_same_project(plain["project"], out)


def test_results_folder_then_import_results_gives_the_same_project(plain, ray_tmp, capsys):
    out, results = plain["tmp"] / "staged", plain["tmp"] / "results"
    result = gdino(ray_tmp, *label_args(plain["model"], plain["images"], out, "--engine", "ray", "--results", results))
    assert result.returncode == 1 and "broken.jpg" in result.stdout, result.stdout + result.stderr
    assert shard_paths(str(results)) and not any(p.name.startswith(".") for p in results.iterdir())
    assert sum(len(rows) for rows in read_shards(str(results))) == GOOD + 1
    with Project.open(out) as project:  # the images are in, their labels wait in the shards
        assert {r.status for r in project.images()} == {"unlabeled"}

    again = gdino(ray_tmp, *label_args(plain["model"], plain["images"], out, "--engine", "ray", "--results", results))
    assert f"{GOOD + 1} were there already" in again.stdout, again.stdout  # resumed: nothing redone, Ray not started

    assert main(["import-results", str(results), "--into", str(out)]) == 0
    assert_same_project(plain["project"], out)
    assert main(["import-results", str(results), "--into", str(out)]) == 0  # again: nothing changes
    assert "were labeled already" in capsys.readouterr().out
    assert_same_project(plain["project"], out)

    # a damaged shard beside good ones: reported, the others imported (into a new project: images added from source)
    damaged = plain["tmp"] / "damaged"
    shutil.copytree(results, damaged)
    first = Path(shard_paths(str(damaged))[0])
    (damaged / "part-zzz-truncated.parquet").write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    capsys.readouterr()
    assert main(["import-results", str(damaged), "--into", str(plain["tmp"] / "fresh")]) == 1
    printed = capsys.readouterr().out
    assert "could not read 1 shard(s)" in printed and "part-zzz-truncated.parquet" in printed
    assert_same_project(plain["project"], plain["tmp"] / "fresh")


def test_object_store_images_are_labeled_by_uri_streamed_and_through_results(plain, ray_tmp, object_store, capsys):
    """The actors read s3:// URIs; the driver adds each image by its URI with its result (nothing copied);
    the same through --results shards and import-results (one subfolder: a second Ray run, kept short)."""
    object_store.put_tree(plain["images"], "photos/ray")
    out = plain["tmp"] / "s3-streamed"
    result = gdino(ray_tmp, *label_args(plain["model"], object_store.uri("photos/ray"), out, "--engine", "ray",
                                        "--actors", "2"))
    assert result.returncode == 1 and "broken.jpg" in result.stdout, result.stdout + result.stderr
    assert f"added {GOOD + 1} new image(s)" in result.stdout, result.stdout
    assert_same_project(plain["project"], out)
    with Project.open(out) as project:
        assert all(r.uri is not None and r.path is None for r in project.images())
    assert duplicate_sources(out) == 0

    staged, results = plain["tmp"] / "s3-staged", plain["tmp"] / "s3-results"
    sub = object_store.uri("photos/ray/c")  # c/broken.jpg and c/d/e/...
    result = gdino(ray_tmp, *label_args(plain["model"], sub, staged, "--engine", "ray", "--results", results))
    assert result.returncode == 1 and "broken.jpg" in result.stdout, result.stdout + result.stderr
    assert main(["import-results", str(results), "--into", str(staged)]) == 1  # the broken row is listed
    assert "broken.jpg" in capsys.readouterr().out
    assert_same_project(plain["project"], staged, only=lambda name: name.startswith("img_") and int(name[4:6]) % 4 == 3)
    with Project.open(staged) as project:
        assert all(r.uri is not None for r in project.images())


def test_joining_a_running_two_node_cluster_by_address(plain, ray_tmp):
    """`--address` joins a cluster started with `ray start` (a head and a second node on this machine: two
    raylets, as on two machines), labels the same project, and leaves the cluster running."""
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the `ray` command is not installed beside this Python")
    cluster_dir = os.path.join(ray_tmp, "cluster")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ray_env(ray_tmp), "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        for args in (["--head", "--port", str(port), "--temp-dir", cluster_dir, "--include-dashboard", "false"],
                     ["--address", f"127.0.0.1:{port}"]):
            started = subprocess.run([ray_cli, "start", *args, *common], env=env, capture_output=True, text=True,
                                     timeout=120)
            assert started.returncode == 0, started.stdout + started.stderr
        out = plain["tmp"] / "cluster"
        result = subprocess.run(gdino_cmd(*label_args(plain["model"], plain["images"], out, "--engine", "ray",
                                                      "--address", f"127.0.0.1:{port}", "--actors", "2")),
                                env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 1 and "broken.jpg" in result.stdout, result.stdout + result.stderr
        assert_same_project(plain["project"], out)
        assert session_pids(cluster_dir), "the run stopped the cluster it joined"
    finally:  # not `ray stop`: it would stop every Ray of this user. Both nodes keep files under ray_tmp.
        for _ in range(50):
            left = session_pids(ray_tmp)
            if not left:
                break
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


def test_sam3_on_ray_stores_what_the_plain_run_stores(ray_tmp, tmp_path):
    """The second family through the Ray actors: boxes, scores and SAM 3's own masks as the plain engine's."""
    from sam3_models import save_tiny_sam3

    model = save_tiny_sam3(tmp_path / "sam3", confident=True)
    images = tmp_path / "in"
    images.mkdir()
    for k in range(3):
        pixels = np.random.default_rng(50 + k).integers(0, 255, (60 + 8 * k, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"im{k}.png")
    args = ["label", str(images), "--classes", "cat, dog", "--model", str(model), "--device", "cpu",
            "--box-threshold", "0.3"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    result = gdino(ray_tmp, *args, "--out", str(tmp_path / "ray"), "--engine", "ray", "--actors", "1")
    assert result.returncode == 0, result.stderr
    from gdino.masks import rle_to_mask

    classes, plain_images = snapshot(tmp_path / "plain")
    ray_classes, ray_images = snapshot(tmp_path / "ray")
    assert classes == ray_classes and plain_images.keys() == ray_images.keys()
    assert sum(len(v[4]) for v in plain_images.values()) > 0
    for name, (status, width, height, _, objects) in plain_images.items():
        other = ray_images[name]
        assert (status, width, height) == other[:3] and len(objects) == len(other[4]), name
        for (cls, source, box, score, mask), (cls2, source2, box2, score2, mask2) in zip(objects, other[4], strict=True):
            assert (cls, source) == (cls2, source2) and mask is not None and mask2 is not None
            assert np.allclose(box, box2, atol=1e-3) and abs(score - score2) < 1e-4, name
            # the actors run one thread, the plain run two: a mask pixel on the edge may differ (float order)
            a, b = rle_to_mask(mask), rle_to_mask(mask2)
            assert (a & b).sum() >= 0.99 * max((a | b).sum(), 1), name


def test_usage_errors_need_no_ray(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["label", str(tmp_path / "a.png"), "--classes", "cat", "--out", str(tmp_path / "p"), "--actors", "2"]) == 2
    assert "only apply with --engine ray" in capsys.readouterr().err
    assert main(["import-results", str(tmp_path / "nothing"), "--into", str(tmp_path / "p")]) == 2
    assert "no result shards" in capsys.readouterr().err


def test_import_of_gdino_cli_loads_neither_torch_nor_ray():
    code = "import sys, gdino.cli; gdino.cli.build_parser(); print('torch' in sys.modules, 'ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], env=harness_env(), capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_actors_are_not_restarted_through_whatever_ray_accepts():
    """max_restarts=0 goes by name once Ray has the parameter, through **ray_remote_args while that exists
    (Ray 2.60), and not at all when neither does (instead of a TypeError)."""
    import ray.data

    from gdino.labeling.ray_engine import no_restarts

    def named(fn, *, batch_size=None, max_restarts=None): ...
    def remote_args(fn, *, batch_size=None, **ray_remote_args): ...
    def neither(fn, *, batch_size=None): ...

    assert no_restarts(named) == {"max_restarts": 0} == no_restarts(remote_args)
    assert no_restarts(neither) == {}
    assert no_restarts(ray.data.Dataset.map_batches) == {"max_restarts": 0}  # this Ray
