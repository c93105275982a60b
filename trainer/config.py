"""Configs: the trainer's defaults in one place, the original's two-file YAML schema, overrides,
validation.

``load_config(path, overrides)`` returns a plain dict ``{"model", "loss", "config", "data",
"dataset", "moved"}``: ``model`` and ``loss`` belong to the detector that ``model.name`` names and
are checked by it (``model.detector.model_arguments`` / ``loss_arguments``); ``config`` and
``data`` are the trainer's, with the defaults below; ``dataset`` holds the branches of the dataset
YAML that ``data.file`` names; ``moved`` says where the values of the original's loss keys
(``config.lambda_1``, ``config.lambda_2``, ``config.flood_level``, ``config.loss``) went. Unknown
keys are rejected by name, every value is checked against the kind of its key (``KEYS``), the
hooks are built once, and the optimizer and scheduler are built on a dummy parameter so that an
argument torch rejects is reported before any data is read. ``save_config`` writes the resolved
config and its dataset file into the run directory so that both can be fed back to train.py and
test.py as they are.
"""
import copy
import math
import os

import yaml

from checks import REQUIRED, Key, as_number, check_value, keeps_text, nested_defaults
from errors import UserError
from registry import import_modules

AMP = ("fp16", "bf16", "none")
# The trainer's keys, each declared once: its default and its kind (checks.check_value; the kind
# names the bounds). ``DEFAULTS`` and ``SCHEMA`` derive from it, as do the keys that stay text in
# --opt and the free mappings (torch's kwargs); docs/training.md's tables follow it (a test says
# where they differ). ``model`` and ``loss`` are the detector's own (its constructor). A key is
# added with one line here (its order is the saved config.yml's) and one row in the docs' table.
KEYS = (
    Key("config.distribute.backend", "nccl", ("nccl", "gloo")),
    Key("config.distribute.timeout", 1800, "posint"),
    Key("config.optimizer", {"name": "adam", "lr": 0.0002, "weight_decay": 0.00001}, "mapping",
        shown="adam, lr 2e-4, weight_decay 1e-5"),
    Key("config.scheduler", None, "mapping?", shown="none (constant)"),
    Key("config.warmup_step", 0, "nonneg_int"),
    Key("config.resume", False, "bool"),
    Key("config.resume_best", False, "bool"),
    Key("config.id", None, "run_id?", shown="a timestamp"),
    Key("config.metric", "Acc", ("Acc", "AUC", "LogLoss")),
    Key("config.debug", False, "bool"),
    Key("config.seed", 2022, "int"),
    Key("config.amp", "fp16", AMP),
    Key("config.eval_amp", "none", AMP),
    Key("config.compile", False, "bool"),
    Key("config.on_nonfinite", "stop", ("stop", "skip")),
    Key("config.trust_checkpoint", False, "bool"),
    Key("config.keep_best", 3, "posint?"),
    Key("config.device", None, "name?", shown="cuda:0 if available, else cpu"),
    Key("config.ckpt", "best_model", "name"),
    Key("config.ckpt_fold", "runs", "name"),
    Key("config.protocol", None, (None, "original", "clean")),
    Key("config.imports", [], "list"),
    Key("config.hooks", [], "list"),
    Key("data.train_batch_size", 32, "batch_size"),
    Key("data.val_batch_size", 64, "batch_size"),
    Key("data.test_batch_size", 64, "batch_size"),
    Key("data.name", REQUIRED, "name"),
    Key("data.file", REQUIRED, "name"),
    Key("data.train_branch", "train_cfg", "name"),
    Key("data.val_branch", "test_cfg", "name"),
    Key("data.test_branch", "test_cfg", "name"),
    Key("data.num_workers", 4, "workers"),
)
KEY = {key.path: key for key in KEYS}
DEFAULTS = nested_defaults(KEYS)  # the trainer's sections (``model`` and ``loss``: the detector's)
# The kind of every key: "name" values stay strings whatever they look like (a run id 0012, a
# date, 1e3); "bool" accepts only true/false; tuples are choices.
SCHEMA = {key.path: key.kind for key in KEYS}
# mappings of torch's keyword arguments ({name, **kwargs}), merged with their default key by key
FREE_KEYS = {tuple(key.path.split(".")) for key in KEYS
             if isinstance(key.kind, str) and key.kind.rstrip("?") == "mapping"}
