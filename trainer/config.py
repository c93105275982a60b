"""Configs: defaults in one place, the original's two-file YAML schema, overrides, validation.

``load_config(path, overrides)`` returns a plain dict ``{"model", "config", "data", "dataset"}``,
``dataset`` holding the branches of the dataset YAML that ``data.file`` names. Unknown keys are
rejected by name. ``save_config`` writes the resolved config and its dataset file into the run
directory so that both can be fed back to train.py and test.py as they are.
"""
import copy
import os

import yaml

from errors import UserError

REQUIRED = object()

DEFAULTS = {
    "model": {"name": REQUIRED, "num_classes": 1, "drop_rate": 0.2, "pretrained": True},
    "config": {
        "lambda_1": 0.1, "lambda_2": 0.1, "flood_level": 0.04,
        "distribute": {"backend": "nccl", "timeout": 1800},
        "optimizer": {"name": "adam", "lr": 0.0002, "weight_decay": 0.00001},
        "scheduler": None,
        "warmup_step": 0, "resume": False, "resume_best": False, "id": None,
        "loss": "binary_ce", "metric": "Acc", "debug": False, "seed": 2022, "amp": "fp16",
        "on_nonfinite": "stop", "trust_checkpoint": False,
        "device": None, "ckpt": "best_model", "ckpt_fold": "runs",
    },
    "data": {
        "train_batch_size": 32, "val_batch_size": 64, "test_batch_size": 64,
        "name": REQUIRED, "file": REQUIRED,
        "train_branch": "train_cfg", "val_branch": "test_cfg", "test_branch": "test_cfg",
        "num_workers": 4,
    },
}
FREE_KEYS = {("config", "optimizer"), ("config", "scheduler")}
BRANCH_KEYS = {
    "root", "index", "split", "method", "compression", "balance", "num_image_train",
    "num_image_test", "transforms", "log_steps", "val_steps", "num_steps", "on_bad_image", "demo",
}
CHOICES = {
    ("config", "metric"): ("Acc", "AUC", "LogLoss"),
    ("config", "amp"): ("fp16", "bf16", "none"),
    ("config", "on_nonfinite"): ("stop", "skip"),
    ("config", "loss"): ("binary_ce", "cross_entropy"),
    ("model", "num_classes"): (1, 2),
}


def _read_yaml(path, what):
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must be a mapping at its top level")
    return data


def _merge(defaults, given, where):
    """Defaults overlaid with ``given``; unknown keys raise, naming the key."""
    out = {}
    given = given or {}
    if not isinstance(given, dict):
        raise UserError(f"{where}: expected a mapping, got {given!r}")
    for key in given:
        if key not in defaults:
            raise UserError(f"unknown config key: {where}.{key} (known: {', '.join(defaults)})")
    for key, default in defaults.items():
        path = f"{where}.{key}"
        if tuple(path.split(".")) in FREE_KEYS:
            value = copy.deepcopy(given.get(key, default))
            if isinstance(value, dict):  # torch kwargs: `lr: 1e-4` must be a number
                value = {k: as_number(v) if k != "name" else v for k, v in value.items()}
            out[key] = value
        elif isinstance(default, dict):
            out[key] = _merge(default, given.get(key), path)
        elif key in given:
            out[key] = given[key]
        elif default is REQUIRED:
            raise UserError(f"missing config key: {path}")
        else:
            out[key] = default
    return out


def _parse_override(text):
    if "=" not in text:
        raise UserError(f"--opt {text!r}: expected key.path=value, e.g. config.optimizer.lr=1e-4")
    key, value = text.split("=", 1)
    try:
        value = yaml.safe_load(value)
    except yaml.YAMLError:
        pass
    return key.strip().split("."), as_number(value)


def as_number(value):
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; take it as the number the user meant."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(raw, overrides):
    for text in overrides or []:
        keys, value = _parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"--opt {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return raw


def split_overrides(opts):
    """``section.key=value`` for the model config, ``<branch>.key=value`` for the dataset file."""
    model_opts, dataset_opts = [], []
    for opt in opts:
        head = opt.split(".", 1)[0]
        (model_opts if head in ("model", "config", "data") else dataset_opts).append(opt)
    return model_opts, dataset_opts


def validate(cfg):
    for (section, key), allowed in CHOICES.items():
        if cfg[section][key] not in allowed:
            raise UserError(f"{section}.{key}: {cfg[section][key]!r} is not one of {list(allowed)}")
    for key in ("train_batch_size", "val_batch_size", "test_batch_size"):
        value = cfg["data"][key]
        if not isinstance(value, int) or value < 1:
            raise UserError(f"data.{key}: expected a positive integer, got {value!r}")
    for name, branch in cfg["dataset"].items():
        if not isinstance(branch, dict):
            raise UserError(f"dataset branch {name}: expected a mapping")
        unknown = set(branch) - BRANCH_KEYS
        if unknown:
            raise UserError(f"unknown key in {cfg['data']['file']} {name}: {sorted(unknown)[0]} "
                            f"(known: {', '.join(sorted(BRANCH_KEYS))})")
        for key in ("log_steps", "val_steps", "num_steps"):
            if key in branch and (not isinstance(branch[key], int) or branch[key] < 1):
                raise UserError(f"{name}.{key}: expected a positive integer, got {branch[key]!r}")


def load_config(path, overrides=None, dataset_overrides=None):
    """Load, merge with the defaults, apply ``--opt`` overrides, validate and return the config."""
    raw = apply_overrides(_read_yaml(path, "config file"), overrides)
    if "dataset" in raw:
        raise UserError(f"{path}: unknown top-level key 'dataset' (the dataset file is data.file)")
    for key in raw:
        if key not in DEFAULTS:
            raise UserError(f"{path}: unknown top-level key {key!r} (known: {', '.join(DEFAULTS)})")
    cfg = {"model": _merge(DEFAULTS["model"], raw.get("model"), "model"),
           "config": _merge(DEFAULTS["config"], raw.get("config"), "config"),
           "data": _merge(DEFAULTS["data"], raw.get("data"), "data")}
    dataset = _read_yaml(cfg["data"]["file"], "dataset config (data.file)")
    apply_overrides(dataset, dataset_overrides)
    cfg["dataset"] = dataset
    if cfg["model"]["num_classes"] == 2 and "loss" not in (raw.get("config") or {}):
        cfg["config"]["loss"] = "cross_entropy"
    validate(cfg)
    return cfg


def branch(cfg, which):
    """The dataset branch that ``data.<which>_branch`` names (which: train, val or test)."""
    name = cfg["data"][f"{which}_branch"]
    if name not in cfg["dataset"]:
        raise UserError(f"data.{which}_branch: {cfg['data']['file']} has no branch {name!r} "
                        f"(it has {', '.join(cfg['dataset'])})")
    return cfg["dataset"][name]


def save_config(cfg, run_dir):
    """Write ``config.yml`` and ``dataset.yml`` into ``run_dir``; config.yml points to the other."""
    dataset_path = os.path.abspath(os.path.join(run_dir, "dataset.yml"))
    with open(dataset_path, "w") as fh:
        yaml.safe_dump(cfg["dataset"], fh, sort_keys=False)
    out = {k: copy.deepcopy(cfg[k]) for k in ("model", "config", "data")}
    out["data"]["file"] = dataset_path
    with open(os.path.join(run_dir, "config.yml"), "w") as fh:
        yaml.safe_dump(out, fh, sort_keys=False)
    return os.path.join(run_dir, "config.yml")
