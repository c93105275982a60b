"""Optimizers by name: ``build_optimizer(params, {"name": "adam", "lr": 2e-4, ...})``."""
import torch

from errors import UserError

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "asgd": torch.optim.ASGD,
    "adamax": torch.optim.Adamax,
    "adadelta": torch.optim.Adadelta,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    """``cfg`` = ``{name, **kwargs of the torch optimizer}``; it is not modified."""
    kwargs = dict(cfg)
    name = str(kwargs.pop("name", "")).lower()
    if name not in OPTIMIZERS:
        raise UserError(f"config.optimizer.name: unknown optimizer {cfg.get('name')!r} "
                        f"(known: {', '.join(OPTIMIZERS)})")
    try:
        return OPTIMIZERS[name](params, **kwargs)
    except TypeError as exc:
        raise UserError(f"config.optimizer: bad parameter for {name}: {exc}") from None
