"""Checkpoints: the original's dict plus what resuming needs, written atomically, read safely.

Format: the original's ``{step, best_step, best_metric, eval_metric, model, optimizer,
scheduler}`` with ``model`` free of any ``module.`` prefix; this project adds ``scaler``, ``rng``,
``epoch``, ``batch_in_epoch``, ``world_size`` (the training state of ``latest_model.bin``),
``config`` (the run's model, loss, config, data and dataset sections), ``input_spec``, ``hooks``
(each hook's state) and, with the ``ema`` hook, ``ema``. A best checkpoint keeps the weights,
``ema``, the config, the input spec and the step. Everything is tensors and plain Python values,
so that ``torch.load(weights_only=True)`` reads it. The hooks of trainer/checkpoint_hooks.py
decide when each checkpoint is written; ``make_run_dir`` creates and locks the folder of a run.
"""
import logging
import os
import re
import time

import torch

from errors import UserError
from fileio import FolderLock, publish, temporary_beside
from model.checkpoint import load_checkpoint  # noqa: F401 - read here by the trainer and tools

from . import distributed as dist

log = logging.getLogger("recce")


# fileio.temporary_beside's names for a checkpoint: ".<name>.<8 characters of mkstemp>.tmp"
TMP_PATTERN = re.compile(r"\.(latest_model|best_model_\d+)\.bin\.[a-z0-9_]{8}\.tmp")
BEST_PATTERN = re.compile(r"best_model_(\d+)\.bin")


def atomic_save(obj, path):
    """Write to a temporary file of our own beside ``path`` (``fileio.temporary_beside``), then
    rename it over ``path``: a kill at any moment leaves the old file intact.

    A failed write (a full disk) removes the temporary file and raises a UserError that says the
    previous checkpoint is intact. A kill leaves ``.<name>.<random>.tmp``, which the next run in
    the same run directory removes (``remove_stale_temporaries``).
    """
    try:
        with temporary_beside(path) as tmp:
            torch.save(obj, tmp)
            publish(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write checkpoint {path}: {exc.strerror or exc}; the previous "
                        "checkpoint is intact") from None


def remove_stale_temporaries(run_dir):
    """Temporary checkpoint files left in ``run_dir`` by a killed run (this project's own names
    only); call it only while holding the run directory's lock. Returns what was removed."""
    removed = []
    for name in os.listdir(run_dir):
        if TMP_PATTERN.fullmatch(name) and os.path.isfile(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))
            removed.append(name)
    return removed


def prune_best(run_dir, keep):
    """Keep the ``keep`` newest ``best_model_<step>.bin`` of ``run_dir``; remove older ones (only
    files of that exact name). Returns the removed names."""
    steps = sorted(int(m.group(1)) for f in os.listdir(run_dir) if (m := BEST_PATTERN.fullmatch(f)))
    removed = []
    for step in steps[:-keep] if keep else []:
        os.remove(os.path.join(run_dir, f"best_model_{step}.bin"))
        removed.append(f"best_model_{step}.bin")
    return removed


def RunLock(run_dir):
    """The lock of a run directory (``fileio.FolderLock``): a second run with the same id is
    refused while the first runs, whether in another process or in this one."""
    return FolderLock(run_dir, "run directory", "choose another config.id")


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


def newest_best(run_dir):
    """The path of the run's ``best_model_<step>.bin`` with the highest step, or None."""
    if not os.path.isdir(run_dir):
        return None
    steps = [int(m.group(1)) for f in os.listdir(run_dir) if (m := BEST_PATTERN.fullmatch(f))]
    return os.path.join(run_dir, f"best_model_{max(steps)}.bin") if steps else None


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
