"""Grad-CAM of the fake log-odds: where in a face a detector's decision comes from, for every
detector (RECCE's reconstruction difference, ``model.heatmap``, is the other map, for detectors
that reconstruct).

Computed by the grad-cam package (pytorch-grad-cam, an optional dependency: ``pip install
grad-cam``) on the layer the detector names (``Detector.cam_target``). With A the N x C x h x w
feature map of that layer and y the log-odds of "fake" (the logit; l1 - l0 for two logits),
Grad-CAM is ``ReLU(sum_c alpha_c A_c)`` with ``alpha_c`` the mean over h x w of dy/dA_c; the
map is scaled per face to [0, 1] (its lowest value 0, its highest 1; all 0 where no part of the
face speaks for "fake"), resized to the input (bilinear) and scaled so again. Without the
package, ``grad_cam`` says so once on stderr and returns None.
"""
import sys

import numpy as np
import torch

from errors import UserError

from .detector import log_odds

INSTALL = "pip install grad-cam"
_said = []  # the missing package is said once per process


def available() -> bool:
    """Whether the grad-cam package can be imported; when not, one line on stderr (once)."""
    try:
        import pytorch_grad_cam  # noqa: F401 - imported to check it is installed
    except ImportError:
        if not _said:
            print(f"Grad-CAM maps need the grad-cam package ({INSTALL}); the pictures go on "
                  "without them", file=sys.stderr)
            _said.append(True)
        return False
    return True


class _LogOdds:
    """The Grad-CAM target: one sample's logits (C) -> the log-odds of fake."""

    def __call__(self, logits):
        return log_odds(logits[None])[0]


def grad_cam(model, x, batch_size=8):
    """Grad-CAM of the fake log-odds for the prepared batch ``x`` (N x 3 x H x W, or a list of
    3 x H x W tensors, on any device): an N x H x W float32 array in [0, 1], one map per face
    scaled to its own maximum; None when the grad-cam package is missing. Runs the eager model
    in eval mode with gradients enabled (inside ``torch.inference_mode`` too), ``batch_size``
    faces at a time; gradients flow only from the logits back to the explained layer (no
    parameter gets a gradient), and the model's mode and ``requires_grad`` flags are restored."""
    if not available():
        return None
    from pytorch_grad_cam import GradCAM
    if isinstance(x, (list, tuple)):
        x = torch.stack(list(x))
    where = f"{type(model).__name__}.cam_layer"
    layer = model.cam_target()
    params = list(model.parameters())
    device = params[0].device if params else x.device
    calls = []

    def cut(module, args, output):
        """The explained layer's output becomes the leaf of the graph: the backward pass stops
        there, and only it needs a gradient."""
        if not (isinstance(output, torch.Tensor) and output.dim() == 4):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise UserError(f"{where}: Grad-CAM needs an N x C x h x w feature map, the layer "
                            f"gives {shape}")
        calls.append(tuple(output.shape))
        return output.detach().requires_grad_(True)

    flags, was = [p.requires_grad for p in params], model.training
    handle = layer.register_forward_hook(cut)  # before GradCAM's own hooks, which see its output
    maps = []
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.requires_grad_(False)
            cam = GradCAM(model=model, target_layers=[layer])  # puts the model in eval mode
            try:
                for i in range(0, len(x), batch_size):
                    xb = x[i:i + batch_size].to(device).clone()  # not an inference tensor
                    calls.clear()
                    try:
                        maps.append(cam(input_tensor=xb, targets=[_LogOdds()] * len(xb)))
                    except UserError:
                        raise
                    except Exception:
                        if not calls:  # the package fails on a layer without an output
                            raise UserError(f"{where}: the layer does not run in "
                                            f"{type(model).__name__}'s forward pass") from None
                        raise
                    if len(calls) != 1:
                        raise UserError(f"{where}: the layer ran {len(calls)} times in one forward "
                                        "pass; Grad-CAM needs a layer that runs once")
            finally:
                cam.activations_and_grads.release()
    finally:
        handle.remove()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was)
    return np.concatenate(maps).astype(np.float32)


__all__ = ["INSTALL", "available", "grad_cam"]
