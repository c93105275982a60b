"""Models by name: ``build_model(model_cfg)`` from the ``model`` section of a config.

The model contract, read by the trainer, test.py, inference.py and tools/export.py:

- ``Model(num_classes=1, drop_rate=0.2, pretrained=False)``; ``model(x)`` -> logits
  (N x num_classes); ``model(x, return_aux=True)`` -> a dict with ``logits`` and whatever its loss
  needs (``recons`` where ``has_reconstruction``);
- class attributes: ``mean``, ``std`` (input normalisation), ``input_size`` (default side),
  ``min_input_size``, ``has_reconstruction``, and ``loss`` (the name of its loss in
  ``loss.CRITERIA``).

A new model is one file with its class and ``register_model(Class)`` (see the README).
"""
from errors import UserError

from .recce import MEAN, STD, Recce
from .xception import Xception

MODELS = {"Recce": Recce, "Xception": Xception}
# The model of a checkpoint that does not say (a bare state dict, the original release's .bin):
# the original release only ever held RECCE.
DEFAULT_MODEL = "Recce"


def register_model(cls):
    """Make a model class known by its class name (``model.name`` in configs)."""
    MODELS[cls.__name__] = cls
    return cls


def model_class(name):
    if name not in MODELS:
        raise UserError(f"model.name: unknown model {name!r} (known: {', '.join(MODELS)})")
    return MODELS[name]


def build_model(model_cfg: dict):
    """Build the model that ``model_cfg`` names; the dict is not modified.

    ``pretrained`` absent means True (the original's ImageNet start), as SPEC section 4 says.
    """
    cfg = dict(model_cfg)
    cls = model_class(cfg.pop("name", None))
    cfg.setdefault("pretrained", True)
    return cls(**cfg)


__all__ = ["DEFAULT_MODEL", "MODELS", "MEAN", "STD", "Recce", "Xception", "build_model", "model_class",
           "register_model"]