SECTIONS = ("model", "loss", "config", "data")  # the top-level keys of a config file
# The original's configs put the loss's own values in the trainer's section: config.<key> ->
# loss.<key> of the detector that takes it
LEGACY_LOSS_KEYS = {"lambda_1": "lambda_1", "lambda_2": "lambda_2", "flood_level": "flood_level",
                    "loss": "kind"}


def name_keys():
    """The last parts of the key paths whose values --opt keeps as typed (``config.id=0012`` is
    the run "0012"): the trainer's names and text choices, every dataset layout's (its branch
    keys) and a section's ``name`` (the detector's, the optimizer's)."""
    from dataset.registry import COMMON_BRANCH_KEYS, LAYOUTS
    kinds = {**COMMON_BRANCH_KEYS}
    for layout in LAYOUTS.values():
        kinds.update(layout.keys)
    return {"name"} | {key.name for key in KEYS if key.keeps_text} | \
        {name for name, kind in kinds.items() if keeps_text(kind)}


def _read_yaml(path, what):
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {exc.start}): "
                        "save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must be a mapping at its top level")
    return data


def _merge(defaults, given, where):
    """Defaults overlaid with ``given``; unknown keys raise, naming the key."""
    out = {}
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise UserError(f"{where}: expected a mapping, got {given!r}")
    for key in given:
        if key not in defaults:
            raise UserError(f"unknown config key: {where}.{key} (known: {', '.join(defaults)})")
    for key, default in defaults.items():
        path = f"{where}.{key}"
        if tuple(path.split(".")) in FREE_KEYS:
            value = copy.deepcopy(given.get(key, default))
            if isinstance(value, dict) and "name" not in value and isinstance(default, dict):
                value = {**default, **value}  # --opt config.optimizer.lr=1e-4 keeps adam
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
            out[key] = copy.deepcopy(default)
    return out


def _parse_override(text):
    if "=" not in text:
        raise UserError(f"--opt {text!r}: expected key.path=value, e.g. config.optimizer.lr=1e-4")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise UserError(f"--opt {text!r}: {key!r} is not a key path")
    if keys[-1] in name_keys():  # names stay as typed: config.id=0012 is the run "0012"
        return keys, raw.strip()
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split("\n")[0].split())
        raise UserError(f"--opt {key.strip()}: cannot parse the value {raw!r} "
                        f"({problem})") from None
    if keys[-1] == "pretrained" and not isinstance(value, bool):
        return keys, raw.strip()  # a path
    return keys, as_number(value)


def apply_overrides(raw, overrides, branches_only=False, where=""):
    for text in overrides or []:
        keys, value = _parse_override(text)
        if branches_only and keys[0] not in raw:
            raise UserError(f"--opt {text!r}: {where} has no branch {keys[0]!r} "
                            f"(it has {', '.join(raw) or 'none'})")
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
        (model_opts if head in SECTIONS else dataset_opts).append(opt)
    return model_opts, dataset_opts


def _check_sections(cfg):
    for key in KEYS:
        node = cfg
        *parents, last = key.path.split(".")
        for p in parents:
            node = node[p]
        node[last] = key.check(node[last])


def _check_optimization(c):
    """Build the optimizer and scheduler on a dummy parameter and step them a few times, so that
    arguments torch rejects (lr -1, betas above 1, T_max 0, ...) are reported now, by key."""
    import torch

    from optimizer import build_optimizer
    from scheduler import build_scheduler
    param = torch.zeros(1, requires_grad=True)
    for key, value in c["optimizer"].items():  # torch optimizers take numbers, flags, tuples
        if key != "name" and isinstance(value, str):
            raise UserError(f"config.optimizer.{key}: expected a number, got {value!r}")
    try:
        opt = build_optimizer([param], c["optimizer"])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - ValueError, TypeError from torch
        raise UserError(f"config.optimizer: {c['optimizer']} rejected: "
                        f"{' '.join(str(exc).split())}") from None
    try:
        sched = build_scheduler(opt, c["scheduler"], c["warmup_step"])
        for _ in range(3):
            opt.step()
            sched.step()
        sched.step_on_validation(1.0)
        if not all(math.isfinite(lr) for lr in sched.get_last_lr()):
            raise ValueError("the learning rate becomes non-finite")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - ZeroDivisionError (T_max 0, step_size 0), ...
        raise UserError(f"config.scheduler: {c['scheduler']} rejected: "
                        f"{' '.join(str(exc).split()) or type(exc).__name__}") from None


