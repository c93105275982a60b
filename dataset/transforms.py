"""Albumentations pipelines from the YAML ``transforms`` list, checked when the config is loaded."""
import os
import warnings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A
from albumentations.pytorch import ToTensorV2

from checks import named_entries
from errors import UserError


def build_transforms(spec, where: str = "transforms") -> A.Compose:
    """``[{name, params}, ...]`` -> ``Compose([...], ToTensorV2())``.

    Any albumentations transform may be named, and this project's ``RandomDegradation`` (the
    DeeperForensics distortions as augmentation, dataset/perturb.py). An unknown name, a bad
    parameter, or a parameter that albumentations 2.x would only warn about and ignore
    (``always_apply``, ``var_limit``, ...) raises a UserError naming the entry.
    """
    steps = []
    for label, entry in named_entries(spec, where, "{name, params}"):
        unknown = set(entry) - {"name", "params"}
        if unknown:
            raise UserError(f"{label}: unknown key(s) {sorted(unknown)}")
        name, params = entry["name"], entry.get("params") or {}
        from .perturb import PROJECT_TRANSFORMS
        cls = (PROJECT_TRANSFORMS[name]() if name in PROJECT_TRANSFORMS
               else getattr(A, str(name), None))
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


def spec_transforms(spec) -> list:
    """The YAML ``transforms`` entries of an input spec (``model.InputSpec``): a resize to its size
    (a stretch, no crop), then its normalisation."""
    from model.detector import CV2_FLAGS
    h, w = spec.size
    return [{"name": "Resize", "params": {"height": h, "width": w,
                                          "interpolation": CV2_FLAGS[spec.interpolation]}},
            {"name": "Normalize", "params": {"mean": list(spec.mean), "std": list(spec.std),
                                             "max_pixel_value": spec.max_pixel_value}}]


def eval_transforms(spec) -> A.Compose:
    """The test-time pipeline of a detector's input spec: every entry point that scores images
    outside a dataset config (inference.py, the face pipeline, export checks) goes through it."""
    return build_transforms(spec_transforms(spec))


def with_spec(transforms, spec, replace=True) -> tuple:
    """A branch's ``transforms`` with its ``Resize`` and ``Normalize`` set to ``spec`` (the
    checkpoint's), the other entries kept; a spec part the list lacks is added (the resize first,
    the normalisation last). ``replace=False`` only adds what is missing (training: the dataset
    file's own resize and normalisation are the spec). Returns (new list, True when anything
    changed)."""
    resize, normalize = spec_transforms(spec)
    out, seen, changed = [], set(), False
    for entry in transforms or []:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name in ("Resize", "Normalize"):
            new = resize if name == "Resize" else normalize
            if not replace:
                seen.add(name)
                out.append(entry)
                continue
            if name in seen:  # a second resize or normalisation would undo the spec
                changed = True
                continue
            seen.add(name)
            old = {**({"interpolation": 1} if name == "Resize" else {"max_pixel_value": 255.0}),
                   **(entry.get("params") or {})}
            changed |= not _same_params(old, new["params"])
            out.append(new)
        else:
            out.append(entry)
    if "Resize" not in seen:
        out.insert(0, resize)
        changed = True
    if "Normalize" not in seen:
        out.append(normalize)
        changed = True
    return out, changed


def _same_params(a, b):
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
            if len(x) != len(y) or any(abs(float(u) - float(v)) > 1e-9 for u, v in zip(x, y)):
                return False
        elif float(x) != float(y):
            return False
    return True
