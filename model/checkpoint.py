"""The one checkpoint loader: every flavour this project reads becomes a ready detector that
knows how its images must be prepared.

Flavours: this project's checkpoints (``model``, ``config``, ``input_spec``, training state), the
original release's ``.bin`` dicts, bare state dicts (with or without ``module.`` prefixes) and
DeepfakeBench's RECCE checkpoints. Files are read without executing code from them
(``load_checkpoint``); a wrong file is one clear error.

The input spec (size, mean, std, interpolation) of a loaded detector is, in this order: the one the
checkpoint saved (``input_spec``, written by train.py), the one its saved dataset config states
(checkpoints of earlier releases), or the detector's default, said on one log line.
"""
import logging
import os
import pickle

import torch

from checks import accepted_arguments, check_value
from errors import UserError

from .detector import DETECTORS, InputSpec, build_detector, spec_from_transforms

log = logging.getLogger("recce")
DEFAULT_MODEL = "Recce"  # a checkpoint that does not say: the original release only held RECCE


def load_checkpoint(path, trusted=False):
    """Read a checkpoint without executing code from it.

    A file that needs arbitrary unpickling (an old checkpoint holding NumPy scalars, say) is only
    read when ``trusted`` is True (``config.trust_checkpoint`` / ``--trust``).
    """
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    unsafe = False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "GLOBAL" not in text and "global" not in text:  # not a refused class: a broken file
            raise UserError(f"cannot read checkpoint {path}: not a checkpoint file, or a "
                            "truncated one") from None
        if not trusted:
            needs = text.split("Unsupported global: ")[-1].split("\n")[0].strip()[:120] \
                if "Unsupported global: " in text else "a class from outside torch"
            raise UserError(
                f"{path} holds more than tensors and plain values ({needs}); loading it could run "
                "code from the file. If you trust its source, allow it with the trust option "
                "(config.trust_checkpoint: true; trust on a command line or in the API)") from None
        unsafe = True  # trusted: read below, outside this handler
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, ...
        said = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot read checkpoint {path}: {said}") from None
    if unsafe:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    return check_saved_config(obj, path)


SAVED_SECTIONS = ("model", "loss", "config", "data", "dataset")  # train.py saves these in "config"
# the saved model keys read here, with their kind (as the config schema checks them)
SAVED_MODEL_KEYS = {"name": "name", "num_classes": (1, 2), "drop_rate": "fraction"}


