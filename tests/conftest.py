import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "support"))

from tiny_models import make_hf_model, make_tokenizer, save_hf  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_hf(tokenizer, tmp_path_factory):
    """(transformers oracle model, directory it was saved to in the hub layout)."""
    model = make_hf_model("tiny", seed=0)
    return model, save_hf(model, tokenizer, tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture(scope="session")
def tiny_ours(tiny_hf):
    import gdino

    return gdino.load_model(tiny_hf[1])


PLAIN_CLASSES = "cat, remote control"


@pytest.fixture(scope="session")
def plain_labeled(tiny_hf, tmp_path_factory):
    """project_compare's source folder labeled by `gdino label` (the plain engine, in this process) with the tiny
    model: the reference the engine tests compare with (Ray's, the object store's). Read it, never write to it."""
    from project_compare import source_folder

    from gdino.cli import main

    tmp = tmp_path_factory.mktemp("plain_labeled")
    images = source_folder(tmp / "in")
    # --precision exact: the engines are compared box for box (1e-4 px); fast mode's bfloat16 products differ by
    # more than that between processes with other thread counts (tests/cli/test_ray.py)
    code = main(["label", str(images), "--classes", PLAIN_CLASSES, "--out", str(tmp / "plain"), "--model",
                 str(tiny_hf[1]), "--device", "cpu", "--box-threshold", "0.2", "--precision", "exact"])
    assert code == 1  # the corrupt file
    return {"images": images, "project": tmp / "plain", "model": tiny_hf[1]}


@pytest.fixture(scope="session", autouse=True)
def _kernel_built_first():
    """Build (or load from the cache) the compiled CPU kernel before any test runs, so that its first-use build
    (a minute on a busy 2-core machine) never lands inside a test that waits for the app or a command."""
    from gdino.ops import compiled

    compiled.kernel("cpu")  # None where it cannot be had (no compiler): the reference runs, nothing to wait for


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def object_store():
    """A real S3 endpoint (moto's server on 127.0.0.1) with dummy credentials in this process's environment,
    so that subprocesses (the gdino command, Ray's workers) inherit them."""
    from object_store import CREDENTIALS, ObjectStore

    try:
        store = ObjectStore.start()
    except RuntimeError as err:
        pytest.skip(str(err))
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    yield store
    store.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
