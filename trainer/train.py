"""The training run: ``run(cfg)`` sets up, then loops over steps, validating every ``val_steps``.

A batch travels: DataLoader workers (decode, augment) -> ``model(x, return_aux=True)`` -> the
model's loss (named terms + total) -> backward (grad scaler under fp16) -> optimizer and scheduler
step -> log -> validation on every rank, scores gathered -> best / latest checkpoint. The hooks
of ``config.hooks`` (trainer/hooks.py: clipping, EMA, gradient accumulation, a user's own) are
called at the loop's moments.

Every decision that changes the control flow of a step (skip a batch without images, skip a step
whose loss is not finite, stop on a signal) is taken on flags agreed across ranks, so no rank runs
a step or a collective that another rank skips.
"""
import logging
import math
import os
import signal
import sys
import time
from contextlib import nullcontext

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from dataset import BadImageLog, build_dataset, collate
from dataset.base import iterate_quietly, to_input, worker_init
from dataset.face_crop import face_crop_of
from dataset.transforms import with_spec
from errors import UserError
from model import build_detector, scores
from model.checkpoint import load_weights, training_spec
from model.detector import HEAT_MAX
from optimizer import build_optimizer, load_state
from scheduler import build_scheduler

from . import distributed as dist
from .checkpoint import (RunLock, atomic_save, load_checkpoint, newest_best, prune_best,
                         remove_stale_temporaries, rng_state, set_rng_state)
from .config import branch, save_config
from .evaluate import autocast, device_amp, evaluate
from .hooks import build_hooks, check_once, overrides
from .metrics import all_metrics

log = logging.getLogger("recce")
HIGHER_IS_BETTER = {"Acc": True, "AUC": True, "LogLoss": False}
MAX_SKIPPED_BATCHES = 50  # consecutive batches without a readable image before the run stops


class NonFiniteLoss(UserError):
    pass


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped training between two steps; the checkpoint is saved."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


class StepSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (for exact resume)."""

    def __init__(self, dataset, **kwargs):
        super().__init__(dataset, **kwargs)
        self.skip = 0

    def __iter__(self):
        """(epoch, index) pairs: the dataset seeds a sample's augmentation by them, so workers
        that persist across epochs need no word from the main process."""
        indices = list(super().__iter__())
        return iter([(self.epoch, i) for i in indices[self.skip:]])

    def __len__(self):
        return self.num_samples - self.skip


class _ConsoleHandler(logging.StreamHandler):
    """Log lines on the console that never share a line with a progress bar: written through
    tqdm, which clears the bar, prints the line and redraws the bar beneath it."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


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

    @staticmethod
    def eta(seconds):
        seconds = int(round(seconds))
        return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def setup_logging(run_dir, rank):
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if rank == 0:
        console = _ConsoleHandler(sys.stdout)
        console.setFormatter(fmt)
        root.addHandler(console)
    if run_dir:
        fh = logging.FileHandler(os.path.join(run_dir, f"train_rank{rank}.log"))
        fh.setFormatter(fmt)
        root.addHandler(fh)


def make_run_dir(cfg, resume):
    """``<ckpt_fold>/<model>/<id>``, locked by rank 0 for the run's lifetime; the id is chosen by
    rank 0 and shared. Refuses to reuse a run unless resuming, and a run directory that another
    run holds. Returns (run_dir, lock or None). Every rank gets the same answer (or error)."""
    run_id = cfg["config"]["id"]
    if run_id is None:
        run_id = dist.broadcast_object(time.strftime("%Y%m%d-%H%M%S"))
        cfg["config"]["id"] = run_id  # saved with the config: test.py finds the run from it
    run_dir = os.path.join(cfg["config"]["ckpt_fold"], cfg["model"]["name"], str(run_id))
    lock, error = None, None
    if dist.is_main():
        try:
            os.makedirs(run_dir, exist_ok=True)
            lock = RunLock(run_dir)
            if os.path.isfile(os.path.join(run_dir, "latest_model.bin")) and not resume:
                lock.release()
                raise UserError(f"run directory {run_dir} already holds a run: choose another "
                                "config.id, or set config.resume: true to continue it")
            for name in remove_stale_temporaries(run_dir):
                log.info("removed %s, left by an interrupted checkpoint write", name)
        except UserError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"cannot create the run directory {run_dir}: {exc.strerror}"
    error = dist.broadcast_object(error)
    if error:
        raise UserError(error)
    return run_dir, lock


