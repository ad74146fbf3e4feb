import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

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


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
