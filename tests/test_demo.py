"""The README's first command runs demo.py; it must work end to end on a local model."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_detections(tiny_hf, tmp_path):
    image = tmp_path / "img.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(image)
    cmd = [sys.executable, str(ROOT / "demo.py"), str(image), "--model", str(tiny_hf[1]),
           "--classes", "cat, remote control", "--box-threshold", "0.0"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1].endswith("detections above 0.0") and len(lines) > 1
    assert all(line.split()[0] in ("cat", "remote") for line in lines[:-1])


def test_demo_reports_a_missing_image(tiny_hf, tmp_path):
    cmd = [sys.executable, str(ROOT / "demo.py"), str(tmp_path / "nope.jpg"), "--model", str(tiny_hf[1]),
           "--classes", "cat"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "could not read the image" in result.stderr


def test_demo_reports_a_bad_class_list(tiny_hf, tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(image)
    cmd = [sys.executable, str(ROOT / "demo.py"), str(image), "--model", str(tiny_hf[1]), "--classes", "cat, , dog"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "is empty" in result.stderr