def _loader(ds, batch_size, shuffle, workers, seed, rank, world, drop_last=False):
    sampler = StepSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                          drop_last=drop_last)
    # An own generator: creating loader iterators must not draw from the global RNG, which the
    # model's dropout and noise use (otherwise a resumed run would diverge).
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=torch.cuda.is_available(),
                      drop_last=drop_last, persistent_workers=workers > 0,
                      worker_init_fn=worker_init,
                      generator=torch.Generator().manual_seed(seed))


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, DistributedDataParallel) else model


def _examples_figure(shown, norm, calibration=None):
    """Real and fake validation examples, labelled with their probability (calibrated by
    ``calibration`` where given, as inference.py shows it): the input, its
    reconstruction and the difference heat map (``model.heatmap``: one fixed scale for every
    panel, the colours of inference.py's pictures)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    from model.heatmap import difference_map, heat_colours, heat_map
    x, recons, labels, probs = shown
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in norm)
    to_img = lambda t: ((t * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy())  # noqa: E731
    faces, recs = to_img(x), to_img(recons)
    diff = difference_map(x, recons)
    n = len(labels)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for j in range(n):
        kind = "fake" if int(labels[j]) == 1 else "real"
        p = float(probs[j]) if calibration is None else calibration.from_raw(float(probs[j]))
        axes[0, j].set_title(f"{kind}\np(fake) {p:.2f}" + (" cal." if calibration else ""),
                             fontsize=8)
        for row, img in enumerate((faces[j], recs[j], heat_map(diff[j])[..., ::-1])):
            axes[row, j].imshow(img)
        for row in range(3):
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
    for row, name in enumerate(("input", "reconstruction", "|input - recons.|")):
        axes[row, 0].set_ylabel(name, fontsize=8)
    scale = ScalarMappable(Normalize(0, HEAT_MAX), ListedColormap(heat_colours()))
    fig.colorbar(scale, ax=axes[2, :].tolist(), fraction=0.05, pad=0.02)
    return fig


def with_spec_of(branch_cfg, spec):
    """A training or validation branch whose transforms lack a resize or a normalisation gets the
    detector's (its default spec: one source of truth); what the dataset file states is kept."""
    out = dict(branch_cfg)
    out["transforms"], _ = with_spec(out.get("transforms"), spec, replace=False)
    return out


def holdout_of(train_cfg, val_cfg):
    """The fraction of the training split's videos to leave out of training: those the validation
    branch holds out of that same split (same root and split), else 0."""
    fraction = val_cfg.get("holdout") or 0.0
    same = all(val_cfg.get(k) == train_cfg.get(k) for k in ("root", "split", "index"))
    return fraction if fraction and same and not train_cfg.get("holdout") else 0.0


def pretrained_spec_warning(pretrained, cls, spec, data_file):
    """The warning when a run that starts from ``cls``'s pretrained weights normalises its data
    (``spec``, from ``data_file``) otherwise than those weights expect; None when it does not."""
    ref = cls.pretrained_spec
    if not pretrained or ref is None or spec.same_normalisation(ref):
        return None
    return (f"{data_file} normalises with mean {list(spec.mean)}, std {list(spec.std)}, but the "
            f"pretrained {cls.__name__} weights expect mean {list(ref.mean)}, std "
            f"{list(ref.std)}: set the Normalize of the dataset file to those, or "
            "model.pretrained: false")


