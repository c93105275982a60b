"""Checkpoints: the original's dict plus what resuming needs, written atomically, read safely.

Format (SPEC section 6): ``{step, best_step, best_metric, eval_metric, model, optimizer,
scheduler}`` with ``model`` free of any ``module.`` prefix; this project adds ``scaler``, ``rng``,
``config`` and ``epoch``. Everything is tensors and plain Python values, so that
``torch.load(weights_only=True)`` reads it.
"""
import os
import pickle
import re

import torch

from errors import UserError


def atomic_save(obj, path):
    """Write to a temporary file, then rename: a kill at any moment leaves the old file intact."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, trusted=False):
    """Read a checkpoint without executing code from it.

    A file that needs arbitrary unpickling (an old checkpoint holding NumPy scalars, say) is only
    read when ``trusted`` is True (``config.trust_checkpoint`` / ``--trust``).
    """
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trusted:
            first = " ".join(str(exc).split("\n")[0].split())[:160]
            raise UserError(
                f"{path} holds more than tensors and plain values ({first}); loading it could run "
                "code from the file. If you trust its source, pass --trust (or set "
                "config.trust_checkpoint: true)") from None
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, ...
        raise UserError(f"cannot read checkpoint {path}: {' '.join(str(exc).split())[:200]}") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def newest_best(run_dir):
    """The path of the run's ``best_model_<step>.bin`` with the highest step, or None."""
    if not os.path.isdir(run_dir):
        return None
    steps = [int(m.group(1)) for f in os.listdir(run_dir)
             if (m := re.fullmatch(r"best_model_(\d+)\.bin", f))]
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