def check_saved_config(obj, path):
    """``obj`` (a loaded checkpoint) with the config it carries checked for its shape before
    anything reads it: a mapping whose sections (model, config, data, dataset) are mappings, and
    the values read from it (the model's name, heads and dropout, the run's imports, the branch
    names) of their kind. A wrong one is a UserError naming the file and the key."""
    if not isinstance(obj, dict) or obj.get("config") is None:
        return obj
    cfg = obj["config"]
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: config: expected a mapping of the run's config sections "
                        f"({', '.join(SAVED_SECTIONS)}), got a {type(cfg).__name__}")
    for section in SAVED_SECTIONS:
        if cfg.get(section) is not None and not isinstance(cfg[section], dict):
            raise UserError(f"{path}: config.{section}: expected a mapping, got "
                            f"{cfg[section]!r:.80}")
    model = cfg.get("model") or {}
    for key, kind in SAVED_MODEL_KEYS.items():
        if model.get(key) is not None:
            check_value(f"{path}: config.model.{key}", model[key], kind)
    imports = (cfg.get("config") or {}).get("imports")
    if imports is not None and not (isinstance(imports, list)
                                    and all(isinstance(i, str) for i in imports)):
        raise UserError(f"{path}: config.config.imports: expected a list of module names or "
                        f".py files, got {imports!r:.80}")
    data = cfg.get("data") or {}
    for key in ("train_branch", "val_branch", "test_branch"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UserError(f"{path}: config.data.{key}: expected a branch name, got "
                            f"{data[key]!r:.80}")
    return obj


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


def extract_state_dict(obj, path="checkpoint", num_classes=1, ema=True):
    """The RECCE state dict inside ``obj``, whatever flavour of checkpoint it is.

    - this project's and the original's checkpoints: ``obj["model"]``, or ``obj["ema"]`` (the
      weights' moving average that train.py's ``ema`` hook keeps) where it has one and ``ema``;
    - a bare state dict (``--weight``), with or without ``module.`` prefixes;
    - DeepfakeBench: ``module.`` / ``model.`` prefixes stripped, ``backbone.*`` dropped, and its
      two-logit head turned into one logit (w1 - w0, b1 - b0) when ``num_classes`` is 1.
    """
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a RECCE checkpoint (it holds a {type(obj).__name__})")
    state = obj["ema"] if ema and isinstance(obj.get("ema"), dict) else \
        obj.get("model", obj.get("state_dict", obj))
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


def load_weights(model, obj, path="checkpoint", ema=True):
    """Load ``obj`` (a checkpoint dict) into ``model`` strictly (its EMA weights where it has them
    and ``ema``; a resumed run takes the raw ones); a wrong file gets a short list of missing and
    unexpected keys instead of a traceback."""
    state = extract_state_dict(obj, path, getattr(model, "num_classes", 1), ema)
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


def checkpoint_model_name(state, explicit=None, fallback=DEFAULT_MODEL):
    """The detector a checkpoint holds: its saved config says (this project's checkpoints); a bare
    state dict or the original's checkpoint takes ``explicit`` (--model), else ``fallback``."""
    saved = saved_model_section(state).get("name")
    if explicit and saved and explicit != saved:
        raise UserError(f"model {explicit}: the checkpoint holds a {saved} model", arg="model")
    return explicit or saved or fallback


def check_finite(model, path):
    bad = [k for k, v in model.state_dict().items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values "
                        f"({', '.join(bad[:3])}); the checkpoint is unusable")


def pick_device(requested=None):
    """The ``torch.device`` of ``requested`` (text such as ``cpu``, ``cuda``, ``cuda:1``, or a
    ``torch.device``): a CPU or a CUDA device this machine has; None: the first GPU, else the
    CPU. Anything else is a UserError starting with ``device``."""
    name = requested if requested is not None else \
        ("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        if isinstance(name, bool):
            raise TypeError(name)
        device = torch.device(name)
    except (RuntimeError, TypeError):  # TypeError: not text at all (a list, a float)
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"device {name!r}: not a device (cpu, cuda, cuda:0, ...)",
                        arg="device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name}: CUDA is not available on this machine", arg="device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(f"device {name}: this machine has {count} CUDA device(s) (cuda:0 to "
                        f"cuda:{count - 1})", arg="device")
    return device


def training_spec(cfg, cls, where="dataset") -> InputSpec:
    """The input spec a training config states for the detector class ``cls``: the ``Resize`` and
    ``Normalize`` of its training branch, what that leaves out from the validation branch, then
    the test branch, the rest from ``cls.default_spec``. ``cfg`` is a loaded config (or a
    checkpoint's saved one: ``where`` then names the file)."""
    data, dataset = cfg.get("data") or {}, cfg.get("dataset") or {}
    spec = cls.default_spec
    for key in ("test_branch", "val_branch", "train_branch"):  # each overrides what it states
        name = data.get(key)
        branch = dataset.get(name) if isinstance(dataset, dict) and isinstance(name, str) else None
        if isinstance(branch, dict):
            spec, _ = spec_from_transforms(branch.get("transforms"), spec,
                                           f"{where}.{name}.transforms")
    return spec


# DeepfakeBench's RECCE recipe (training/config/detector/recce.yaml: resolution 256, mean = std =
# 0.5; its loader resizes with cv2.INTER_CUBIC)
DEEPFAKEBENCH_SPEC = InputSpec((256, 256), (0.5,) * 3, (0.5,) * 3, "bicubic")


def checkpoint_flavour(state):
    """Which kind of file this is: "project" (train.py's: a saved config or input spec),
    "original" (the original release's training dict), "deepfakebench" (its RecceDetector: the
    network under ``model.``, an unused ``backbone.``), or "state_dict" (bare weights)."""
    if not isinstance(state, dict):
        return "unknown"
    if state.get("config") is not None or state.get("input_spec") is not None:
        return "project"
    if isinstance(state.get("model"), dict) and ("optimizer" in state or "step" in state):
        return "original"
    inner = state.get("state_dict", state)
    keys = [k[len("module."):] if k.startswith("module.") else k for k in inner] \
        if isinstance(inner, dict) else []
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("model.") for k in keys):
        return "deepfakebench"
    return "state_dict"


def checkpoint_spec(state, cls, path="checkpoint"):
    """(spec, where it came from): the checkpoint's saved spec, else its saved config's, else
    DeepfakeBench's recipe for one of its checkpoints, else ``cls.default_spec`` ("default").
    A saved spec is checked as every spec is (``InputSpec``) and against what ``cls`` accepts
    (``min_input_size``); a bad one is a UserError naming ``path`` and the key."""
    if isinstance(state, dict) and state.get("input_spec") is not None:
        spec = InputSpec.from_dict(state["input_spec"], f"{path}: input_spec")
        return _accepted(spec, cls, f"{path}: input_spec.size"), "saved"
    saved = state.get("config") if isinstance(state, dict) else None
    if isinstance(saved, dict) and saved.get("dataset"):
        spec = training_spec(saved, cls, f"{path}: config.dataset")
        return _accepted(spec, cls, f"{path}: config.dataset (its Resize)"), "config"
    if checkpoint_flavour(state) == "deepfakebench":
        log.info("a DeepfakeBench checkpoint: its RECCE recipe's input, %s",
                 DEEPFAKEBENCH_SPEC.describe())
        return DEEPFAKEBENCH_SPEC, "deepfakebench"
    return cls.default_spec, "default"


def _accepted(spec, cls, where):
    if min(spec.size) < cls.min_input_size:
        raise UserError(f"{where}: {list(spec.size)} is smaller than {cls.__name__} accepts "
                        f"(at least {cls.min_input_size} px a side)")
    return spec


def load_detector(path, device="cpu", *, trusted=False, name=None, num_classes=None,
                  model_cfg=None, image_size=None, fallback_spec=None,
                  image_size_key="image_size", state=None):
    """A detector for evaluation from any checkpoint flavour; never downloads encoder weights.

    The detector is the one the checkpoint's saved config names; for a bare state dict the one of
    ``name`` (--model), else of ``model_cfg["name"]``, else ``DEFAULT_MODEL``. ``num_classes``
    (or ``model_cfg["num_classes"]``) left out is read from the checkpoint. Weights that are not
    finite are refused. ``det.spec`` is the checkpoint's input spec (``image_size`` overrides its
    size, from 1 to ``checks.MAX_INPUT_SIZE`` and at least the detector's ``min_input_size``; its
    errors name ``image_size_key``); ``det.spec_source`` says where it came from;
    ``det.uses_ema`` whether the weights are the EMA of the training run's ``ema`` hook (loaded
    where the checkpoint has them); ``det.calibration`` its calibration (``stored_calibration``)
    or None. A checkpoint that states no spec gets ``fallback_spec`` (a
    ``(spec, where)`` pair: test.py's test branch), else the detector's default, said on one log
    line. A saved spec or config that is not one is a UserError naming the file and the key.
    ``state``: the file as ``load_checkpoint`` read it already (read here when None).
    """
    if image_size is not None:
        try:
            image_size = check_value(image_size_key, image_size, "size")
        except UserError as exc:
            raise UserError(str(exc), arg=image_size_key) from None
    if state is None:
        state = load_checkpoint(path, trusted=trusted)
    calibration = stored_calibration(state, path)  # checked before the detector is built
    given = dict(model_cfg or {})
    saved = saved_model_section(state)
    chosen = checkpoint_model_name(state, name, given.get("name") or DEFAULT_MODEL)
    if chosen not in DETECTORS:
        imports = ((state.get("config") or {}).get("config") or {}).get("imports") \
            if isinstance(state, dict) else None
        hint = (f"; its run imported {', '.join(map(str, imports))}: import that file too (the "
                "imports option; test.py: the config's config.imports)") if imports else ""
        raise UserError(f"{path} holds a {chosen!r} detector, which is not registered "
                        f"(known: {', '.join(DETECTORS)}){hint}")
    # the detector's own arguments: those its run saved, then the given section's where it names
    # the same detector (a section of another detector says nothing about this one)
    args = dict(saved) if saved.get("name") in (None, chosen) else {}
    if given.get("name") in (None, chosen):
        args.update(given)
    args["name"] = chosen
    accepted = accepted_arguments(DETECTORS.get(chosen))

    def takes(key):
        return accepted is None or key in accepted

    if num_classes is not None:
        args["num_classes"] = num_classes
    if takes("num_classes") and args.get("num_classes") is None:
        args["num_classes"] = checkpoint_num_classes(state, path)
    if takes("pretrained"):
        args["pretrained"] = False  # the checkpoint holds every weight
    try:
        det = build_detector(args)
    except UserError as exc:
        raise UserError(f"{path}: its detector's arguments: {exc}") from None
    load_weights(det, state, path)
    det.uses_ema = isinstance(state, dict) and isinstance(state.get("ema"), dict)
    if det.uses_ema:
        log.info("%s: its EMA weights (the training run's ema hook)", os.path.basename(path))
    check_finite(det, path)
    spec, source = checkpoint_spec(state, type(det), path)
    if source == "default":
        spec, where = fallback_spec or (spec, f"{chosen}'s default input spec")
        log.warning("%s does not say how its images were prepared: using %s, %s%s",
                    os.path.basename(path), where, spec.describe(),
                    "" if image_size or fallback_spec else " (image_size sets another size)")
    if image_size is not None:
        if image_size < det.min_input_size:
            raise UserError(f"{image_size_key} {image_size}: the model needs at least "
                            f"{det.min_input_size}", arg=image_size_key)
        spec = spec.with_size(image_size)
    det.spec, det.spec_source = spec, source
    det.calibration = calibration
    det.face_crop = checkpoint_face_crop(state, path)
    return det.to(device).eval()


def checkpoint_face_crop(state, path="checkpoint"):
    """The crop rule the checkpoint's training faces were cut by (``checks.CROP_RULES``): the one
    train.py saved (``face_crop``), ``deepfakebench`` for DeepfakeBench's files (its own
    preparation cut them), else None (scoring raw media then uses ``box``). A saved value that is
    not a rule's name is a UserError naming the file and the key."""
    from checks import CROP_RULES
    if isinstance(state, dict) and state.get("face_crop") is not None:
        rule = state["face_crop"]
        if rule not in CROP_RULES:
            raise UserError(f"{path}: face_crop {rule!r}: expected one of "
                            f"{', '.join(CROP_RULES)}")
        return rule
    return "deepfakebench" if checkpoint_flavour(state) == "deepfakebench" else None


def stored_calibration(state, path="checkpoint"):
    """The ``model.calibration.Calibration`` a checkpoint keeps under ``calibration`` (train.py's
    best checkpoints, tools/calibrate.py's files), checked against the one schema of a stored
    calibration (``model.calibration.STORED``: a key missing or wrong is one UserError naming
    ``path`` and the key); None when it keeps none."""
    if not isinstance(state, dict) or state.get("calibration") is None:
        return None
    from .calibration import Calibration
    return Calibration.from_dict(state["calibration"], f"{path}: calibration")
