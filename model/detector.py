"""The detector contract: one registered class owns its network, its configuration, its loss,
its input spec and the way a batch becomes fake probabilities.

- Its constructor's arguments are its configuration: every key of a config's ``model:`` section
  but ``name`` is passed to it, checked against its signature (``model_arguments``; ``arg_kinds``
  names the kind of an argument where its default does not say enough). ``det(x)`` -> logits
  (N x num_classes); ``det(x, return_aux=True)`` -> ``{"logits", ...}`` with whatever its loss
  needs (``recons`` where ``has_reconstruction``);
- its loss: ``loss_defaults`` declares the keys of the config's ``loss:`` section (RECCE's
  ``lambda_1``, ``lambda_2``, ``flood_level``) with their defaults, besides ``kind`` (binary_ce or
  cross_entropy), which every detector has; ``build_loss(section)`` builds the training loss,
  called as ``loss(outputs, x, labels)`` -> every term by name plus ``total``;
- ``default_spec``: the ``InputSpec`` (size, mean, std, interpolation) it expects unless a config
  says otherwise; ``pretrained_spec``: the normalisation its pretrained weights were trained with
  (None without pretrained weights). An instance's ``spec`` is the one it was trained with: a
  checkpoint carries it, and every entry point prepares images by it (``dataset.eval_transforms``);
- ``predict(x)``: fake probabilities (N); ``score(x, aux)``: probabilities, log-odds, logits and,
  with ``aux``, the auxiliary outputs. Evaluation, inference and the face pipeline score through
  ``scores`` (the one place that unwraps a model's output);
- ``cam_layer``: the module (its dotted name in ``named_modules``) whose N x C x h x w output
  Grad-CAM explains (``model.cam``); None, the default, takes the last ``nn.Conv2d`` registered.
  ``cam_target()`` resolves it.

A new detector is one file with its class decorated by ``@register_detector``, named by
``model.name`` and imported through ``config.imports`` (see docs/extending.md).
"""
import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from checks import accepted_arguments, check_arguments, check_value, kind_of_default
from errors import UserError
from registry import Registry

DETECTORS = Registry("detector", "model.name")
register_detector = DETECTORS.register

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
# albumentations / OpenCV flags of those names (cv2.INTER_*), as a Resize entry in a YAML states
# them
CV2_FLAGS = {"nearest": 0, "bilinear": 1, "bicubic": 2, "area": 3, "lanczos": 4}
# what an albumentations Normalize entry that leaves them out uses: ImageNet's mean and std
NORMALIZE_DEFAULT_MEAN, NORMALIZE_DEFAULT_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# |input - reconstruction| on the model's normalised scale: the one colour scale of every
# reconstruction-difference picture (TensorBoard's examples, --visualize's panels and videos)
HEAT_MAX = 0.5


@dataclass(frozen=True)
class InputSpec:
    """How an image must be prepared for a detector: resized (a stretch, no crop) to
    ``size`` = (height, width) with ``interpolation``, then ``(pixel / max_pixel_value - mean) /
    std`` per RGB channel."""

    size: tuple = (299, 299)
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    max_pixel_value: float = 255.0

    def __post_init__(self):
        for key, value in zip(SPEC_KEYS, checked_spec("input_spec", self.size, self.mean,
                                                      self.std, self.interpolation,
                                                      self.max_pixel_value)):
            object.__setattr__(self, key, value)

    def with_size(self, size):
        return replace(self, size=size)

    def to_dict(self):
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "max_pixel_value": self.max_pixel_value}

    @classmethod
    def from_dict(cls, d, where="input_spec"):
        """The spec a mapping states (a checkpoint's ``input_spec``); a bad value is a UserError
        naming ``where`` and the key (``best.bin: input_spec.std: ...``)."""
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a mapping of {', '.join(SPEC_KEYS)}, got {d!r}")
        unknown = sorted(map(str, set(d) - set(SPEC_KEYS)))
        if unknown:
            raise UserError(f"{where}: unknown key(s) {unknown} (known: {', '.join(SPEC_KEYS)})")
        defaults = cls.__dataclass_fields__
        values = checked_spec(where, *(d.get(k, defaults[k].default) for k in SPEC_KEYS))
        return cls(**dict(zip(SPEC_KEYS, values)))

    def same_normalisation(self, other):
        return (all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(self.mean, other.mean))
                and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(self.std, other.std))
                and self.max_pixel_value == other.max_pixel_value)

    def describe(self):
        h, w = self.size
        size = f"{h} px" if h == w else f"{h} x {w} px"

        def fmt(t):
            return "(" + ", ".join(f"{v:g}" for v in t) + ")"

        return f"{size} ({self.interpolation}), mean {fmt(self.mean)}, std {fmt(self.std)}"


SPEC_KEYS = ("size", "mean", "std", "interpolation", "max_pixel_value")


