"""Fine-tuning on a GPU: one float32 training step gives the CPU's loss and gradients (our CUDA kernel's
backward inside the whole model), and the loop in bfloat16 autocast learns and saves. Skipped without a
GPU (CI has none); run on a lent one."""

import pytest
import torch
from tiny_models import make_hf_model, save_hf
from train_shapes import CLASSES, shapes_project

import gdino
from gdino.prompts import build_chunks, parse_classes
from gdino.train import LossConfig, TrainConfig, chunk_classes, chunk_target, grounding_loss, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _true_float32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def step_gradients(model, device):
    """The total loss of one batch and every parameter's gradient, on `device`."""
    model = model.to(device).train()
    model.requires_grad_(True)
    model.zero_grad()
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 160, 224, generator=g).to(device)
    prompt = parse_classes(CLASSES)
    [chunk] = build_chunks(prompt, model.tokenizer)
    classes = chunk_classes(prompt, chunk)
    ids = torch.tensor([chunk.input_ids] * 2, device=device)
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    targets = [chunk_target([0, 1], boxes, classes)] * 2
    out = model.decode_train(model.encode_image(pixel_values), model.encode_text(ids))
    loss = grounding_loss(out, targets, classes.token_map, LossConfig()).total
    loss.backward()
    return loss.item(), {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}


def test_a_float32_training_step_on_cuda_equals_the_cpus(tiny_hf):
    cpu_loss, cpu_grads = step_gradients(gdino.load_model(tiny_hf[1]), "cpu")
    gpu_loss, gpu_grads = step_gradients(gdino.load_model(tiny_hf[1]), "cuda")
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-4)
    assert cpu_grads.keys() == gpu_grads.keys() and len(cpu_grads) > 100
    for name, a in cpu_grads.items():
        if name.endswith("key.bias"):  # its true gradient is 0 (a constant added to every key's score cancels in
            continue  # the softmax): both sides hold rounding noise of ~1e-8
        b = gpu_grads[name]
        scale = a.abs().max().clamp_min(1e-6)
        assert (a - b).abs().max() / scale < 2e-3, name


def test_the_loop_in_bfloat16_on_cuda_learns_and_saves(tokenizer, tmp_path):
    base = save_hf(make_hf_model("tiny", seed=0), tokenizer, tmp_path / "base")
    project = shapes_project(tmp_path / "shapes", n=8)
    config = TrainConfig(epochs=30, batch_size=2, lr=5e-4, lr_backbone=5e-4, freeze_backbone=False,
                         freeze_text=False, augment=False, image_size=320, val_fraction=0.25, lr_drop=0.8)
    result = train(project, str(base), tmp_path / "tuned", config, device="cuda")
    print(f"cuda bf16: loss {result.first_loss:.1f} -> {result.last_loss:.2f}, validation mAP@0.5 "
          f"{result.base.map50:.3f} -> {result.tuned.map50:.3f}")
    assert result.first_loss >= 10 * result.last_loss
    assert result.tuned is not None and result.base is not None
    assert gdino.load_model(result.directory).config.family == "gdino"
