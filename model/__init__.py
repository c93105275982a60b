"""Models by name: ``build_model(model_cfg)`` from the ``model`` section of a config."""
from errors import UserError

from .recce import MEAN, STD, Recce

MODELS = {"Recce": Recce}


def build_model(model_cfg: dict):
    """Build the model that ``model_cfg`` names; the dict is not modified.

    ``pretrained`` absent means True (the original's ImageNet start), as SPEC section 4 says.
    """
    cfg = dict(model_cfg)
    name = cfg.pop("name", None)
    if name not in MODELS:
        raise UserError(f"unknown model: {name!r} (known: {', '.join(MODELS)})")
    cfg.setdefault("pretrained", True)
    return MODELS[name](**cfg)


__all__ = ["MODELS", "MEAN", "STD", "Recce", "build_model"]
