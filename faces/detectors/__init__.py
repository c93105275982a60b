"""Face detectors behind one interface (``detector(rgb) -> [Detection]``), by name in
``FACE_DETECTORS`` (an unknown name is an error about ``face_detector``, ``UserError.arg``).
Another is one file registering a factory
``(weights, backbone, device) -> detector`` with ``@register_face_detector("name")``."""
from registry import Registry

from .base import Detection

FACE_DETECTORS = Registry("face detector", "face_detector")


def register_face_detector(name):
    return lambda factory: FACE_DETECTORS.register(factory, name=name)


@register_face_detector("dlib")
def _dlib(weights=None, backbone=None, device="cpu"):
    from .dlib_hog import DlibDetector
    return DlibDetector()


@register_face_detector("retinaface")
def _retinaface(weights=None, backbone=None, device="cpu"):
    from .retinaface import RetinaFaceDetector
    return RetinaFaceDetector(weights, backbone, device)


def build_face_detector(name, weights=None, backbone=None, device="cpu"):
    return FACE_DETECTORS.get(name)(weights=weights, backbone=backbone, device=device)


__all__ = ["FACE_DETECTORS", "Detection", "build_face_detector", "register_face_detector"]
