"""Write a model in the transformers layout: a directory that `gdino.load_model` and transformers'
`GroundingDinoForObjectDetection` / `MMGroundingDinoForObjectDetection.from_pretrained` both load.

The tensors are placed by inverting our own key map (`keymap.convert_state_dict`, layout "hub") rather than
by a second, hand-written table: every element of transformers' state dict gets a unique integer id, the
ids go through the key map (renames, q/k/v concatenation, copies of tied heads), and where each id lands
in our state dict says which of our elements fills it. Elements the map ignores (buffers, BERT's unused
pooler) keep transformers' own initial values; nothing we compute from reads them. After writing, the
directory is read back and every tensor compared, so a file that would not give back this model is never
left behind as if it were good.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..modeling import GroundingDINO
from ..modeling.config import GroundingDINOConfig
from ..store.durable import fsync
from .keymap import convert_state_dict


def hub_config(config: GroundingDINOConfig):
    """Our config -> transformers' GroundingDinoConfig / MMGroundingDinoConfig (the inverse of
    keymap.config_from_hub). MM-Grounding-DINO's share flags are written False: its heads differ per layer."""
    from transformers import BertConfig, GroundingDinoConfig, MMGroundingDinoConfig
    from transformers import SwinConfig as HFSwinConfig

    s, t = config.swin, config.text
    swin = HFSwinConfig(embed_dim=s.embed_dim, depths=list(s.depths), num_heads=list(s.num_heads),
                        window_size=s.window_size, patch_size=s.patch_size, mlp_ratio=s.mlp_ratio,
                        layer_norm_eps=s.layer_norm_eps, out_features=[f"stage{i + 1}" for i in s.out_indices])
    bert = BertConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_hidden_layers=t.num_hidden_layers,
                      num_attention_heads=t.num_attention_heads, intermediate_size=t.intermediate_size,
                      hidden_act=t.hidden_act, max_position_embeddings=t.max_position_embeddings,
                      type_vocab_size=t.type_vocab_size, layer_norm_eps=t.layer_norm_eps, pad_token_id=t.pad_token_id)
    fields = dict(
        backbone_config=swin, text_config=bert, d_model=config.d_model, num_queries=config.num_queries,
        encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_ffn_dim=config.encoder_ffn_dim, decoder_ffn_dim=config.decoder_ffn_dim,
        encoder_attention_heads=config.encoder_heads, decoder_attention_heads=config.decoder_heads,
        num_feature_levels=config.num_feature_levels, encoder_n_points=config.encoder_points,
        decoder_n_points=config.decoder_points, max_text_len=config.max_text_len,
        layer_norm_eps=config.layer_norm_eps, positional_embedding_temperature=_whole(config.position_temperature),
    )
    if config.family == "mm_gdino":
        return MMGroundingDinoConfig(decoder_bbox_embed_share=False, decoder_cls_embed_share=False, **fields)
    return GroundingDinoConfig(**fields)


def _whole(value: float) -> int | float:
    """transformers' config wants an int where the value is whole (20), our config keeps a float."""
    return int(value) if float(value).is_integer() else value


def _transformers_class(config: GroundingDINOConfig):
    from transformers import GroundingDinoForObjectDetection, MMGroundingDinoForObjectDetection

    return MMGroundingDinoForObjectDetection if config.family == "mm_gdino" else GroundingDinoForObjectDetection


def to_transformers(model: GroundingDINO):
    """A transformers model (float32, CPU, eval) holding this model's weights."""
    hf = _transformers_class(model.config)(hub_config(model.config)).eval()
    theirs = hf.state_dict(keep_vars=True)  # a tied tensor appears under each of its names, as one object
    ids_of: dict[int, torch.Tensor] = {}
    initial = []
    total = 0
    for tensor in theirs.values():
        if id(tensor) not in ids_of:
            ids_of[id(tensor)] = torch.arange(total, total + tensor.numel(), dtype=torch.long).view(tensor.shape)
            initial.append(tensor.detach().reshape(-1).double())
            total += tensor.numel()
    ids = {key: ids_of[id(tensor)] for key, tensor in theirs.items()}
    placed = convert_state_dict(ids, "hub", model.config.family)  # our key -> the ids of its elements
    flat = torch.cat(initial)  # float64 holds every float32 / bfloat16 value and every integer buffer exactly
    for key, tensor in model.state_dict().items():
        if key in placed:
            flat[placed[key].reshape(-1)] = tensor.detach().reshape(-1).double().cpu()
    state = {key: flat[where.reshape(-1)].view(where.shape).to(theirs[key].dtype) for key, where in ids.items()}
    hf.load_state_dict(state, strict=True)
    return hf


def save_pretrained(model: GroundingDINO, directory: str | os.PathLike, *, extra_files: dict[str, str] | None = None
                    ) -> Path:
    """Write `model` (its weights, config and tokenizer) to a new directory in the transformers layout, and check
    it by reading it back. Refuses to write into a directory that exists and is not empty: a model directory is
    never overwritten. extra_files: more text files to write (e.g. a README.md model card)."""
    out = Path(directory)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new directory (a model is never "
                              "overwritten)")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("the model has no tokenizer to save with it (load it with gdino.load_model)")
    if getattr(model, "precision", "exact") == "fast":
        raise ValueError("this model was loaded with precision='fast': its heavy layers hold bfloat16 or int8 weights, "
                         "and saving them would keep that loss; load it with precision='exact' to save it")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf = to_transformers(model)
        hf.save_pretrained(work)
        model.tokenizer.save_pretrained(work)
        for name, text in (extra_files or {}).items():
            (work / name).write_text(text)
        _check_round_trip(model, work)
        for file in work.iterdir():
            fsync(file)
        fsync(work)
        if out.exists():
            out.rmdir()
        os.replace(work, out)  # the finished directory appears at once, or not at all
        fsync(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _check_round_trip(model: GroundingDINO, directory: Path) -> None:
    from .hub import load_model

    back = load_model(directory)
    if back.config != model.config:
        raise RuntimeError(f"internal error: the saved config reads back as {back.config}, not {model.config}")
    mine, theirs = model.state_dict(), back.state_dict()
    wrong = [k for k in mine if not torch.equal(mine[k].detach().float().cpu(), theirs[k].float())]
    if wrong:
        raise RuntimeError(f"internal error: tensors did not survive saving: {wrong[:5]}")
    json.loads((directory / "config.json").read_text())  # valid JSON, or this raises
