"""Hooks: the training loop's optional behaviours, called at its moments.

A hook subclasses ``Hook``, overrides the moments it needs and is registered by name
(``@register_hook``); ``config.hooks`` lists the hooks of a run as ``{name, **arguments}``, in the
order they are called, and a user's own hook file is imported through ``config.imports``. The
moments, in the order of a run:

- ``before_train(trainer)``: once, after the model, data and optimizer are built (and a resumed
  state loaded);
- ``before_step(trainer)``: before the forward of each optimizer step;
- ``before_optimizer_step(trainer)``: the gradients of the step are ready and unscaled (the grad
  scaler's ``unscale_`` has run), the optimizer has not stepped: clipping goes here;
- ``after_step(trainer, losses)``: after an optimizer step was taken (not after a step skipped for
  a non-finite loss), with the step's loss terms (tensors on the device);
- ``after_validation(trainer, metrics)``: after each validation, before the best checkpoint is
  chosen: a hook may replace ``metrics``' values (``Acc``, ``AUC``, ``LogLoss``), which then
  choose it, and says so in ``metrics["weights"]``;
- ``write_checkpoints(trainer)``: the run's checkpoints are due: after each validation (after its
  log line), and when a signal stops the run;
- ``at_checkpoint(trainer, state)``: a checkpoint is about to be written: a hook may add entries;
- ``after_load_checkpoint(trainer, state)``: a resumed run has loaded the checkpoint ``state``: a
  hook may read back the entries it added;
- ``after_train(trainer)``: once, when the loop has done its steps.

The run's checkpoints are written by hooks of this kind too (trainer/checkpoint_hooks.py: the best
and the latest checkpoint), which the trainer calls after the run's own hooks at every moment.

``state_dict()`` / ``load_state_dict(state)`` carry a hook's state through ``latest_model.bin``,
so that a resumed run continues exactly. ``accumulate`` > 1 makes each optimizer step take that
many micro-batches. ``once`` declares whether a run may have the hook twice: True for a hook that
owns a checkpoint entry or state the loop shares (a second would overwrite the first's), which is
then one config error naming both entries; a hook that leaves it None is taken to be such a hook
where it writes checkpoint entries (``at_checkpoint``) or accumulates gradients. A hook runs on
every rank; what it decides must be the same on every rank (each one here decides from the step
count alone, or takes no decision that changes the loop).
"""
import copy
import logging
import math

import torch

from checks import check_arguments, named_entries
from errors import UserError
from registry import Registry

log = logging.getLogger("recce")
HOOKS = Registry("hook", "config.hooks")
register_hook = HOOKS.register


class Hook:
    """A training-loop hook; every moment does nothing unless overridden."""

    accumulate = 1  # micro-batches per optimizer step
    once = None  # may a run have it once only (see above); None: decided by what it overrides

    def before_train(self, trainer):
        pass

    def before_step(self, trainer):
        pass

    def before_optimizer_step(self, trainer):
        pass

    def after_step(self, trainer, losses):
        pass

    def after_validation(self, trainer, metrics):
        pass

    def write_checkpoints(self, trainer):
        pass

    def at_checkpoint(self, trainer, state):
        pass

    def after_load_checkpoint(self, trainer, state):
        pass

    def after_train(self, trainer):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def overrides(hook, moment):
    """Does ``hook`` do anything at ``moment``?"""
    return getattr(type(hook), moment) is not getattr(Hook, moment)


def only_once(hook):
    """May a run have ``hook`` once only? Its class's ``once``; where that is None, whether it
    writes checkpoint entries or accumulates gradients."""
    once = getattr(type(hook), "once", None)
    if once is None:
        return overrides(hook, "at_checkpoint") or hook.accumulate > 1
    return bool(once)


def check_once(hooks, labels):
    """A hook that a run may have once (``only_once``) given twice is a UserError naming both
    (``labels``: where each hook came from, such as ``config.hooks[1]``)."""
    first = {}
    for hook, label in zip(hooks, labels):
        if type(hook) in first and only_once(hook):
            before, name = first[type(hook)]
            raise UserError(f"{before} and {label} are both the hook {name}, which a run may "
                            "have once (it owns a checkpoint entry or state the loop shares): "
                            "keep one")
        first.setdefault(type(hook), (label, getattr(hook, "name", type(hook).__name__)))


