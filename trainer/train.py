"""The training run: ``run(cfg)`` sets up, then loops over steps, validating every ``val_steps``.

A batch travels: DataLoader workers (decode, augment) -> ``model(x, return_aux=True)`` -> the
model's loss (named terms + total) -> backward (grad scaler under fp16) -> optimizer and scheduler
step -> log -> validation on every rank, scores gathered -> checkpoints. The hooks of
``config.hooks`` (trainer/hooks.py: clipping, EMA, gradient accumulation, a user's own) are called
at the loop's moments, and after them the checkpoint hooks (trainer/checkpoint_hooks.py: the best
checkpoint, its calibration, the latest checkpoint).

Beside the loop: trainer/data.py (the datasets and loaders), trainer/logs.py (the log lines,
progress and TensorBoard), trainer/figures.py, trainer/checkpoint.py (the run folder, writing).

Every decision that changes the control flow of a step (skip a batch without images, skip a step
whose loss is not finite, stop on a signal) is taken on flags agreed across ranks, so no rank runs
a step or a collective that another rank skips.
"""
import logging
import math
import os
import signal
import sys
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel

from dataset import BadImageLog
from dataset.base import iterate_quietly, to_input
from errors import UserError
from model import build_detector, scores
from model.checkpoint import load_weights, training_spec
from optimizer import build_optimizer, load_state
from scheduler import build_scheduler

from . import distributed as dist
from .checkpoint import (
    atomic_save,
    load_checkpoint,
    make_run_dir,
    newest_best,
    rng_state,
    set_rng_state,
)
from .checkpoint_hooks import BestCheckpoint, LatestCheckpoint
from .config import save_config
from .data import branch_loader, pretrained_spec_warning, training_data
from .evaluate import autocast, device_amp, evaluate, validation_metrics
from .hooks import build_hooks, check_once, overrides
from .logs import LossWindow, Progress, setup_logging, write_validation

log = logging.getLogger("recce")
MAX_SKIPPED_BATCHES = 50  # consecutive batches without a readable image before the run stops


class NonFiniteLoss(UserError):
    pass


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped training between two steps; the checkpoint is saved."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, DistributedDataParallel) else model


