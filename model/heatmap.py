"""The evidence maps of a face, drawn one way wherever they are shown: inference.py's crop panels,
the pictures of videos and photos, and the validation examples in TensorBoard.

Two maps (``MapKind``), each on one fixed scale so that two pictures can be compared:

- ``DIFFERENCE``, RECCE's forgery cue: ``|input - reconstruction|`` averaged over the channels,
  on the model's normalised scale, its colours running from 0 to ``HEAT_MAX`` (larger values
  take the top colour); only for detectors that reconstruct;
- ``GRAD_CAM``, for every detector: Grad-CAM of the fake log-odds (``model.cam``), scaled per
  face to [0, 1] (1 is the face's own maximum), its colours running from 0 to 1; only with the
  grad-cam package installed.

``COLORMAP`` is the one colour scale of both, perceptually uniform (viridis: dark purple for
none, yellow for the most).
"""
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .cam import grad_cam
from .detector import HEAT_MAX

COLORMAP = cv2.COLORMAP_VIRIDIS


@dataclass(frozen=True)
class MapKind:
    """How a map is titled and scaled: ``title`` on a panel, ``short`` in the narrow side panels
    of videos and photos, ``top`` the value of the top colour, ``top_label`` the colour bar's
    right end, ``scale`` what the scale is, said under the colour bar."""

    title: str
    short: str
    top: float
    top_label: str
    scale: str


DIFFERENCE = MapKind("|face - reconstruction|", "|face - recons.|", HEAT_MAX, f"{HEAT_MAX:g}+",
                     "normalised pixels")
GRAD_CAM = MapKind("Grad-CAM (fake log-odds)", "Grad-CAM", 1.0, "1", "1 = face's max")


def difference_map(x, recons):
    """``|x - recons|`` averaged over the channel axis: C x H x W tensors -> H x W, N x C x H x W
    -> N x H x W (float32 NumPy, on the CPU)."""
    return (x.float().cpu() - recons.float().cpu()).abs().mean(-3).numpy()


def evidence_maps(model, x, recons=None, batch_size=8):
    """The maps of each face of the prepared batch ``x`` (N x C x H x W, or a list of C x H x W
    tensors): a list of N lists of (``MapKind``, H x W map), the reconstruction difference first
    where ``recons`` (the model's reconstructions, alike) is given, then Grad-CAM where the
    grad-cam package is installed (``model.cam.grad_cam``, ``batch_size`` faces at a time)."""
    if isinstance(x, (list, tuple)):
        x = torch.stack(list(x))
    maps = [[] for _ in range(len(x))]
    if recons is not None:
        if isinstance(recons, (list, tuple)):
            recons = torch.stack(list(recons))
        for k, m in enumerate(difference_map(x, recons)):
            maps[k].append((DIFFERENCE, m))
    cams = grad_cam(model, x, batch_size) if len(x) else None
    if cams is not None:
        for k, m in enumerate(cams):
            maps[k].append((GRAD_CAM, m))
    return maps


def _colour(levels):
    """uint8 levels (0 for 0, 255 for the top of the scale) -> BGR pictures of the colour scale."""
    return cv2.applyColorMap(levels, COLORMAP)


def heat_map(values, size=None, interpolation=None, top=HEAT_MAX):
    """An H x W map as a BGR picture on the fixed scale 0 to ``top`` (``HEAT_MAX``, the
    difference map's; ``GRAD_CAM.top`` for Grad-CAM); ``size``: a side (square) or (width,
    height) to resize to (default: as it is), ``interpolation`` the cv2 flag of the resize
    (default linear)."""
    levels = (np.clip(np.nan_to_num(values / top), 0, 1) * 255).astype(np.uint8)
    if size is not None:
        wh = (size, size) if isinstance(size, int) else tuple(size)
        flag = cv2.INTER_LINEAR if interpolation is None else interpolation
        levels = cv2.resize(levels, wh, interpolation=flag)
    return _colour(levels)


def heat_ramp(width, height):
    """The colour scale of ``heat_map``, a BGR picture: 0 on the left, the top on the right."""
    return _colour(np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1)))


def heat_colours():
    """The 256 colours of the scale, 0 to the top, as RGB in [0, 1] (a matplotlib
    ``ListedColormap`` of them draws a colour bar that agrees with ``heat_map``)."""
    return heat_ramp(256, 1)[0, :, ::-1].astype(np.float64) / 255.0


__all__ = ["COLORMAP", "DIFFERENCE", "GRAD_CAM", "HEAT_MAX", "MapKind", "difference_map",
           "evidence_maps", "heat_colours", "heat_map", "heat_ramp"]