def build_hooks(entries, where="config.hooks"):
    """The hooks ``entries`` (a list of ``{name, **arguments}``) name, each built with its
    arguments checked against its constructor; a list of Hook instances. A hook that a run may
    have once, named twice, is a UserError naming both entries."""
    hooks, labels = [], []
    for at, entry in named_entries(entries, where, "{name, ...arguments}, e.g. {name: ema}"):
        args = dict(entry)
        name = args.pop("name")
        cls = HOOKS.get(name)
        hook = cls(**check_arguments(cls, args, at, f"the hook {name}",
                                     getattr(cls, "arg_kinds", None)))
        hook.name = name
        hooks.append(hook)
        labels.append(at)
    check_once(hooks, labels)
    if sum(h.accumulate > 1 for h in hooks) > 1:
        raise UserError(f"{where}: more than one hook accumulates gradients")
    return hooks


@register_hook(name="clip_grad_norm")
class ClipGradNorm(Hook):
    """Clips the gradients' total norm (``torch.nn.utils.clip_grad_norm_``) to ``max_norm`` before
    each optimizer step, measured on the unscaled gradients."""

    arg_kinds = {"max_norm": "positive", "norm_type": "positive"}
    once = False  # a second clips again; nothing of its own is saved

    def __init__(self, max_norm: float, norm_type: float = 2.0):
        self.max_norm, self.norm_type = float(max_norm), float(norm_type)
        self.last_norm = None  # the norm before clipping, on the device

    def before_optimizer_step(self, trainer):
        self.last_norm = torch.nn.utils.clip_grad_norm_(trainer.params, self.max_norm,
                                                        self.norm_type)


@register_hook(name="grad_accumulation")
class GradAccumulation(Hook):
    """``steps`` micro-batches per optimizer step: each contributes its loss divided by
    ``steps``, so that a step sees the mean over ``steps`` x the batch size, as one batch that
    large would for a loss that is a mean over samples. ``num_steps``, ``log_steps``,
    ``val_steps`` and the learning-rate schedule count optimizer steps."""

    arg_kinds = {"steps": "posint"}
    once = True  # the loop's micro-batches per step

    def __init__(self, steps: int):
        self.accumulate = int(steps)


@register_hook(name="ema")
class EMA(Hook):
    """An exponential moving average of the weights, ``ema = decay * ema + (1 - decay) * w``
    after every optimizer step (buffers that are not floats, such as BatchNorm's counters, are
    copied). At each validation the EMA weights are validated beside the raw ones and their
    metrics choose the best checkpoint; every checkpoint holds them under ``ema``, which the
    loaders (test.py, inference.py, the API) use when present."""

    arg_kinds = {"decay": "fraction"}
    once = True  # the checkpoint's ema entry, and the metrics that choose the best checkpoint

    def __init__(self, decay: float = 0.999):
        if not 0 < decay < 1:
            raise UserError(f"ema: decay {decay!r} must lie between 0 and 1 (0.999 is usual)")
        self.decay = float(decay)
        self.model = None
        self.updates = 0
        self._saved = None

    def before_train(self, trainer):
        if self.model is None:
            self.model = copy.deepcopy(trainer.model).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            if self._saved is not None:  # a resumed run: the EMA as it was saved
                self.model.load_state_dict(self._saved)
                self._saved = None
        raw = trainer.model.state_dict()
        self._pairs = [(e, raw[k]) for k, e in self.model.state_dict().items()]

    @torch.no_grad()
    def after_step(self, trainer, losses):
        for ema, w in self._pairs:
            if ema.is_floating_point():
                ema.lerp_(w, 1.0 - self.decay)
            else:
                ema.copy_(w)
        self.updates += 1

    def after_validation(self, trainer, metrics):
        own = trainer.evaluate_model(self.model)
        if own is None:
            return
        log.info("step %d validation of the EMA weights (decay %g): Loss %.4f  Acc %.4f  "
                 "AUC %.4f", trainer.step, self.decay, own["LogLoss"], own["Acc"], own["AUC"])
        if trainer.writer:
            for tag, key in (("Loss", "LogLoss"), ("Acc", "Acc"), ("AUC", "AUC")):
                if not math.isnan(own[key]):
                    trainer.writer.add_scalar(f"val_ema/{tag}", own[key], trainer.step)
        metrics.update(own, weights="EMA")

    def at_checkpoint(self, trainer, state):
        state["ema"] = self.model.state_dict()  # the same tensors as state_dict(): stored once

    def state_dict(self):
        return {"weights": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state):
        self.updates = int(state["updates"])
        if self.model is None:
            self._saved = state["weights"]
        else:
            self.model.load_state_dict(state["weights"])


