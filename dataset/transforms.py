"""Albumentations pipelines from the YAML ``transforms`` list, checked when the config is loaded."""
import os
import warnings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from errors import UserError  # noqa: E402


def build_transforms(spec, where: str = "transforms") -> A.Compose:
    """``[{name, params}, ...]`` -> ``Compose([...], ToTensorV2())``.

    Any albumentations transform may be named, and this project's ``RandomDegradation`` (the
    DeeperForensics distortions as augmentation, dataset/perturb.py). An unknown name, a bad parameter, or a parameter
    that albumentations 2.x would only warn about and ignore (``always_apply``, ``var_limit``, ...)
    raises a UserError naming the entry.
    """
    if not isinstance(spec, list):
        raise UserError(f"{where}: expected a list of {{name, params}} entries, got {spec!r}")
    steps = []
    for i, entry in enumerate(spec):
        label = f"{where}[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise UserError(f"{label}: expected {{name, params}}, got {entry!r}")
        unknown = set(entry) - {"name", "params"}
        if unknown:
            raise UserError(f"{label}: unknown key(s) {sorted(unknown)}")
        name, params = entry["name"], entry.get("params") or {}
        from .perturb import PROJECT_TRANSFORMS
        cls = PROJECT_TRANSFORMS[name]() if name in PROJECT_TRANSFORMS else getattr(A, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            raise UserError(f"{label}: unknown albumentations transform {name!r}")
        if not isinstance(params, dict):
            raise UserError(f"{label} ({name}): params must be a mapping, got {params!r}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                steps.append(cls(**params))
        except Exception as exc:  # noqa: BLE001 - pydantic errors, TypeError, warnings as errors
            message = " ".join(str(exc).split())
            raise UserError(f"{label} ({name}): bad parameters {params}: {message}") from None
    return A.Compose(steps + [ToTensorV2()])


def inference_transforms(size: int, mean, std) -> A.Compose:
    """The original's test-time pipeline for a model: a bilinear resize to ``size x size`` (a
    stretch, no crop), then the model's own normalisation; inference.py's face crops, videos and
    photos all go through it."""
    return build_transforms([
        {"name": "Resize", "params": {"height": size, "width": size}},
        {"name": "Normalize", "params": {"mean": list(mean), "std": list(std)}}])
