"""Optimizers by name: ``build_optimizer(params, {"name": "adam", "lr": 2e-4, ...})``.

On a GPU the trainer asks for torch's fused kernel for Adam and AdamW (one kernel per step
instead of many; with fp16 the grad scaler then hands its overflow flag to the kernel instead
of reading it back to the host every step). ``load_state`` resumes a saved state under this run's
choice, so a checkpoint moves between a GPU and the CPU either way.
"""
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
# fused CUDA kernels (taking the grad scaler's flag) in every torch this project supports (>= 2.1);
# SGD's and Adagrad's came later, and only with some torch versions on some devices
FUSED = ("adam", "adamw")


def build_optimizer(params, cfg: dict, fused: bool = False) -> torch.optim.Optimizer:
    """``cfg`` = ``{name, **kwargs of the torch optimizer}``; it is not modified. ``fused``: use
    the fused kernel where the optimizer has one, unless ``cfg`` chooses (``fused`` or
    ``foreach``)."""
    kwargs = dict(cfg)
    name = str(kwargs.pop("name", "")).lower()
    if name not in OPTIMIZERS:
        raise UserError(f"config.optimizer.name: unknown optimizer {cfg.get('name')!r} "
                        f"(known: {', '.join(OPTIMIZERS)})")
    params = list(params)  # a generator would be spent by a first attempt
    if fused and name in FUSED and "fused" not in kwargs and "foreach" not in kwargs:
        try:
            return OPTIMIZERS[name](params, **kwargs, fused=True)
        except (TypeError, RuntimeError):
            pass  # not with these settings (e.g. differentiable): the default kernels
    try:
        return OPTIMIZERS[name](params, **kwargs)
    except TypeError as exc:
        raise UserError(f"config.optimizer: bad parameter for {name}: {exc}") from None


def load_state(optimizer: torch.optim.Optimizer, state: dict):
    """``optimizer.load_state_dict(state)``, keeping this optimizer's own kernel choice (torch
    would take the saved run's ``fused``/``foreach``/``capturable``): the step counters are moved
    where that choice keeps them (beside the parameters when fused or capturable, else on the
    CPU)."""
    keys = ("fused", "foreach", "capturable")
    own = [{k: g[k] for k in keys if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, own):
        group.update(flags)
        on_device = bool(flags.get("fused") or flags.get("capturable"))
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            step = st.get("step")
            if torch.is_tensor(step):
                st["step"] = (step.to(p.device, torch.float32) if on_device
                              else step.to("cpu"))