@register_hook(name="deepfakebench_selection")
class DeepfakeBenchSelection(Hook):
    """DeepfakeBench's choice of checkpoint, made on test data as its trainer makes it
    (trainer/deepfakebench.py): at each of its evaluation moments (the end of the first pass over
    the training data, then the middle and the end of every later pass) the frame AUC of each
    test branch in ``branches`` (dataset-file branches), averaged, chooses the best checkpoint;
    the first highest average is kept (a tie keeps the earlier one). Validations at other steps
    choose nothing. Each moment must be a validation step (``val_steps`` = half a pass)."""

    arg_kinds = {"branches": "list"}
    once = True  # the metrics that choose the best checkpoint

    def __init__(self, branches: list):
        if not branches or not all(isinstance(b, str) and b for b in branches):
            raise UserError(f"deepfakebench_selection: branches {branches!r}: expected a list "
                            "of the dataset file's test branches")
        from .deepfakebench import BestAverage
        self.branches = list(branches)
        self.best = BestAverage()
        self.moments, self.loaders = set(), []

    def before_train(self, trainer):
        from .deepfakebench import evaluation_steps
        cfg, tc = trainer.cfg, trainer.train_cfg
        missing = [b for b in self.branches if b not in cfg["dataset"]]
        if missing:
            raise UserError(f"deepfakebench_selection: {cfg['data']['file']} has no branch "
                            f"{', '.join(missing)} (it has {', '.join(cfg['dataset'])})")
        if trainer.eval_metric != "AUC":
            raise UserError("deepfakebench_selection chooses by AUC: set config.metric: AUC")
        n, num_steps = len(trainer.train_loader), tc["num_steps"]
        epochs = -(-num_steps // n)  # the passes the run starts
        self.moments = {s for *_, s in evaluation_steps(n, epochs - 1) if s <= num_steps}
        unseen = sorted(s for s in self.moments
                        if s % tc["val_steps"] and s != num_steps)
        if unseen:
            raise UserError(f"deepfakebench_selection: DeepfakeBench evaluates after step(s) "
                            f"{', '.join(map(str, unseen[:4]))}, which are not validation steps: "
                            f"set {cfg['data']['train_branch']}.val_steps to {max(n // 2, 1)} "
                            f"(half of the {n} batches of a pass)")
        self.loaders = [(name, trainer.branch_loader(name, cfg["data"]["test_batch_size"]))
                        for name in self.branches]
        log.info("checkpoint choice: DeepfakeBench's, on test data: the mean frame AUC over %s "
                 "after %d of the steps (%s); %d steps = %.2f passes of %d batches, %s",
                 ", ".join(self.branches), len(self.moments),
                 ", ".join(map(str, sorted(self.moments)[:3])) + (", ..." if len(self.moments) > 3
                                                                  else ""),
                 num_steps, num_steps / n, n, "fp32" if trainer.amp == "none" else trainer.amp)

    def after_validation(self, trainer, metrics):
        from .deepfakebench import average_test_auc, test_set_auc
        from .evaluate import evaluate
        chosen = math.nan  # a validation that is not one of its moments chooses nothing
        if trainer.step in self.moments:
            aucs = {}
            for name, loader in self.loaders:
                res = evaluate(trainer.ddp, loader, trainer.device, trainer.eval_amp, trainer.bad)
                aucs[name] = test_set_auc(res["label"], res["prob"])
            trainer.bad.take_count()
            average = average_test_auc(aucs, self.branches)
            log.info("step %d test AUC (DeepfakeBench's choice, on test data): %s; mean %.4f",
                     trainer.step, "  ".join(f"{k} {v:.4f}" for k, v in aucs.items()), average)
            if trainer.writer:
                for name, value in {**aucs, "mean": average}.items():
                    if not math.isnan(value):
                        trainer.writer.add_scalar(f"test_choice/{name}_AUC", value, trainer.step)
            if self.best.offer(average, trainer.step):
                chosen = average
        metrics.update(AUC=chosen, weights="DeepfakeBench test-set mean")

    def state_dict(self):
        return {"best": self.best.best, "moment": self.best.moment}

    def load_state_dict(self, state):
        self.best.best, self.best.moment = float(state["best"]), state["moment"]
