"""DeepfakeBench's training loop for RECCE, as plain functions: how many passes it makes over the
training set, after which iterations it evaluates, what it averages and which checkpoint it keeps.

Read from SCLBD/DeepfakeBench: training/train.py (``for epoch in range(start_epoch, nEpochs + 1)``),
training/trainer/trainer.py (``train_epoch``, ``test_epoch``, ``save_best``), training/metrics/
utils.py (``get_test_metrics``), training/config/detector/recce.yaml and train_config.yaml.

- Passes: ``range(start_epoch, nEpochs + 1)``: 11 for recce.yaml's ``nEpochs: 10``,
  ``start_epoch: 0``.
- Evaluation moments: in epoch ``e`` (0-based) the loader has ``N`` batches; it evaluates
  ``times = 1`` (epoch 0) or ``2`` (later epochs) times, every ``test_step = N // times``
  iterations counted on the global counter ``step = e * N + i``: after the optimizer step of
  iteration ``i`` whenever ``(step + 1) % test_step == 0``. For an even ``N`` that is once at the
  end of epoch 0, then at the middle and the end of every later epoch (21 evaluations for 11
  passes); for an odd ``N`` a later epoch has two or three. ``N < 2`` stops it (``test_step`` 0).
- Metric: each test set's frame-level AUC (``metric_scoring: auc``; every frame of its
  ``frame_num`` per video, labels >= 1 counted as fake), averaged over recce.yaml's
  ``test_dataset`` list (``save_avg: True``): the sum over the list divided by its length.
- Selection: the checkpoint of the first moment whose average is strictly higher than every
  earlier one is saved as ``test/avg/ckpt_best.pth`` (a tie keeps the earlier one; an undefined
  average never replaces one). No per-set checkpoint is saved for RECCE's list: every set in it
  is of the FF++ family, which ``save_best`` leaves out. Selection is on test data.
"""
import math

from errors import UserError

N_EPOCHS = 10  # recce.yaml nEpochs
START_EPOCH = 0  # recce.yaml start_epoch
TEST_DATASETS = ("FaceForensics++", "FF-F2F", "FF-DF", "FF-FS", "FF-NT")  # recce.yaml test_dataset


def passes(n_epochs=N_EPOCHS, start_epoch=START_EPOCH):
    """How many epochs ``range(start_epoch, n_epochs + 1)`` trains: 11 for recce.yaml."""
    return len(range(start_epoch, n_epochs + 1))


def evaluation_iterations(epoch, steps_per_epoch):
    """The iterations (0-based, within ``epoch``) after whose optimizer step DeepfakeBench
    evaluates on its test sets, for a training loader of ``steps_per_epoch`` batches."""
    if steps_per_epoch < 1:
        raise UserError(f"steps per epoch {steps_per_epoch}: expected at least 1")
    times = 2 if epoch >= 1 else 1
    test_step = steps_per_epoch // times
    if test_step == 0:
        raise UserError(f"epoch {epoch}: a training set of {steps_per_epoch} batch(es) cannot be "
                        "evaluated twice an epoch (DeepfakeBench's test_step would be 0)")
    first = epoch * steps_per_epoch
    return [i for i in range(steps_per_epoch) if (first + i + 1) % test_step == 0]


def evaluation_steps(steps_per_epoch, n_epochs=N_EPOCHS, start_epoch=START_EPOCH):
    """``[(epoch, iteration, optimizer steps done)]`` of every evaluation of the whole run; the
    steps are counted from epoch 0, as DeepfakeBench's own counter (``epoch * N + i + 1``)."""
    return [(e, i, e * steps_per_epoch + i + 1)
            for e in range(start_epoch, n_epochs + 1)
            for i in evaluation_iterations(e, steps_per_epoch)]


def average_test_auc(aucs, names=TEST_DATASETS):
    """The mean of the frame AUCs ``aucs[name]`` over ``names``: its sum over the list divided by
    the list's length (a set missing from ``aucs`` is an error; a NaN makes the average NaN)."""
    names = list(names)
    if not names:
        raise UserError("average test AUC: no test set named")
    missing = [n for n in names if n not in aucs]
    if missing:
        raise UserError(f"average test AUC: no AUC for {', '.join(missing)} (have: "
                        f"{', '.join(map(str, aucs)) or 'none'})")
    return sum(float(aucs[n]) for n in names) / len(names)


def test_set_auc(labels, probs):
    """One test set's AUC as DeepfakeBench scores it: frame level, labels >= 1 taken as fake
    (NaN when one class is missing)."""
    import numpy as np

    from .metrics import metric_value
    return metric_value("AUC", (np.asarray(labels) >= 1).astype(np.int64), probs)


class BestAverage:
    """DeepfakeBench's choice of checkpoint: the first moment with the highest average so far.
    ``offer(value, moment)`` returns True when the checkpoint of ``moment`` replaces the kept one
    (``value`` strictly above the best; NaN never is, as ``nan > best`` is false)."""

    def __init__(self):
        self.best = -math.inf
        self.moment = None

    def offer(self, value, moment):
        if float(value) > self.best:
            self.best, self.moment = float(value), moment
            return True
        return False