class Trainer:
    """One training run: ``Trainer(cfg)`` sets it up (run folder, logging, hooks, detector, data,
    optimizer, a resumed state), ``fit()`` runs the loop, ``close()`` lets go of the run folder.
    ``hooks`` are the run's own (``config.hooks``, then ``add_hook``); ``default_hooks``, called
    after them at every moment, write the checkpoints (``best``: the best checkpoint's hook)."""

    def __init__(self, cfg, local_rank=None):
        self.cfg = cfg
        c = cfg["config"]
        self.rank, self.world, self.device = dist.init(c["distribute"]["backend"], local_rank,
                                                       c["distribute"]["timeout"])
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        self.resume = bool(c["resume"] or c["resume_best"] or restarted)
        self.debug = bool(c["debug"])
        self.lock = None
        self.writer = None
        self.stop_signal = None
        self.run_dir = None
        if not self.debug:
            self.run_dir, self.lock = make_run_dir(cfg, self.resume)
        try:
            self._build(cfg, c, restarted)
        except BaseException:
            self.close()  # a run that could not start holds no lock
            raise

    def _build(self, cfg, c, restarted):
        setup_logging(self.run_dir, self.rank)
        if restarted and not (c["resume"] or c["resume_best"]):
            log.info("torchrun restarted the group: resuming from the latest checkpoint")
        if self.rank == 0:
            for note in cfg.get("moved", []):
                log.info("%s", note)
        self.hooks, self.accumulate, self._unscale = [], 1, False
        for k, hook in enumerate(build_hooks(c["hooks"])):
            self.add_hook(hook, f"config.hooks[{k}]")
        # called after the run's own hooks: they see the metrics those leave
        self.best = BestCheckpoint(c["metric"], c["keep_best"])
        self.default_hooks = [self.best, LatestCheckpoint()]
        self.amp = device_amp(self.device, c["amp"], "config.amp")
        self.eval_amp = device_amp(self.device, c["eval_amp"], "config.eval_amp")
        torch.manual_seed(c["seed"] + self.rank)

        model = build_detector(cfg["model"]).to(self.device)
        self.model_cls = type(model)
        self.criterion = model.build_loss(cfg["loss"])  # the detector's own, from its section
        model.spec = training_spec(cfg, self.model_cls)  # saved with every checkpoint
        self._check_spec(model)
        # debug runs do not validate
        data = training_data(cfg, model.spec, self.rank, self.world, validate=not self.debug)
        self.train_cfg, self.train_set, self.val_set = data.train_cfg, data.train_set, data.val_set
        self.train_loader, self.val_loader = data.train_loader, data.val_loader
        self.face_crop = data.face_crop  # the training faces' crop rule, in every checkpoint

        if self.world > 1 and self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.ddp = model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)
        self.forward = torch.compile(self.ddp) if c["compile"] else self.ddp
        self.params = [p for p in model.parameters() if p.requires_grad]
        # fused kernels on a GPU: fewer launches, and fp16's overflow check stays on the device
        self.optimizer = build_optimizer(self.params, c["optimizer"],
                                         fused=self.device.type == "cuda")
        self.scheduler = build_scheduler(self.optimizer, c["scheduler"], c["warmup_step"])
        self.scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 10,
                                           enabled=self.amp == "fp16")
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.steps_in_epoch = 0
        self.eval_metric = c["metric"]
        self.bad = BadImageLog()
        self.history = []
        if self.resume:
            self._load_for_resume()  # before anything is written: a failed resume changes nothing
        if self.run_dir and self.rank == 0:
            save_config(cfg, self.run_dir)
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(self.run_dir)

    # ------------------------------------------------------------------ hooks
    def add_hook(self, hook, label=None):
        """Call ``hook`` (a ``trainer.hooks.Hook``) at the loop's moments, after the hooks of the
        config; before ``fit``. ``label`` says where it came from in an error (a hook that a run
        may have once, added twice)."""
        hook.name = getattr(hook, "name", type(hook).__name__)
        hook.label = label or f"add_hook({hook.name})"
        check_once(self.hooks + [hook], [h.label for h in self.hooks + [hook]])
        self.hooks.append(hook)
        self.accumulate = max(h.accumulate for h in self.hooks)
        if sum(h.accumulate > 1 for h in self.hooks) > 1:
            raise UserError("more than one hook accumulates gradients")
        self._unscale = any(overrides(h, "before_optimizer_step") for h in self.hooks)

    def _call(self, moment, *args):
        for hook in self.hooks + self.default_hooks:
            getattr(hook, moment)(self, *args)

    def _check_spec(self, model):
        """One warning line when the data's normalisation is not the one the pretrained weights
        being loaded were trained with; the spec in the log."""
        if self.rank == 0:
            warning = pretrained_spec_warning(self.cfg["model"].get("pretrained"), self.model_cls,
                                              model.spec, self.cfg["data"]["file"])
            if warning:
                log.warning("%s", warning)
            log.info("input spec: %s (saved with every checkpoint)", model.spec.describe())

    def branch_loader(self, name, batch_size):
        """A loader of the dataset file's branch ``name``, prepared by the detector's input spec
        as the validation is, this rank's share: other data a hook evaluates on."""
        return branch_loader(self.cfg, name, self.model.spec, batch_size, self.rank, self.world)

    def evaluate_model(self, model):
        """Acc, AUC and LogLoss of ``model`` (e.g. a hook's copy of the weights) on the
        validation split, on every rank, scores gathered; None without a readable image."""
        res = evaluate(model, self.val_loader, self.device, self.eval_amp, self.bad)
        self.bad.take_count()  # said by the trainer's own validation
        if not len(res["label"]):
            return None
        return {**validation_metrics(res, self.val_set)[0],
                "scores": (res["label"], res["logit"])}  # what calibrates these weights

    # ------------------------------------------------------------------ checkpoints
    def _state(self):
        state = {
            "step": self.step, "model": _unwrap(self.ddp).state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(), "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch, "world_size": self.world,
            "config": {k: self.cfg[k] for k in ("model", "loss", "config", "data", "dataset")},
            "input_spec": _unwrap(self.ddp).spec.to_dict(),
            "face_crop": self.face_crop,
            "hooks": [[h.name, h.state_dict()] for h in self.hooks],
        }
        self._call("at_checkpoint", state)  # the best checkpoint's hook adds best_step, ...
        return state

    def save(self, name, weights_only=False, extra=None):
        """Rank 0 writes; every rank learns whether it worked (a full disk stops all of them).
        ``weights_only`` (the best checkpoints): the weights (and the EMA's), the config, the input
        spec and the step, without the training state that only ``latest_model.bin`` needs (a
        third of the size); ``extra``: further entries (a best checkpoint's calibration)."""
        error = None
        if self.run_dir and self.rank == 0:
            try:
                state = self._state()
                if weights_only:
                    state = {k: state[k] for k in ("step", "best_step", "best_metric",
                                                   "eval_metric", "model", "config",
                                                   "input_spec", "face_crop", "world_size",
                                                   "ema")
                             if k in state}
                state.update(extra or {})
                atomic_save(state, os.path.join(self.run_dir, name))
            except UserError as exc:
                error = str(exc)
        error = dist.broadcast_object(error)
        if error:
            raise UserError(error)

    def _load_for_resume(self):
        c = self.cfg["config"]
        if c["resume_best"]:
            path = newest_best(self.run_dir)
            if path is None:
                raise UserError(f"resume_best: no best_model_<step>.bin in {self.run_dir}")
        else:
            path = os.path.join(self.run_dir, "latest_model.bin")
        if not os.path.isfile(path):
            if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
                log.info("no checkpoint yet in %s: starting from scratch", self.run_dir)
                return
            raise UserError(f"resume: no checkpoint at {path}")
        state = load_checkpoint(path, trusted=c["trust_checkpoint"])
        self.load_state(state, path)

    def load_state(self, state, path):
        """Continue from a checkpoint; one of the original release (weights only) starts a
        fine-tuning run from step 0. A best checkpoint of this project (weights and step, no
        training state) continues from its step with the optimizer started afresh and the
        learning-rate schedule advanced to that step."""
        load_weights(_unwrap(self.ddp), state, path, ema=False)  # the raw weights go on
        if "optimizer" not in state and "step" in state and state.get("config"):
            self.step = int(state["step"])
            self._call("after_load_checkpoint", state)
            import warnings
            with warnings.catch_warnings():  # no optimizer step before these: said above
                warnings.simplefilter("ignore")
                for _ in range(self.step):
                    self.scheduler.step()
            log.info("resumed the weights of %s at step %d (a best checkpoint holds no optimizer "
                     "state: the optimizer starts afresh, the schedule is at step %d)", path,
                     self.step, self.step)
            return
        if "optimizer" in state and "rng" in state:
            load_state(self.optimizer, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if state.get("world_size", 1) == self.world:
                set_rng_state(state["rng"])
            self.step = int(state["step"])
            self.epoch = int(state["epoch"])
            self.batch_in_epoch = int(state["batch_in_epoch"])
            self._load_hooks(state.get("hooks") or [])
            self._call("after_load_checkpoint", state)
            log.info("resumed from %s at step %d", path, self.step)
        else:
            log.info("loaded model weights from %s (no training state): fine-tuning from step 0",
                     path)

    def _load_hooks(self, saved):
        """Each hook's saved state, matched by position and name; a hook that has none (added
        since) starts afresh, said once."""
        for i, hook in enumerate(self.hooks):
            if i < len(saved) and saved[i][0] == hook.name:
                hook.load_state_dict(saved[i][1])
            else:
                log.warning("hook %s: no saved state in the checkpoint; it starts afresh",
                            hook.name)

    # ------------------------------------------------------------------ the loop
    def fit(self):
        tc = self.train_cfg
        num_steps, log_steps, val_steps = tc["num_steps"], tc["log_steps"], tc["val_steps"]
        self.ddp.train()
        if self.step >= num_steps:
            log.info("nothing to do: the checkpoint is at step %d of %d", self.step, num_steps)
            return self.summary()
        bar = None
        if self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=num_steps, initial=self.step, desc="train", dynamic_ncols=True,
                       disable=not sys.stderr.isatty())
        progress = Progress(self.step, num_steps,
                            self.cfg["data"]["train_batch_size"] * self.world)
        window = LossWindow(progress, self.device, self.writer, getattr(self.criterion, "TAGS", {}))
        quiet = bar is None or bar.disable  # no bar on screen: periodic lines instead
        steps = self._step_batches()
        self._call("before_train")
        while self.step < num_steps:
            micro = next(steps)
            result = self.train_step(micro if len(micro) > 1 else micro[0])
            self.step += 1
            if bar:
                bar.update(1)
            if result is not None:  # summed on the device: read once per log step
                window.add(*result)
            if self.step % log_steps == 0 and window.count:
                window.write(self.step, self.scheduler.get_last_lr()[0])
            elif quiet and self.rank == 0 and progress.due():
                progress.say(self.step)
            if not self.debug and (self.step % val_steps == 0 or self.step == num_steps):
                self.validate()
                self.ddp.train()
        if bar:
            bar.close()
        self._call("after_train")
        if self.debug:
            return {}
        return self.summary()

    def _step_batches(self):
        """The micro-batches of each optimizer step (one without gradient accumulation). A batch
        without a readable image is skipped (``MAX_SKIPPED_BATCHES`` in a row stop the run); a
        stop signal stops a step before it starts, never half-way."""
        batches, skipped = self._batches(), 0
        while True:
            micro = []
            while len(micro) < self.accumulate:
                batch = next(batches)
                self.bad.add(batch["bad"])
                no_image, stop = self._agree("image" not in batch, self.stop_signal is not None)
                if stop and not micro:
                    self.batch_in_epoch -= 1  # not trained on: the resumed run starts with it
                    self._stop()
                if no_image:
                    skipped += 1
                    if skipped >= MAX_SKIPPED_BATCHES:
                        raise UserError(f"{self.train_set.name}: {skipped} batches in a row "
                                        f"without a readable image ({len(self.bad.seen)} bad "
                                        "file(s) so far); check the dataset")
                    continue
                skipped = 0
                micro.append(batch)
                self.steps_in_epoch += 1  # batches trained on in this epoch
            yield micro

    def _agree(self, *flags):
        """The host's flags ORed over all ranks (through the CPU group: no wait for the GPU)."""
        return [v > 0 for v in dist.all_reduce(flags, self.device, "max", host=True)]

    def _batches(self):
        """Endless batches across epochs, starting part-way into the resumed epoch. An epoch that
        yields batches but trains no step (no readable image) stops the run."""
        while True:
            sampler = self.train_loader.sampler
            sampler.set_epoch(self.epoch)
            self.train_set.set_epoch(self.epoch)
            sampler.skip = self.batch_in_epoch * self.train_loader.batch_size
            self.steps_in_epoch, seen = 0, 0
            for batch in iterate_quietly(self.train_loader):
                self.batch_in_epoch += 1
                seen += 1
                yield batch
            n_bad = self.bad.take_count()
            if n_bad:
                log.warning("epoch %d: skipped %d unreadable image(s)", self.epoch, n_bad)
            if seen and not self.steps_in_epoch:  # agreed: skip decisions are taken together
                raise UserError(f"{self.train_set.name}: a whole epoch without a readable image "
                                f"({len(self.bad.seen)} bad file(s)); check the dataset")
            self.epoch += 1
            self.batch_in_epoch = 0

    def train_step(self, batch):
        """One optimizer step on ``batch``, or on a list of micro-batches (gradient accumulation:
        each contributes its loss divided by their number). Returns the step's loss terms and
        accuracy (means over the micro-batches, on the device), or None for a step skipped
        because its loss was not finite."""
        micro = batch if isinstance(batch, list) else [batch]
        self._call("before_step")
        self.optimizer.zero_grad(set_to_none=True)
        sums, bad, host, ready = {}, None, None, None
        for k, b in enumerate(micro):
            last = k == len(micro) - 1
            x = to_input(b, self.device)  # uint8 from the workers, normalised on the device
            y = b["label"].to(self.device, non_blocking=True)
            # DDP reduces the gradients once, at the step's last micro-batch
            sync = last or not isinstance(self.ddp, DistributedDataParallel)
            with nullcontext() if sync else self.ddp.no_sync():
                with autocast(self.device, self.amp):
                    outputs = self.forward(x, return_aux=True)
                outputs = {n: v.float() for n, v in outputs.items()}
                losses = self.criterion(outputs, x.float(), y)
                total = losses["total"]
                # Is the loss finite? Asked without stalling the device's queue: the answer is
                # copied to the host behind the forward, the backward is queued, and only then
                # does the host wait, for the forward alone, while the device works through the
                # backward. The decision to step, skip or stop is still taken before the
                # optimizer step, agreed by every rank.
                flag = ~torch.isfinite(total.detach())
                bad = flag if bad is None else bad | flag
                if last and bad.is_cuda:
                    host = torch.empty((), dtype=torch.bool, pin_memory=True)
                    host.copy_(bad, non_blocking=True)
                    ready = torch.cuda.Event()
                    ready.record()
                self.scaler.scale(total / len(micro) if len(micro) > 1 else total).backward()
            with torch.no_grad():
                acc = ((scores(outputs)["prob"] >= 0.5).long() == y).float().mean()
            for n, v in {**losses, "acc": acc}.items():
                v = v.detach()
                sums[n] = v if n not in sums else sums[n] + v
        if ready is not None:
            ready.synchronize()
            bad = host
        (nonfinite,) = self._agree(bool(bad))
        if nonfinite:
            self.optimizer.zero_grad(set_to_none=True)  # the step is not taken
            if self.cfg["config"]["on_nonfinite"] == "stop":
                raise NonFiniteLoss(f"the loss is not finite at step {self.step + 1} (on at least "
                                    f"one process; here {total.item()}); the checkpoints in "
                                    f"{self.run_dir} are intact (set config.on_nonfinite: skip to "
                                    "skip such steps)")
            log.warning("non-finite loss at step %d: step skipped", self.step + 1)
            return None
        if self._unscale:
            self.scaler.unscale_(self.optimizer)  # the hooks see the true gradients
        self._call("before_optimizer_step")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if len(micro) > 1:
            sums = {n: v / len(micro) for n, v in sums.items()}
        acc = sums.pop("acc")
        self._call("after_step", sums)
        return sums, acc

    def validate(self):
        """Validation on every rank, scores gathered: the metrics (TensorBoard, the scheduler's
        plateau), the hooks' ``after_validation`` (the run's, which may let other weights choose,
        then the best checkpoint's choice), the log line, the hooks' ``write_checkpoints``."""
        res = evaluate(self.forward, self.val_loader, self.device, self.eval_amp, self.bad,
                       keep_first=3 if self.model_cls.has_reconstruction else 0)
        n_bad = self.bad.take_count()
        if n_bad:
            log.warning("validation: skipped %d unreadable image(s)", n_bad)
        metrics, extra = validation_metrics(res, self.val_set)
        classes = set(res["label"].tolist())
        if len(res["label"]):
            if len(classes) < 2:
                only = "real" if res["label"][0] == 0 else "fake"
                log.warning("validation: %s has %s images only: AUC is undefined",
                            self.val_set.name, only)
            self.scheduler.step_on_validation(metrics["LogLoss"])
        scores = (res["label"], res["logit"])
        # the raw weights' calibration on this validation, fitted once: TensorBoard's examples show
        # its probabilities, and the best checkpoint keeps it when the raw weights choose
        raw = self.best.calibrate(self, scores, videos=res["video"]) if len(classes) == 2 \
            else (None, None)
        if self.writer:
            write_validation(self.writer, self.step, self.val_set, _unwrap(self.ddp).spec,
                             metrics, extra, res, raw[0])
        chosen = {**metrics, "weights": "raw", "scores": scores, "videos": res["video"],
                  "calibration": raw}
        # the run's hooks may let other weights choose (EMA); then the best checkpoint's chooses
        self._call("after_validation", chosen)
        best = self.best.best_metric
        which = "" if chosen["weights"] == "raw" else f"{chosen['weights']} "
        log.info("step %d validation: Loss %.4f  Acc %.4f  AUC %.4f  (best %s%s %.4f at step %d)",
                 self.step, metrics["LogLoss"], metrics["Acc"], metrics["AUC"], which,
                 self.eval_metric, best if best is not None else math.nan, self.best.best_step)
        self._call("write_checkpoints")  # the best (where this one is), the latest
        self.history.append((self.step, metrics))
        return metrics

    def _stop(self):
        signum = self.stop_signal or signal.SIGINT
        log.warning("%s received: stopping after step %d", signal.Signals(signum).name, self.step)
        if not self.debug:
            self._call("write_checkpoints")  # the latest
        where = f"latest_model.bin in {self.run_dir}" if self.run_dir else "nothing (debug run)"
        name = signal.Signals(signum).name
        raise Interrupted(signum, f"interrupted at step {self.step} ({name}): saved {where}; "
                                  "continue with --opt config.resume=true")

    def summary(self):
        b, best = self.best, None
        if self.run_dir and b.best_metric is not None:
            best = os.path.join(self.run_dir, f"best_model_{b.best_step}.bin")
        return {"best_metric": b.best_metric, "best_step": b.best_step,
                "metric": self.eval_metric, "best_checkpoint": best, "run_dir": self.run_dir,
                "history": self.history,
                "calibration": b.calibration.describe() if best and b.calibration else None,
                "uncalibrated": b.uncalibrated if best and not b.calibration else None}

    def close(self):
        if self.writer:
            self.writer.close()
        if self.lock:
            self.lock.release()


def _install_signal_handlers(trainer):
    """SIGINT / SIGTERM ask the loop to stop after the current step; a second SIGINT stops at
    once. Returns a function that restores the previous handlers."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = signum  # said by _stop: a log line written from a signal handler
        # can land inside another one's write (a reentrant call on the stream)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in previous.items()]


def set_training_threads(cfg, threads=None):
    """torch's intra-op threads for a training process: ``threads`` where given (train.py
    --threads), else ``checks.default_threads``: the cores this process may use, shared among the
    ranks of its machine, less one for each loader worker beside it. Returns the number."""
    from checks import default_threads
    if threads is None:
        threads = default_threads(cfg["data"]["num_workers"],
                                  int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    torch.set_num_threads(int(threads))
    return int(threads)


def run(cfg, local_rank=None, threads=None):
    n = set_training_threads(cfg, threads)
    log.info("intra-op threads: %d%s", n, " (--threads)" if threads else
             " (the cores this process may use, less its loader workers: --threads sets them)")
    trainer = Trainer(cfg, local_rank)
    restore = _install_signal_handlers(trainer)
    try:
        return trainer.fit()
    finally:
        restore()
        trainer.close()
