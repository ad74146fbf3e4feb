"""Fault injection: seeded random SIGKILLs of real `gdino` processes while they add, label, import and
export (at least 10 kills a phase here; `python bench/fault_injection.py` runs hundreds). After each
kill: PRAGMA integrity_check is ok, no image is in the project twice, no image holds part of its objects,
an interrupted import left all or nothing, and the previous export is intact; after a final
uninterrupted run the project equals one that was never interrupted. See tests/fault_harness.py."""

import pytest
from fault_harness import export_kills, import_kills, label_kills

KILLS = 10


def test_kills_while_adding_and_labeling(tiny_hf, tmp_path):
    kills = label_kills(tmp_path, tiny_hf[1], KILLS, seed=1)
    assert kills["adding"] >= KILLS and kills["labeling"] >= KILLS


def test_kills_while_importing(tmp_path):
    assert import_kills(tmp_path, KILLS, seed=2) >= KILLS


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_kills_while_exporting(tmp_path, as_zip):
    assert export_kills(tmp_path, KILLS, seed=3, as_zip=as_zip) >= KILLS


def test_ctrl_c_stops_an_import_at_once_and_adds_nothing(tmp_path):
    """Ctrl-C (SIGINT) during the long check of a big import ends it within a moment, exit code 130, with
    nothing of the dataset added; an uninterrupted run takes several times longer."""
    import signal
    import subprocess
    import time

    from fault_harness import ROOT, env, gdino_cmd, objects_by_image, write_images

    photos = write_images(tmp_path / "photos", 300, seed=5, size=(600, 800))  # decoding them all takes a while
    full = tmp_path / "full"
    start = time.monotonic()
    done = subprocess.run(gdino_cmd("import", photos[0].parent, "--out", full), env=env(), capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    whole = time.monotonic() - start
    assert done.returncode == 0 and len(objects_by_image(full)) == 300, done.stderr

    project = tmp_path / "interrupted"
    proc = subprocess.Popen(gdino_cmd("import", photos[0].parent, "--out", project), env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (project / "project.sqlite").exists():  # the import has begun
        assert proc.poll() is None and time.monotonic() - start < 300
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=300)
    answered = time.monotonic() - sent
    assert proc.returncode == 130 and "interrupted" in err, err
    assert answered < whole / 3, f"Ctrl-C took {answered:.1f} s to stop an import that takes {whole:.1f} s"
    assert objects_by_image(project) == {}
