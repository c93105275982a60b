"""dataset/transforms.py: any albumentations transform by name, its errors, and a branch set or
completed by an input spec."""
import numpy as np
import pytest

from dataset.transforms import build_transforms
from errors import UserError
from helpers import NORM
from model import InputSpec


def test_transforms_any_albumentations_name_and_errors():
    t = build_transforms([{"name": "GaussianBlur", "params": {"blur_limit": 3}}] + NORM)
    out = t(image=np.zeros((20, 20, 3), np.uint8))["image"]
    assert out.shape == (3, 16, 16)
    with pytest.raises(UserError,
                       match=r"transforms\[0\]: unknown albumentations transform 'Resise'"):
        build_transforms([{"name": "Resise", "params": {}}])
    with pytest.raises(UserError, match=r"transforms\[1\] \(Resize\).*always_apply"):
        build_transforms([NORM[1], {"name": "Resize",
                                    "params": {"height": 2, "width": 2, "always_apply": True}}])
    with pytest.raises(UserError, match="GaussNoise.*var_limit"):
        build_transforms([{"name": "GaussNoise", "params": {"var_limit": [10, 50]}}])
    with pytest.raises(UserError, match="Resize.*height"):
        build_transforms([{"name": "Resize", "params": {"height": "big", "width": 2}}])


def test_with_spec_sets_or_completes_a_branch():
    from dataset.transforms import with_spec
    spec = InputSpec((96, 96), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    flip = {"name": "HorizontalFlip", "params": {"p": 0.5}}
    stated = [{"name": "Resize", "params": {"height": 299, "width": 299}}, flip,
              {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    out, changed = with_spec(stated, spec)  # test time: the checkpoint's spec wins
    assert changed and out[1] == flip and out[0]["params"]["height"] == 96
    assert out[2]["params"]["mean"] == [0.485, 0.456, 0.406]
    same, changed = with_spec(out, spec)
    assert not changed and same == out
    kept, changed = with_spec(stated, spec, replace=False)  # training: what the file says stays
    assert not changed and kept == stated
    completed, changed = with_spec([flip], spec, replace=False)
    assert changed and [e["name"] for e in completed] == ["Resize", "HorizontalFlip", "Normalize"]
