"""The reconstruction-difference heat map, drawn one way wherever it is shown: inference.py's
crop panels, the pictures of videos and photos, and the validation examples in TensorBoard.

The map is ``|input - reconstruction|`` averaged over the channels, on the model's normalised
scale; its colours run over one fixed range, 0 to ``HEAT_MAX`` (larger values take the top
colour), so that two pictures can be compared. ``COLORMAP`` is the one colour scale.
"""
import cv2
import numpy as np

from .detector import HEAT_MAX

COLORMAP = cv2.COLORMAP_JET


def difference_map(x, recons):
    """``|x - recons|`` averaged over the channel axis: C x H x W tensors -> H x W, N x C x H x W
    -> N x H x W (float32 NumPy, on the CPU)."""
    return (x.float().cpu() - recons.float().cpu()).abs().mean(-3).numpy()


def _colour(levels):
    """uint8 levels (0 for 0, 255 for ``HEAT_MAX``) -> BGR pictures of the colour scale."""
    return cv2.applyColorMap(levels, COLORMAP)


def heat_map(diff_map, size=None, interpolation=None):
    """An H x W difference map as a BGR picture on the fixed scale; ``size``: a side (square) or
    (width, height) to resize to (default: as it is), ``interpolation`` the cv2 flag of the resize
    (default linear)."""
    levels = (np.clip(diff_map / HEAT_MAX, 0, 1) * 255).astype(np.uint8)
    if size is not None:
        wh = (size, size) if isinstance(size, int) else tuple(size)
        flag = cv2.INTER_LINEAR if interpolation is None else interpolation
        levels = cv2.resize(levels, wh, interpolation=flag)
    return _colour(levels)


def heat_ramp(width, height):
    """The colour scale of ``heat_map``, a BGR picture: 0 on the left, ``HEAT_MAX`` on the right."""
    return _colour(np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1)))


def heat_colours():
    """The 256 colours of the scale, 0 to ``HEAT_MAX``, as RGB in [0, 1] (a matplotlib
    ``ListedColormap`` of them draws a colour bar that agrees with ``heat_map``)."""
    return heat_ramp(256, 1)[0, :, ::-1].astype(np.float64) / 255.0


__all__ = ["COLORMAP", "HEAT_MAX", "difference_map", "heat_colours", "heat_map", "heat_ramp"]
