"""What a training run says: the log lines (console and ``train_rank<k>.log`` in the run
folder), the progress of the run, the window means of the loss terms, and the TensorBoard
events of each validation."""
import logging
import os
import sys
import time

from . import distributed as dist
from .figures import examples_figure, roc_figure

log = logging.getLogger("recce")


class ConsoleHandler(logging.StreamHandler):
    """Log lines on the console that never share a line with a progress bar: written through
    tqdm, which clears the bar, prints the line and redraws the bar beneath it; each line is
    flushed at once, also into a pipe (``| tee``, a job scheduler's log, a parent process)."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(run_dir, rank):
    """The root logger's lines: on the console from rank 0 (``ConsoleHandler``), and into
    ``<run_dir>/train_rank<rank>.log`` where the run has a folder."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if rank == 0:
        console = ConsoleHandler(sys.stdout)
        console.setFormatter(fmt)
        root.addHandler(console)
    if run_dir:
        fh = logging.FileHandler(os.path.join(run_dir, f"train_rank{rank}.log"))
        fh.setFormatter(fmt)
        root.addHandler(fh)


class Progress:
    """Images per second and the time left, for the log line of every log step, and a progress
    line at least every ``every`` seconds when no terminal shows a bar (a job's log is never
    silent for minutes)."""

    def __init__(self, step, num_steps, images_per_step, every=30.0, clock=time.monotonic):
        self.num_steps, self.images_per_step, self.every, self.clock = (
            num_steps, images_per_step, every, clock)
        self.mark_step, self.mark_time = step, clock()
        self.start_step, self.start_time = step, self.mark_time
        self.last_line = self.mark_time

    def rate(self, step):
        """(images/s since the last call, seconds left at the run's average pace)."""
        now = self.clock()
        images = (step - self.mark_step) * self.images_per_step
        rate = images / max(now - self.mark_time, 1e-9)
        pace = (now - self.start_time) / max(step - self.start_step, 1)
        self.mark_step, self.mark_time = step, now
        self.last_line = now
        return rate, pace * (self.num_steps - step)

    def due(self):
        return self.clock() - self.last_line >= self.every

    def say(self, step):
        """The progress line of a run without a bar on screen."""
        rate, left = self.rate(step)
        log.info("step %d/%d  %.0f img/s  eta %s", step, self.num_steps, rate, self.eta(left))

    @staticmethod
    def eta(seconds):
        seconds = int(round(seconds))
        return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LossWindow:
    """The loss terms and the accuracy of the steps since the last log line, summed on the device
    (read once per line), and that line: their means over the steps and the ranks, the learning
    rate, images/s and the time left; also into TensorBoard (``writer``, where given, with the
    loss's ``tags``)."""

    def __init__(self, progress, device, writer=None, tags=None):
        self.progress, self.device, self.writer = progress, device, writer
        self.tags = {**(tags or {}), "acc": "Acc"}
        self.sums, self.count = {}, 0

    def add(self, losses, acc):
        for k, v in {**losses, "acc": acc}.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()
        self.count += 1

    def write(self, step, lr):
        """The log line of ``step`` (every rank takes part: the means are all-reduced); the
        window starts again."""
        keys = sorted(self.sums)
        totals = [float(v) for v in dist.all_reduce([float(self.sums[k]) for k in keys]
                                                    + [self.count], self.device, "sum")]
        avg = {k: v / totals[-1] for k, v in zip(keys, totals[:-1])}
        terms = "  ".join(f"{k} {avg[k]:.4f}" for k in keys if k not in ("total", "acc"))
        rate, left = self.progress.rate(step)
        pace = f"  {rate:.0f} img/s  eta {self.progress.eta(left)}"
        if self.writer:
            self.writer.add_scalar("train/images_per_s", rate, step)
        log.info("step %d/%d  loss %.4f  %s  acc %.4f  lr %.2e%s", step, self.progress.num_steps,
                 avg["total"], terms, avg["acc"], lr, pace)
        if self.writer:
            for k in keys:
                self.writer.add_scalar(f"train/{self.tags.get(k, k)}", avg[k], step)
            self.writer.add_scalar("train/LR", lr, step)
        self.sums, self.count = {}, 0


def write_validation(writer, step, val_set, spec, metrics, extra, res, calibration=None):
    """TensorBoard: the metrics (the original's val/Loss, val/Acc, val/AUC, and EER, AP,
    video-level and per-method AUC), the PR curve, the ROC curve and labelled examples (their
    probabilities calibrated by ``calibration``, this validation's, as a user of this step's
    checkpoint would read them; normalised as ``val_set`` or else ``spec`` says)."""
    for tag, key in (("Loss", "LogLoss"), ("Acc", "Acc"), ("AUC", "AUC")):
        writer.add_scalar(f"val/{tag}", metrics[key], step)
    for key, value in extra.items():
        if value == value:  # NaN (one class) is not written
            writer.add_scalar(f"val/{key}", value, step)
    if len(set(res["label"].tolist())) == 2:
        writer.add_pr_curve("val/PR", res["label"], res["prob"], step)
        writer.add_figure("val/ROC", roc_figure(
            res["label"], res["prob"], res["video"], {**extra, "AUC": metrics["AUC"]},
            f"{val_set.name}, step {step}"), step)
    shown = res.get("shown")
    if shown is not None and len(shown[2]):
        norm = getattr(val_set, "norm", None) or (spec.mean, spec.std)
        writer.add_figure("val/examples", examples_figure(shown, norm[:2], calibration), step)
