"""Learning-rate schedulers by name, with an optional linear warm-up.

``build_scheduler(optimizer, {"name": "StepLR", "step_size": 22500, "gamma": 0.5}, warmup_step)``.
Every scheduler is stepped once per training iteration, except ReduceLROnPlateau, which the trainer
steps at each validation with the validation loss (``Scheduler.step_on_validation``).
"""
from torch.optim import lr_scheduler

from errors import UserError


def _constant(optimizer):
    """The original's ConstantLR: the rate never changes (torch's ConstantLR does change it)."""
    return lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


SCHEDULERS = {
    "ConstantLR": _constant,
    "StepLR": lr_scheduler.StepLR,
    "MultiStepLR": lr_scheduler.MultiStepLR,
    "CosineAnnealingLR": lr_scheduler.CosineAnnealingLR,
    "CosineAnnealingWarmRestarts": lr_scheduler.CosineAnnealingWarmRestarts,
    "ExponentialLR": lr_scheduler.ExponentialLR,
    "ReduceLROnPlateau": lr_scheduler.ReduceLROnPlateau,
}


class Scheduler:
    """A torch scheduler behind a linear warm-up over the first ``warmup_step`` iterations.

    ``step()`` is called after every optimizer step; ``step_on_validation(loss)`` after each
    validation. During warm-up the rate grows linearly to the base rate and the wrapped scheduler
    is not advanced.
    """

    def __init__(self, optimizer, inner, warmup_step: int = 0):
        self.optimizer = optimizer
        self.inner = inner
        self.warmup_step = int(warmup_step)
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.iteration = 0
        self.per_iteration = not isinstance(inner, lr_scheduler.ReduceLROnPlateau)
        if self.warmup_step > 0:
            self._set_warmup_lr()

    def _set_warmup_lr(self):
        scale = min(1.0, (self.iteration + 1) / self.warmup_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale

    def step(self):
        self.iteration += 1
        if self.iteration < self.warmup_step:
            self._set_warmup_lr()
        elif self.iteration == self.warmup_step:
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base
        elif self.per_iteration:
            self.inner.step()

    def step_on_validation(self, val_loss: float):
        if not self.per_iteration and self.iteration >= self.warmup_step:
            self.inner.step(val_loss)

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"iteration": self.iteration, "warmup_step": self.warmup_step,
                "base_lrs": list(self.base_lrs), "inner": self.inner.state_dict()}

    def load_state_dict(self, state):
        self.iteration = state["iteration"]
        self.warmup_step = state["warmup_step"]
        self.base_lrs = list(state["base_lrs"])
        self.inner.load_state_dict(state["inner"])


def build_scheduler(optimizer, cfg: dict | None, warmup_step: int = 0) -> Scheduler:
    """``cfg`` = ``{name, **kwargs}`` or None for a constant rate; it is not modified."""
    kwargs = dict(cfg or {"name": "ConstantLR"})
    name = kwargs.pop("name", None)
    if name not in SCHEDULERS:
        raise UserError(f"config.scheduler.name: unknown scheduler {name!r} "
                        f"(known: {', '.join(SCHEDULERS)})")
    if name == "ConstantLR":
        kwargs = {}  # the original accepted and ignored arguments here
    try:
        inner = SCHEDULERS[name](optimizer, **kwargs)
    except TypeError as exc:
        raise UserError(f"config.scheduler: bad parameter for {name}: {exc}") from None
    return Scheduler(optimizer, inner, warmup_step)