def checked_spec(where, size, mean, std, interpolation, max_pixel_value) -> tuple:
    """The values of an input spec, checked, as the spec holds them: ``size`` one side or (height,
    width), each from 1 to ``checks.MAX_INPUT_SIZE``; ``mean`` three finite numbers; ``std`` three
    positive finite ones; ``max_pixel_value`` positive and finite; ``interpolation`` one of
    ``INTERPOLATIONS``; and pixels 0 to 255 normalised by them finite in float32 (no NaN or
    infinity can come out of the normalisation). A bad value is a UserError naming
    ``where.<key>``."""
    def triple(key, value, kind):
        if isinstance(value, (int, float, str)) or not hasattr(value, "__len__") or len(value) != 3:
            raise UserError(f"{where}.{key}: expected 3 numbers (R, G, B), got {value!r}")
        return tuple(float(check_value(f"{where}.{key}", v, kind)) for v in value)

    if isinstance(size, (int, float, str)) and not isinstance(size, bool):
        size = (size, size)
    if not hasattr(size, "__len__") or isinstance(size, dict) or len(size) != 2:
        raise UserError(f"{where}.size: expected a side or a (height, width) pair, got {size!r}")
    size = tuple(check_value(f"{where}.size", s, "size") for s in size)
    mean, std = triple("mean", mean, "finite"), triple("std", std, "positive")
    top = float(check_value(f"{where}.max_pixel_value", max_pixel_value, "positive"))
    if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
        raise UserError(f"{where}.interpolation: {interpolation!r} is not one of "
                        f"{', '.join(INTERPOLATIONS)}")
    import numpy as np
    with np.errstate(all="ignore"):  # as the eval pipeline computes it, in float32
        m, s = np.float32(mean) * np.float32(top), np.float32(std) * np.float32(top)
        ends = (np.float32([0.0, 255.0])[:, None] - m) / s
    if not (np.all(s > 0) and np.all(np.isfinite(ends))):
        raise UserError(f"{where}: mean {list(mean)} / std {list(std)} with max_pixel_value "
                        f"{top:g} take pixels beyond float32's range (std too small)")
    return size, mean, std, interpolation, top


def normalize_params(params) -> tuple:
    """(mean, std, max_pixel_value) of an albumentations ``Normalize`` entry's params, with its
    defaults for what they leave out; a single number stands for all three channels."""
    mean = params.get("mean", NORMALIZE_DEFAULT_MEAN)
    std = params.get("std", NORMALIZE_DEFAULT_STD)
    mean, std = ((v,) * 3 if isinstance(v, (int, float, str)) or not hasattr(v, "__len__")
                 else tuple(v) for v in (mean, std))
    return mean, std, params.get("max_pixel_value", 255.0)


def spec_from_transforms(transforms, default: InputSpec, where="transforms") -> tuple:
    """The spec a dataset branch's ``transforms`` list states: its ``Resize`` (height, width,
    interpolation) and ``Normalize`` (mean, std, max_pixel_value), ``default`` for what it leaves
    out. Returns (spec, the names of the parts it stated). A bad value is a UserError naming
    ``where``, the entry and its parameter (``transforms[0] Resize.height: ...``)."""
    spec, stated = default, []
    if transforms is None:
        return spec, stated
    if not isinstance(transforms, list):
        raise UserError(f"{where}: expected a list of transforms, got {transforms!r:.80}")
    for i, entry in enumerate(transforms):
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        params = entry.get("params") or {}
        if name in ("Resize", "Normalize") and not isinstance(params, dict):
            raise UserError(f"{where}[{i}] {name}.params: expected a mapping, got {params!r:.80}")
        at = f"{where}[{i}] {name}"
        if name == "Resize" and "resize" not in stated:
            flag = params.get("interpolation", 1)
            names = {v: k for k, v in CV2_FLAGS.items()}
            size = tuple(check_value(f"{at}.{k}", params.get(k, side), "size")
                         for k, side in zip(("height", "width"), spec.size))
            interpolation = names.get(flag, flag) if isinstance(flag, int) else flag
            spec = InputSpec.from_dict({**spec.to_dict(), "size": size,
                                        "interpolation": interpolation}, at)
            stated.append("resize")
        elif name == "Normalize" and "normalize" not in stated:
            mean, std, top = normalize_params(params)
            spec = InputSpec.from_dict({**spec.to_dict(), "mean": mean, "std": std,
                                        "max_pixel_value": top}, at)
            stated.append("normalize")
    return spec, stated


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Fake probability: sigmoid of one logit, softmax column 1 of two."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0].float())
    return torch.softmax(logits.float(), dim=1)[:, 1]


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """The logit of the fake probability: the logit itself, or l1 - l0 for two logits."""
    logits = logits.float()
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


def scores(out) -> dict:
    """A model's output (logits, or the ``return_aux`` dict) -> ``{"logits", "prob", "logit",
    ...aux}``, probabilities and log-odds in float32."""
    out = dict(out) if isinstance(out, dict) else {"logits": out}
    logits = out["logits"].float()
    out.update(logits=logits, prob=probabilities(logits), logit=log_odds(logits))
    return out


