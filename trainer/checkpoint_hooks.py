"""The checkpoints of a run, written by hooks of the kind a user writes (trainer/hooks.py):
``BestCheckpoint`` chooses the best checkpoint at each validation, calibrates it and keeps the
newest few; ``LatestCheckpoint`` writes ``latest_model.bin``, the state a resumed run continues
from. The trainer calls them after the run's own hooks at every moment (its ``default_hooks``),
so that they see the metrics those hooks leave (the ``ema`` hook's, for instance).
"""
import logging
import math

from errors import UserError

from .checkpoint import prune_best
from .hooks import Hook

log = logging.getLogger("recce")
HIGHER_IS_BETTER = {"Acc": True, "AUC": True, "LogLoss": False}


class BestCheckpoint(Hook):
    """The best checkpoint by ``metric`` (``config.metric``): at each validation, the metrics that
    the run's hooks leave choose it where they are at least as good as the best so far (ties:
    the later step, as the original; NaN never). ``best_model_<step>.bin`` keeps the weights
    without the training state, with the calibration (``model.calibration.fit``) of the
    validation scores of the weights that chose it; where the fit is refused, none, the reason
    said once. The ``keep`` newest are kept (``config.keep_best``; None: all). Every checkpoint
    carries the choice as the original's ``best_step``, ``best_metric`` and ``eval_metric``."""

    name = "best_checkpoint"
    once = True  # the checkpoint's best_* entries

    def __init__(self, metric, keep=None):
        self.metric, self.keep = metric, keep
        self.best_metric, self.best_step = None, 0
        self.calibration = None  # of the newest best checkpoint
        self.uncalibrated = None  # why the newest best checkpoint has none (the refused fit)
        self.said = set()  # each reason a fit was refused for, said once
        self.chosen = None  # the metrics that chose at this validation, until written

    def is_better(self, value):
        """NaN never; ties count as better (the original kept the later step)."""
        if math.isnan(value):
            return False
        if self.best_metric is None:
            return True
        if HIGHER_IS_BETTER[self.metric]:
            return value >= self.best_metric
        return value <= self.best_metric

    def calibrate(self, trainer, scores, weights="raw", videos=None):
        """(calibration, why not): the calibration (``model.calibration.fit``) of validation
        ``scores`` (labels, logits) of the ``weights`` that a best checkpoint keeps, or None and
        the reason the fit was refused (a class missing, logits all equal, a temperature at the
        end of the search, TPR 0 at every operating point), each reason said once. ``videos``:
        each frame's video, for the video-level points (the frames' mean, as a video's verdict)."""
        from model.calibration import fit
        labels, logits = scores
        try:
            return fit(labels, logits, {"dataset": trainer.val_set.name,
                                        "branch": trainer.cfg["data"]["val_branch"],
                                        "step": trainer.step, "weights": weights},
                       videos=videos), None
        except UserError as exc:
            why = str(exc)
            if why not in self.said:
                log.warning("best checkpoints are not calibrated: %s", why)
                self.said.add(why)
            return None, why

    def after_validation(self, trainer, metrics):
        self.chosen = None
        if self.is_better(metrics[self.metric]):
            self.best_metric, self.best_step = metrics[self.metric], trainer.step
            self.chosen = metrics

    def write_checkpoints(self, trainer):
        """``best_model_<step>.bin`` where this validation chose, calibrated: by the raw weights'
        fit that the validation made (``metrics["calibration"]``) where the raw weights chose,
        else by a fit of the scores of the weights that chose."""
        if self.chosen is None:
            return
        chosen, self.chosen = self.chosen, None
        raw = chosen.get("calibration", (None, None))
        if chosen["weights"] == "raw" and raw != (None, None):
            cal, why = raw  # fitted (or refused) by the validation
        else:  # other weights chose, or one class only (each reason said once)
            cal, why = self.calibrate(trainer, chosen["scores"], chosen["weights"],
                                      chosen["videos"]) \
                if len(chosen["videos"]) else (None, "no readable validation image")
        self.calibration, self.uncalibrated = cal, why
        if cal is not None:
            log.info("calibration of best_model_%d.bin: %s", trainer.step, cal.describe())
        trainer.save(f"best_model_{trainer.step}.bin", weights_only=True,
                     extra={"calibration": cal.to_dict()} if cal is not None else None)
        if self.keep and trainer.run_dir and trainer.rank == 0:
            for name in prune_best(trainer.run_dir, self.keep):
                log.info("removed %s (config.keep_best: %d)", name, self.keep)

    def at_checkpoint(self, trainer, state):
        state.update(best_step=self.best_step, best_metric=self.best_metric,
                     eval_metric=self.metric)

    def after_load_checkpoint(self, trainer, state):
        self.best_step = int(state.get("best_step", state["step"]))
        self.best_metric = state.get("best_metric")


class LatestCheckpoint(Hook):
    """``latest_model.bin``: the weights and the whole training state (optimizer, scheduler, grad
    scaler, RNG, data order, the hooks' state), rewritten after every validation and when a
    signal stops the run; ``config.resume`` continues from it."""

    name = "latest_checkpoint"
    once = True  # one file of that name

    def write_checkpoints(self, trainer):
        trainer.save("latest_model.bin")
