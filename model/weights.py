"""Weights for every entry point: this project's checkpoints, the original's ``.bin`` dicts, bare
state dicts, and DeepfakeBench RECCE checkpoints, loaded safely with clear errors."""
import torch

from errors import UserError


def _strip(state, prefixes):
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def extract_state_dict(obj, path="checkpoint", num_classes=1):
    """The RECCE state dict inside ``obj``, whatever flavour of checkpoint it is.

    - this project's and the original's checkpoints: ``obj["model"]``;
    - a bare state dict (``--weight``), with or without ``module.`` prefixes;
    - DeepfakeBench: ``module.`` / ``model.`` prefixes stripped, ``backbone.*`` dropped, and its
      two-logit head turned into one logit (w1 - w0, b1 - b0) when ``num_classes`` is 1.
    """
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a RECCE checkpoint (it holds a {type(obj).__name__})")
    state = obj.get("model", obj.get("state_dict", obj))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a RECCE checkpoint (no state dict of tensors inside)")
    state = _strip(state, ("module.", "model."))
    state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    w = state.get("fc.weight")
    if num_classes == 1 and w is not None and w.shape[0] == 2:
        state["fc.weight"] = (w[1] - w[0])[None]
        state["fc.bias"] = (state["fc.bias"][1] - state["fc.bias"][0])[None]
    return state


def saved_model_section(obj):
    """The ``model`` section of the config a checkpoint carries ({} when it carries none)."""
    return ((obj.get("config") or {}).get("model") or {}) if isinstance(obj, dict) else {}


def checkpoint_num_classes(obj, path="checkpoint"):
    """The number of logits a checkpoint was trained with: from its saved config, else from the
    shape of its ``fc`` head (bare state dicts and the original's checkpoints)."""
    saved = saved_model_section(obj).get("num_classes")
    if saved is not None:
        return int(saved)
    head = extract_state_dict(obj, path, num_classes=2).get("fc.weight")
    return int(head.shape[0]) if head is not None else 1


def load_weights(model, obj, path="checkpoint"):
    """Load ``obj`` (a checkpoint dict) into ``model`` strictly; a wrong file gets a short list of
    missing and unexpected keys instead of a traceback."""
    state = extract_state_dict(obj, path, model.num_classes)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise UserError(
            f"{path} is not a checkpoint of a {type(model).__name__} model like this one: "
            f"{len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}")
    model.load_state_dict(state, strict=True)
    return model
