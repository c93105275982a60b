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
  ``scores`` (the one place that unwraps a model's output).

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
# albumentations / OpenCV flags of those names (cv2.INTER_*), as a Resize entry in a YAML states them
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
        size = (self.size, self.size) if isinstance(self.size, (int, float)) else tuple(self.size)
        object.__setattr__(self, "size", tuple(int(s) for s in size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "max_pixel_value", float(self.max_pixel_value))
        if len(self.size) != 2 or min(self.size) < 1:
            raise UserError(f"input spec: size {self.size} is not a height and width >= 1")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std) \
                or not all(math.isfinite(v) for v in self.mean + self.std):
            raise UserError(f"input spec: mean {self.mean} / std {self.std} need 3 finite values "
                            "each, std > 0")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"input spec: interpolation {self.interpolation!r} is not one of "
                            f"{', '.join(INTERPOLATIONS)}")

    def with_size(self, size):
        return replace(self, size=size)

    def to_dict(self):
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "max_pixel_value": self.max_pixel_value}

    @classmethod
    def from_dict(cls, d, where="input_spec"):
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a mapping, got {d!r}")
        unknown = set(d) - {"size", "mean", "std", "interpolation", "max_pixel_value"}
        if unknown:
            raise UserError(f"{where}: unknown key(s) {sorted(unknown)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: {d!r} is not an input spec ({exc})") from None

    def same_normalisation(self, other):
        return (all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(self.mean, other.mean))
                and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(self.std, other.std))
                and self.max_pixel_value == other.max_pixel_value)

    def describe(self):
        h, w = self.size
        size = f"{h} px" if h == w else f"{h} x {w} px"
        fmt = lambda t: "(" + ", ".join(f"{v:g}" for v in t) + ")"  # noqa: E731
        return f"{size} ({self.interpolation}), mean {fmt(self.mean)}, std {fmt(self.std)}"


def normalize_params(params) -> tuple:
    """(mean, std, max_pixel_value) of an albumentations ``Normalize`` entry's params, with its
    defaults for what they leave out; a single number stands for all three channels."""
    mean = params.get("mean", NORMALIZE_DEFAULT_MEAN)
    std = params.get("std", NORMALIZE_DEFAULT_STD)
    mean, std = ((v,) * 3 if isinstance(v, (int, float)) else tuple(v) for v in (mean, std))
    return mean, std, params.get("max_pixel_value", 255.0)


def spec_from_transforms(transforms, default: InputSpec) -> tuple:
    """The spec a dataset branch's ``transforms`` list states: its ``Resize`` (height, width,
    interpolation) and ``Normalize`` (mean, std, max_pixel_value), ``default`` for what it leaves
    out. Returns (spec, the names of the parts it stated)."""
    spec, stated = default, []
    for entry in transforms or []:
        if not isinstance(entry, dict):
            continue
        params = entry.get("params") or {}
        if entry.get("name") == "Resize" and "resize" not in stated:
            flag = params.get("interpolation", 1)
            names = {v: k for k, v in CV2_FLAGS.items()}
            spec = replace(spec, size=(params.get("height", spec.size[0]),
                                       params.get("width", spec.size[1])),
                           interpolation=names.get(flag, flag) if isinstance(flag, int) else flag)
            stated.append("resize")
        elif entry.get("name") == "Normalize" and "normalize" not in stated:
            mean, std, top = normalize_params(params)
            spec = replace(spec, mean=mean, std=std, max_pixel_value=top)
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
