"""`python app.py` on a machine without network: a clear message, and the app still starts."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_app_without_network_says_how_to_pass_local_weights(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--workspace", str(tmp_path / "ws")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Running on" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = "".join(lines)
    assert "the model IDEA-Research/grounding-dino-tiny could not be downloaded" in out
    assert "naming a local copy" in out and "--model" in out and "gdino.load_model" not in out
    assert "Running on" in out  # the page still comes up, with the error shown in it
