"""Face detectors behind one interface (``detector(rgb) -> [Detection]``); another is one file."""
from errors import UserError

from .base import Detection

DETECTORS = ("dlib", "retinaface")


def build_detector(name, weights=None, backbone=None, device="cpu"):
    if name == "dlib":
        from .dlib_hog import DlibDetector
        return DlibDetector()
    if name == "retinaface":
        from .retinaface import RetinaFaceDetector
        return RetinaFaceDetector(weights, backbone, device)
    raise UserError(f"unknown detector {name!r} (known: {', '.join(DETECTORS)})")


__all__ = ["DETECTORS", "Detection", "build_detector"]
