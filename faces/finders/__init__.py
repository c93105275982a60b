"""Face finders: the detectors that find faces in a picture, behind one interface
(``finder(rgb) -> [Detection]``), by name in ``FACE_FINDERS`` (an unknown name is an error about
``face_detector``, the flag and keyword that choose one, ``UserError.arg``). Another is one file
registering a factory ``(weights, backbone, device) -> finder`` with
``@register_face_finder("name")``.

Three things were once all called a detector; each now has a name of its own: the face finder
(here), the network contract ``model.Detector`` (a deepfake detector: forward, loss, input spec)
and the API ``faces.api.Predictor`` (a network with its checkpoint's pre-processing, scoring files).
``faces.detectors`` and its names (``FACE_DETECTORS``, ``build_face_detector``, ``DlibDetector``,
``RetinaFaceDetector``) still import, with a ``DeprecationWarning``, for one release."""
from registry import Registry

from .base import Detection

FACE_FINDERS = Registry("face detector", "face_detector")  # the flag keeps its name


def register_face_finder(name):
    return lambda factory: FACE_FINDERS.register(factory, name=name)


@register_face_finder("dlib")
def _dlib(weights=None, backbone=None, device="cpu"):
    from .dlib_hog import DlibFinder
    return DlibFinder()


@register_face_finder("retinaface")
def _retinaface(weights=None, backbone=None, device="cpu"):
    from .retinaface import RetinaFaceFinder
    return RetinaFaceFinder(weights, backbone, device)


def build_face_finder(name, weights=None, backbone=None, device="cpu"):
    return FACE_FINDERS.get(name)(weights=weights, backbone=backbone, device=device)


__all__ = ["FACE_FINDERS", "Detection", "build_face_finder", "register_face_finder"]
