"""nn.Modules only: tensors in, dataclasses out. Nothing here downloads or reads files. The model's typed config
(config.py) lives here too and stays light: `gdino.modeling.config` is read without importing torch, so the model
classes below are imported on first use."""

__all__ = ["GroundingDINO", "GroundingDINOOutput", "ImageFeatures", "TextFeatures"]


def __getattr__(name: str):
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'gdino.modeling' has no attribute {name!r}")