def validate(cfg):
    _check_sections(cfg)
    from .hooks import build_hooks
    build_hooks(cfg["config"]["hooks"])  # every hook's name and arguments, before any work
    from dataset import branch_schema
    schema = branch_schema(cfg["data"]["name"])
    for name, branch in cfg["dataset"].items():
        if not isinstance(branch, dict):
            raise UserError(f"dataset branch {name}: expected a mapping, got {branch!r}")
        unknown = set(branch) - set(schema)
        if unknown:
            raise UserError(f"unknown key in {cfg['data']['file']} {name}: {sorted(unknown)[0]} "
                            f"(known for {cfg['data']['name']}: {', '.join(sorted(schema))})")
        for key, value in branch.items():
            branch[key] = check_value(f"{name}.{key}", value, schema[key])
    _check_optimization(cfg["config"])


def load_config(path, overrides=None, dataset_overrides=None):
    """Load, merge with the defaults, apply ``--opt`` overrides, validate and return the config."""
    raw = apply_overrides(_read_yaml(path, "config file"), overrides)
    if "dataset" in raw:
        raise UserError(f"{path}: unknown top-level key 'dataset' (the dataset file is data.file)")
    for key in raw:
        if key not in SECTIONS:
            raise UserError(f"{path}: unknown top-level key {key!r} (known: {', '.join(SECTIONS)})")
    trainer_cfg = raw.get("config")
    legacy = {}
    if isinstance(trainer_cfg, dict):
        trainer_cfg = dict(trainer_cfg)
        legacy = {k: trainer_cfg.pop(k) for k in LEGACY_LOSS_KEYS if k in trainer_cfg}
    cfg = {"config": _merge(DEFAULTS["config"], trainer_cfg, "config"),
           "data": _merge(DEFAULTS["data"], raw.get("data"), "data")}
    # a user's detectors, losses, layouts and hooks register themselves before anything is checked
    cfg["config"]["imports"] = import_modules(cfg["config"]["imports"],
                                              os.path.dirname(os.path.abspath(path)))
    _detector_sections(cfg, raw, legacy)
    cfg["data"]["file"] = check_value("data.file", cfg["data"]["file"], "name")
    dataset = _read_yaml(cfg["data"]["file"], "dataset config (data.file)")
    apply_overrides(dataset, dataset_overrides, branches_only=True, where=cfg["data"]["file"])
    cfg["dataset"] = dataset
    validate(cfg)
    apply_protocol(cfg, (raw.get("data") or {}).get("val_branch"))
    return cfg


def _detector_sections(cfg, raw, legacy):
    """``cfg["model"]`` and ``cfg["loss"]``, checked by the detector that ``model.name`` names;
    the original's loss keys under ``config:`` (``legacy``) move to ``loss:``, each move noted in
    ``cfg["moved"]`` (logged by the trainer, written atop the saved config)."""
    from model.detector import DETECTORS, loss_arguments, model_arguments
    model = raw.get("model")
    if model is None or (isinstance(model, dict) and model.get("name") is None):
        raise UserError("missing config key: model.name")
    cfg["model"] = model_arguments(model)
    cls = DETECTORS.get(cfg["model"]["name"])
    loss = raw.get("loss")
    loss = dict(loss) if isinstance(loss, dict) else loss
    origins, moved = {}, []
    for old, value in legacy.items():
        new = LEGACY_LOSS_KEYS[old]
        if not isinstance(loss, (dict, type(None))):
            break  # loss_arguments names the bad section
        loss = loss or {}
        if new in loss:
            raise UserError(f"config.{old} and loss.{new} are both given: keep loss.{new}")
        if new != "kind" and new not in cls.loss_defaults:
            moved.append(f"config.{old} ({value!r}): the loss of {cls.__name__} has no {new}; "
                         "ignored")
            continue
        loss[new], origins[new] = value, f"config.{old}"
        moved.append(f"config.{old} ({value!r}) -> loss.{new}")
    cfg["loss"] = loss_arguments(cls, loss, cfg["model"].get("num_classes", 1), origins=origins)
    cfg["moved"] = moved