class Detector(nn.Module):
    """Base class of every detector (see the module's docstring)."""

    default_spec = InputSpec()
    pretrained_spec = None  # InputSpec whose mean/std the pretrained weights expect
    min_input_size = 1
    has_reconstruction = False
    loss = "ClassificationLoss"  # a name in loss.LOSSES, used by the default build_loss
    # the kinds (checks.check_value) of constructor arguments whose default does not say enough
    arg_kinds = {"num_classes": (1, 2), "drop_rate": "fraction", "pretrained": "pretrained"}
    loss_defaults = {}  # the keys of its ``loss:`` section besides ``kind``, with their defaults
    loss_kinds = {}  # their kinds, where the default's type does not say enough
    # the layer whose feature map Grad-CAM explains (a name in named_modules); None: the last
    # nn.Conv2d registered, right for a plain network whose last conv feeds its head
    cam_layer = None
    # the temperature and operating points of its checkpoint (model.calibration.Calibration),
    # set by model.checkpoint.load_detector; None: its probabilities are the raw ones
    calibration = None

    @property
    def spec(self) -> InputSpec:
        """The spec this instance was trained with (set from a checkpoint or a config), else the
        class's default."""
        return self.__dict__.get("_spec") or self.default_spec

    @spec.setter
    def spec(self, value: InputSpec):
        self.__dict__["_spec"] = value

    def build_loss(self, cfg: dict | None = None) -> nn.Module:
        """The training loss from the ``loss:`` section (missing keys take ``loss_defaults``): by
        default the registered loss that ``loss`` names, built by its ``from_config``."""
        from loss import LOSSES
        section = loss_arguments(type(self), cfg, getattr(self, "num_classes", 1))
        return LOSSES.get(self.loss).from_config(section)

    def cam_target(self) -> nn.Module:
        """The module Grad-CAM explains: the one ``cam_layer`` names, else the last ``nn.Conv2d``
        registered. A name that is not a module of this detector, or a detector without a conv
        and without ``cam_layer``, is a UserError naming ``<class>.cam_layer``."""
        where = f"{type(self).__name__}.cam_layer"
        if self.cam_layer is None:
            convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise UserError(f"{where}: {type(self).__name__} has no nn.Conv2d; name the "
                                "layer whose N x C x h x w output Grad-CAM should explain")
            return convs[-1]
        modules = dict(self.named_modules())
        if not isinstance(self.cam_layer, str) or self.cam_layer not in modules:
            raise UserError(f"{where}: {self.cam_layer!r} is not a module of "
                            f"{type(self).__name__} (a name of its named_modules(), such as "
                            f"{next(n for n in modules if n)!r})")
        return modules[self.cam_layer]

    def score(self, x: torch.Tensor, aux: bool = False) -> dict:
        return scores(self(x, return_aux=aux))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Fake probabilities (N) of a prepared batch (N x 3 x H x W), in eval mode, no grad."""
        was = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return self.score(x)["prob"]
        finally:
            self.train(was)


def model_arguments(section: dict, where: str = "model") -> dict:
    """The ``model:`` section checked against the detector it names: ``name`` and the checked
    constructor arguments (a new dict). ``pretrained`` absent means True where the detector takes
    it (the original's ImageNet start)."""
    if not isinstance(section, dict):
        raise UserError(f"{where}: expected a mapping with a name, got {section!r}")
    args = dict(section)
    name = args.pop("name", None)
    cls = DETECTORS.get(name)
    args = check_arguments(cls, args, where, f"the detector {name}", cls.arg_kinds)
    if "pretrained" in (accepted_arguments(cls) or {}):
        args.setdefault("pretrained", True)
    return {"name": name, **args}


def loss_arguments(cls, section: dict | None, num_classes: int = 1, where: str = "loss",
                   origins: dict | None = None) -> dict:
    """The ``loss:`` section of the detector class ``cls``: ``kind`` (binary_ce for one logit,
    cross_entropy for two, checked against ``num_classes``) and every key of
    ``cls.loss_defaults``, the given values checked; an unknown key is one error naming the
    detector and the keys it takes. ``origins`` names where a key came from when not from
    ``where`` (an original config's ``config.lambda_1``)."""
    from loss import check_kind
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise UserError(f"{where}: expected a mapping, got {section!r}")
    origins = origins or {}
    known = ["kind", *cls.loss_defaults]
    out = {"kind": "binary_ce" if num_classes == 1 else "cross_entropy", **cls.loss_defaults}
    for key, value in section.items():
        at = origins.get(key, f"{where}.{key}")
        if key not in known:
            raise UserError(f"{at}: the loss of the detector {cls.__name__} takes no {key!r} "
                            f"(it takes: {', '.join(known)})")
        if key == "kind":
            out[key] = check_kind(value, num_classes, at)
            continue
        kind = cls.loss_kinds.get(key) or kind_of_default(cls.loss_defaults[key])
        out[key] = value if kind is None else check_value(at, value, kind)
    return out


def build_detector(model_cfg: dict) -> Detector:
    """Build the detector that ``model_cfg`` (a ``model:`` section) names, every other key passed
    to its constructor after ``model_arguments`` has checked it; the dict is not modified."""
    args = model_arguments(model_cfg)
    return DETECTORS.get(args.pop("name"))(**args)
