"""model/cam.py: Grad-CAM against a hand computation, on every detector, and its errors."""
import pytest
import torch

from errors import UserError
from helpers import PLUGIN
from model import build_detector


def _tiny(num_classes=1):
    """The plugin detector of tests/plugins: logits = fc(mean(ReLU(conv(x))))."""
    from model import DETECTORS
    from registry import import_modules
    import_modules([PLUGIN])
    torch.manual_seed(0)
    return DETECTORS.get("TinyDetector")(num_classes=num_classes)


@pytest.mark.parametrize("num_classes", [1, 2])
def test_grad_cam_is_the_hand_computation_on_a_linear_head(num_classes):
    """On TinyDetector's one conv (its default layer: the last nn.Conv2d), with A = conv(x) and w
    the head's weights of the log-odds (w1 - w0 for two logits): dy/dA_c = w_c [A_c > 0] / (h w),
    alpha_c its mean over the map, Grad-CAM = ReLU(sum_c alpha_c A_c), scaled to [0, 1] (min 0,
    max 1), resized (bilinear) to the input and scaled again."""
    import cv2
    import numpy as np

    from model.cam import grad_cam
    det = _tiny(num_classes).eval()
    assert det.cam_target() is det.conv
    torch.manual_seed(1)
    x = torch.randn(4, 3, 40, 36)
    got = grad_cam(det, x)
    with torch.no_grad():
        a = det.conv(x).double()
        w = det.fc.weight.double()
        w = w[0] if num_classes == 1 else w[1] - w[0]
        grad = w[None, :, None, None] * (a > 0) / (a.shape[2] * a.shape[3])
        alpha = grad.mean(dim=(2, 3))
        cam = torch.relu((alpha[:, :, None, None] * a).sum(1)).numpy()

    def scaled(m):
        m = m - m.min()
        return m / (m.max() + 1e-7)
    want = np.stack([scaled(cv2.resize(np.float32(scaled(c)), (36, 40))) for c in cam])
    assert (want.max(axis=(1, 2)) > 0.99).all()  # no map is empty: the comparison means something
    assert got.shape == (4, 40, 36) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name", ["Recce", "Xception", "TinyDetector"])
def test_grad_cam_maps_every_detector_in_eval_mode_and_leaves_it_as_it_was(name):
    """One map per face, the input's size, in [0, 1] with 1 its top; computed in eval mode even
    from a model in training mode or inside inference mode, on inference tensors; the model's
    mode and requires_grad flags are restored and no parameter gets a gradient."""
    import numpy as np

    from model.cam import grad_cam
    det = _tiny() if name == "TinyDetector" else build_detector({"name": name, "pretrained": False})
    flags = [p.requires_grad for p in det.parameters()]
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 72)
    det.eval()
    eval_maps = grad_cam(det, x)
    det.train()
    with torch.inference_mode():
        maps = grad_cam(det, x.clone())
    assert maps.shape == (2, 64, 72) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() > 0.99 or m.max() == 0 for m in maps)
    np.testing.assert_allclose(maps, eval_maps, atol=1e-5)  # eval mode: no noise, no dropout
    assert det.training
    assert [p.requires_grad for p in det.parameters()] == flags
    assert all(p.grad is None for p in det.parameters())
    target = det.cam_target()
    if name != "TinyDetector":
        assert target is det.encoder.act4  # the encoder's last feature map, which the head pools
    assert grad_cam(det, list(x)).shape == (2, 64, 72)  # a list of faces, as the scorer has them


def test_cam_layer_errors_name_the_detector_and_the_layer():
    import torch.nn as nn

    from model import Detector
    from model.cam import grad_cam
    det = _tiny()
    x = torch.randn(1, 3, 32, 32)
    det.cam_layer = "nope"
    with pytest.raises(UserError, match=r"^TinyDetector.cam_layer: 'nope' is not a module"):
        grad_cam(det, x)
    det.cam_layer = "fc"  # N x C logits, no feature map
    with pytest.raises(UserError, match=r"^TinyDetector.cam_layer: .*N x C x h x w.*\(1, 1\)"):
        grad_cam(det, x)
    recce = build_detector({"name": "Recce", "pretrained": False})
    recce.cam_layer = "encoder.fc"  # kept for the original's checkpoints, never run
    with pytest.raises(UserError, match=r"^Recce.cam_layer: the layer does not run"):
        grad_cam(recce, torch.randn(1, 3, 64, 64))

    class NoConv(Detector):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, x, return_aux=False):
            return self.fc(x.mean(dim=(2, 3)))
    with pytest.raises(UserError, match=r"^NoConv.cam_layer: NoConv has no nn.Conv2d"):
        grad_cam(NoConv(), x)