PROTOCOLS = {
    "original": "the best checkpoint chosen on the test split (val_branch = test_branch), as the "
                "original release did",
    "clean": "the best checkpoint chosen on a validation split (val_cfg); the test split is "
             "scored once, by test.py",
}


def apply_protocol(cfg, given_val_branch=None):
    """``config.protocol`` picks the branch that chooses the best checkpoint: ``original`` the
    test branch, ``clean`` the dataset file's ``val_cfg`` (or the ``data.val_branch`` given, which
    must then not be the test branch). Without a protocol, ``data.val_branch`` is used as it is."""
    protocol, data = cfg["config"]["protocol"], cfg["data"]
    if protocol == "original":
        if given_val_branch not in (None, data["test_branch"]):
            raise UserError(f"config.protocol original selects on the test branch "
                            f"({data['test_branch']}); data.val_branch {given_val_branch!r} "
                            "contradicts it (use protocol clean, or drop data.val_branch)")
        data["val_branch"] = data["test_branch"]
    elif protocol == "clean":
        data["val_branch"] = given_val_branch or "val_cfg"
        if data["val_branch"] == data["test_branch"]:
            raise UserError(f"config.protocol clean: data.val_branch must not be the test branch "
                            f"({data['test_branch']})")
        if data["val_branch"] not in cfg["dataset"]:
            raise UserError(f"config.protocol clean: {data['file']} has no branch "
                            f"{data['val_branch']!r} (a validation split: e.g. split: val, or "
                            "the training split with holdout: 0.1)")


def branch(cfg, which):
    """The dataset branch that ``data.<which>_branch`` names (which: train, val or test)."""
    name = cfg["data"][f"{which}_branch"]
    if name not in cfg["dataset"]:
        raise UserError(f"data.{which}_branch: {cfg['data']['file']} has no branch {name!r} "
                        f"(it has {', '.join(cfg['dataset'])})")
    return cfg["dataset"][name]


PATH_KEYS = ("root", "index", "dataset_json_folder",  # branch keys that name files or folders
             "self_blended_landmarks")


def save_config(cfg, run_dir):
    """Write ``config.yml`` and ``dataset.yml`` into ``run_dir`` (atomically); config.yml points
    to the other. Relative paths (dataset roots and indexes, ``config.ckpt_fold``) are stored
    absolute, resolved against the working directory of the run, so that test.py and
    tools/robustness.py find the data and the checkpoints from any folder."""
    from fileio import atomic_write_text
    dataset_path = os.path.abspath(os.path.join(run_dir, "dataset.yml"))
    dataset = copy.deepcopy(cfg["dataset"])
    for branch_cfg in dataset.values():  # the saved run works from any working directory
        for key in PATH_KEYS:
            value = branch_cfg.get(key) if isinstance(branch_cfg, dict) else None
            if isinstance(value, str) and value and not os.path.isabs(value):
                branch_cfg[key] = os.path.abspath(value)
    atomic_write_text(dataset_path, yaml.safe_dump(dataset, sort_keys=False))
    out = {k: copy.deepcopy(cfg[k]) for k in SECTIONS}
    out["data"]["file"] = dataset_path
    out["config"]["ckpt_fold"] = os.path.abspath(out["config"]["ckpt_fold"])
    path = os.path.join(run_dir, "config.yml")
    notes = "".join(f"# {note}\n" for note in cfg.get("moved", []))
    if notes:
        notes = "# Where the values of the given config's loss keys went:\n" + notes
    atomic_write_text(path, notes + yaml.safe_dump(out, sort_keys=False))
    return path