class Trainer:
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
        self.amp = device_amp(self.device, c["amp"], "config.amp")
        self.eval_amp = device_amp(self.device, c["eval_amp"], "config.eval_amp")
        torch.manual_seed(c["seed"] + self.rank)

        model = build_detector(cfg["model"]).to(self.device)
        self.model_cls = type(model)
        self.criterion = model.build_loss(cfg["loss"])  # the detector's own, from its section
        model.spec = training_spec(cfg, self.model_cls)  # saved with every checkpoint
        self._check_spec(model)

        self.train_cfg = with_spec_of(branch(cfg, "train"), model.spec)
        for key in ("num_steps", "log_steps", "val_steps"):
            if key not in self.train_cfg:
                raise UserError(f"{cfg['data']['train_branch']}.{key} is missing in "
                                f"{cfg['data']['file']}")
        seed = c["seed"]
        # debug runs do not validate
        val_cfg = None if self.debug else with_spec_of(branch(cfg, "val"), model.spec)
        held = 0.0 if val_cfg is None else holdout_of(self.train_cfg, val_cfg)
        self.train_set = build_dataset(cfg["data"]["name"], self.train_cfg, seed,
                                       exclude_holdout=held, defer_normalize=True)
        self.val_set = None if val_cfg is None else build_dataset(cfg["data"]["name"], val_cfg,
                                                                  seed, defer_normalize=True)
        # the crop rule of the training faces, saved with every checkpoint: scoring raw media
        # cuts faces the same way
        self.face_crop = face_crop_of(self.train_set.items, cfg["data"]["name"])
        if self.rank == 0:
            log.info("face crop: %s", f"{self.face_crop} (the training data's)" if self.face_crop
                     else "not stated by the training data (scoring raw media uses box)")
        if held and self.rank == 0:
            log.info("validation: %d videos held out of the %s split (holdout %g); training on "
                     "the other %d", len({it.video for it in self.val_set.items}),
                     self.train_cfg.get("split"), held,
                     len({it.video for it in self.train_set.items}))
        workers = cfg["data"]["num_workers"]
        self.train_loader = _loader(self.train_set, self.train_set.frames_per_batch(
            cfg["data"]["train_batch_size"]), True, workers, seed, self.rank, self.world,
            drop_last=False)
        if self.val_set is not None:
            self.val_loader = _loader(self.val_set, self.val_set.frames_per_batch(
                cfg["data"]["val_batch_size"]), False, workers, seed, self.rank, self.world)

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
        self.best_step = 0
        self.best_metric = None
        self.eval_metric = c["metric"]
        self.bad = BadImageLog()
        self.history = []
        self.best_calibration = None  # of the newest best checkpoint
        self.uncalibrated = None  # why the newest best checkpoint has none (the refused fit)
        self._said_uncalibrated = set()  # each reason a fit was refused for, said once
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
        for hook in self.hooks:
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

    # ------------------------------------------------------------------ checkpoints
    def _state(self):
        state = {
            "step": self.step, "best_step": self.best_step, "best_metric": self.best_metric,
            "eval_metric": self.eval_metric, "model": _unwrap(self.ddp).state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(), "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch, "world_size": self.world,
            "config": {k: self.cfg[k] for k in ("model", "loss", "config", "data", "dataset")},
            "input_spec": _unwrap(self.ddp).spec.to_dict(),
            "face_crop": self.face_crop,
            "hooks": [[h.name, h.state_dict()] for h in self.hooks],
        }
        self._call("at_checkpoint", state)
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
            self.best_step = int(state.get("best_step", self.step))
            self.best_metric = state.get("best_metric")
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
            self.best_step = int(state["best_step"])
            self.best_metric = state["best_metric"]
            self.epoch = int(state["epoch"])
            self.batch_in_epoch = int(state["batch_in_epoch"])
            self._load_hooks(state.get("hooks") or [])
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

    def _is_better(self, value):
        """NaN never; ties count as better (the original kept the later step)."""
        if math.isnan(value):
            return False
        if self.best_metric is None:
            return True
        if HIGHER_IS_BETTER[self.eval_metric]:
            return value >= self.best_metric
        return value <= self.best_metric

    def _metrics(self, res, name):
        """(Acc / AUC / LogLoss, further metrics) of evaluation results; NaN without images."""
        if len(res["label"]) == 0:
            log.warning("validation: no readable image in %s: no metric this time", name)
            return {"Acc": math.nan, "AUC": math.nan, "LogLoss": math.nan}, {}
        methods = [self.val_set.items[i].method for i in res["index"]]
        m = all_metrics(res["label"], res["prob"], res["video"], methods)
        extra = {k: v for k, v in m.items() if k in ("EER", "AP", "video_AUC", "video_ACC")
                 or (k.endswith("_AUC") and not k.startswith("video_"))}
        return {"Acc": m["ACC"], "AUC": m["AUC"], "LogLoss": float(res["loss"].mean())}, extra

    def evaluate_model(self, model):
        """Acc, AUC and LogLoss of ``model`` (e.g. a hook's copy of the weights) on the
        validation split, on every rank, scores gathered; None without a readable image."""
        res = evaluate(model, self.val_loader, self.device, self.eval_amp, self.bad)
        self.bad.take_count()  # said by the trainer's own validation
        if not len(res["label"]):
            return None
        return {**self._metrics(res, self.val_set.name)[0],
                "scores": (res["label"], res["logit"])}  # what calibrates these weights

    def calibrate(self, scores, weights="raw", videos=None):
        """(calibration, why not): the calibration (``model.calibration.fit``) of validation
        ``scores`` (labels, logits) of the ``weights`` that a best checkpoint keeps, or None and
        the reason the fit was refused (a class missing, logits all equal, a temperature at the
        end of the search, TPR 0 at every operating point), each reason said once. ``videos``:
        each frame's video, for the video-level points (the frames' mean, as a video's verdict)."""
        from model.calibration import fit
        labels, logits = scores
        try:
            return fit(labels, logits, {"dataset": self.val_set.name,
                                        "branch": self.cfg["data"]["val_branch"],
                                        "step": self.step, "weights": weights},
                       videos=videos), None
        except UserError as exc:
            why = str(exc)
            if why not in self._said_uncalibrated:
                log.warning("best checkpoints are not calibrated: %s", why)
                self._said_uncalibrated.add(why)
            return None, why

    def validate(self):
        res = evaluate(self.forward, self.val_loader, self.device, self.eval_amp, self.bad,
                       keep_first=3 if self.model_cls.has_reconstruction else 0)
        n_bad = self.bad.take_count()
        if n_bad:
            log.warning("validation: skipped %d unreadable image(s)", n_bad)
        metrics, extra = self._metrics(res, self.val_set.name)
        if len(res["label"]):
            if len(set(res["label"].tolist())) < 2:
                only = "real" if res["label"][0] == 0 else "fake"
                log.warning("validation: %s has %s images only: AUC is undefined", self.val_set.name,
                            only)
            self.scheduler.step_on_validation(metrics["LogLoss"])
        # the raw weights' calibration on this validation, fitted once: TensorBoard's examples show
        # its probabilities, and the best checkpoint keeps it when the raw weights choose
        raw_cal, raw_why = self.calibrate((res["label"], res["logit"]), videos=res["video"]) \
            if len(set(res["label"].tolist())) == 2 else (None, None)
        if self.writer:
            self._write_validation(metrics, res, extra, raw_cal)
        chosen = {**metrics, "weights": "raw", "scores": (res["label"], res["logit"])}
        self._call("after_validation", chosen)  # a hook may let other weights choose (EMA)
        value = chosen[self.eval_metric]
        better = self._is_better(value)
        if better:
            self.best_metric, self.best_step = value, self.step
        which = "" if chosen["weights"] == "raw" else f"{chosen['weights']} "
        log.info("step %d validation: Loss %.4f  Acc %.4f  AUC %.4f  (best %s%s %.4f at step %d)",
                 self.step, metrics["LogLoss"], metrics["Acc"], metrics["AUC"], which,
                 self.eval_metric, self.best_metric if self.best_metric is not None else math.nan,
                 self.best_step)
        if better:
            if chosen["weights"] == "raw" and (raw_cal is not None or raw_why is not None):
                cal, why = raw_cal, raw_why  # fitted (or refused) above
            else:  # other weights chose, or one class only (each reason said once)
                cal, why = self.calibrate(chosen["scores"], chosen["weights"], res["video"]) \
                    if len(res["label"]) else (None, "no readable validation image")
            self.best_calibration, self.uncalibrated = cal, why
            if cal is not None:
                log.info("calibration of best_model_%d.bin: %s", self.step, cal.describe())
            self.save(f"best_model_{self.step}.bin", weights_only=True,
                      extra={"calibration": cal.to_dict()} if cal is not None else None)
            keep = self.cfg["config"]["keep_best"]
            if keep and self.run_dir and self.rank == 0:
                for name in prune_best(self.run_dir, keep):
                    log.info("removed %s (config.keep_best: %d)", name, keep)
        self.save("latest_model.bin")
        self.history.append((self.step, metrics))
        return metrics

    def _write_validation(self, metrics, res, extra, calibration=None):
        """TensorBoard: the metrics (the original's val/Loss, val/Acc, val/AUC, and EER, AP,
        video-level and per-method AUC), the PR curve, the ROC curve and labelled examples (their
        probabilities calibrated by ``calibration``, this validation's, as a user of this step's
        checkpoint would read them)."""
        for tag, key in (("Loss", "LogLoss"), ("Acc", "Acc"), ("AUC", "AUC")):
            self.writer.add_scalar(f"val/{tag}", metrics[key], self.step)
        for key, value in extra.items():
            if value == value:  # NaN (one class) is not written
                self.writer.add_scalar(f"val/{key}", value, self.step)
        if len(set(res["label"].tolist())) == 2:
            self.writer.add_pr_curve("val/PR", res["label"], res["prob"], self.step)
            from .testing import roc_figure
            self.writer.add_figure("val/ROC", roc_figure(
                res["label"], res["prob"], res["video"], {**extra, "AUC": metrics["AUC"]},
                f"{self.val_set.name}, step {self.step}"), self.step)
        shown = res.get("shown")
        if shown is not None and len(shown[2]):
            norm = getattr(self.val_set, "norm", None) or (_unwrap(self.ddp).spec.mean,
                                                           _unwrap(self.ddp).spec.std)
            self.writer.add_figure("val/examples",
                                   _examples_figure(shown, norm[:2], calibration), self.step)

    def _log(self, sums, count, num_steps, progress=None):
        """Window means of every loss term and the accuracy, averaged over ranks; images/s and
        the time left."""
        keys = sorted(sums)
        totals = [float(v) for v in dist.all_reduce([float(sums[k]) for k in keys] + [count],
                                                    self.device, "sum")]
        avg = {k: v / totals[-1] for k, v in zip(keys, totals[:-1])}
        lr = self.scheduler.get_last_lr()[0]
        terms = "  ".join(f"{k} {avg[k]:.4f}" for k in keys if k not in ("total", "acc"))
        pace = ""
        if progress is not None:
            rate, left = progress.rate(self.step)
            pace = f"  {rate:.0f} img/s  eta {progress.eta(left)}"
            if self.writer:
                self.writer.add_scalar("train/images_per_s", rate, self.step)
        log.info("step %d/%d  loss %.4f  %s  acc %.4f  lr %.2e%s", self.step, num_steps,
                 avg["total"], terms, avg["acc"], lr, pace)
        if self.writer:
            tags = {**getattr(self.criterion, "TAGS", {}), "acc": "Acc"}
            for k in keys:
                self.writer.add_scalar(f"train/{tags.get(k, k)}", avg[k], self.step)
            self.writer.add_scalar("train/LR", lr, self.step)

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
        sums, count, skipped = {}, 0, 0
        progress = Progress(self.step, num_steps,
                            self.cfg["data"]["train_batch_size"] * self.world)
        quiet = bar is None or bar.disable  # no bar on screen: periodic lines instead
        batches = self._batches()
        self._call("before_train")
        while self.step < num_steps:
            micro = []  # the micro-batches of this step (one without gradient accumulation)
            while len(micro) < self.accumulate:
                batch = next(batches)
                self.bad.add(batch["bad"])
                no_image, stop = self._agree("image" not in batch, self.stop_signal is not None)
                if stop and not micro:  # a step is stopped before it starts, never half-way
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
            result = self.train_step(micro if len(micro) > 1 else micro[0])
            self.step += 1
            if bar:
                bar.update(1)
            if result is not None:  # summed on the device: read once per log step
                losses, acc = result
                for k, v in {**losses, "acc": acc}.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float()
                count += 1
            if self.step % log_steps == 0 and count:
                self._log(sums, count, num_steps, progress)
                sums, count = {}, 0
            elif quiet and self.rank == 0 and progress.due():
                rate, left = progress.rate(self.step)
                log.info("step %d/%d  %.0f img/s  eta %s", self.step, num_steps, rate,
                         progress.eta(left))
            if not self.debug and (self.step % val_steps == 0 or self.step == num_steps):
                self.validate()
                self.ddp.train()
        if bar:
            bar.close()
        self._call("after_train")
        if self.debug:
            return {}
        return self.summary()

    def _stop(self):
        signum = self.stop_signal or signal.SIGINT
        log.warning("%s received: stopping after step %d", signal.Signals(signum).name, self.step)
        if not self.debug:
            self.save("latest_model.bin")
        where = f"latest_model.bin in {self.run_dir}" if self.run_dir else "nothing (debug run)"
        raise Interrupted(signum, f"interrupted at step {self.step} ({signal.Signals(signum).name}): "
                                  f"saved {where}; continue with --opt config.resume=true")

    def summary(self):
        best = None
        if self.run_dir and self.best_metric is not None:
            best = os.path.join(self.run_dir, f"best_model_{self.best_step}.bin")
        return {"best_metric": self.best_metric, "best_step": self.best_step,
                "metric": self.eval_metric, "best_checkpoint": best, "run_dir": self.run_dir,
                "history": self.history,
                "calibration": self.best_calibration.describe() if best and self.best_calibration
                else None,
                "uncalibrated": self.uncalibrated if best and not self.best_calibration
                else None}

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
