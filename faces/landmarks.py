"""Face landmarks for aligned crops: dlib's shape predictor.

DeepfakeBench aligns with dlib's 81-point predictor (``shape_predictor_81_face_landmarks.dat``, a
file its users download); its five key points are among the first 68, which the 68-point
predictor of the ``face-recognition-models`` package (pip) also gives: the documented stand-in,
found without importing that package (its ``__init__`` needs ``pkg_resources``, which current
setuptools no longer ships).
"""
import importlib.util
import os

import numpy as np

from errors import UserError
from fileio import sha256_of

STAND_IN = "shape_predictor_68_face_landmarks.dat"
HOW = ("pip install face-recognition-models (dlib's 68-point predictor, the stand-in), or give "
       "DeepfakeBench's shape_predictor_81_face_landmarks.dat with --landmarks FILE")


def stand_in_path():
    """The 68-point predictor of the face-recognition-models package, or None."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")  # finds, does not import
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "models", STAND_IN)
        if os.path.isfile(path):
            return path
    return None


def find_predictor(path=None, where="landmarks"):
    """The shape predictor file: ``path`` when given (it must exist), else the stand-in; missing,
    one line saying what to install or download (naming ``where``)."""
    if path is not None:
        if not os.path.isfile(path):
            raise UserError(f"{where} {path}: no such file (a dlib shape predictor .dat)",
                            arg=where)
        return path
    found = stand_in_path()
    if found is None:
        raise UserError(f"{where}: the aligned crop needs a dlib shape predictor: {HOW}",
                        arg=where)
    return found


def dlib_rect(box):
    """dlib's rectangle of ``box`` (x1, y1, x2, y2), rounded to whole pixels."""
    import dlib
    return dlib.rectangle(*(int(round(v)) for v in box))


def dlib_area(box):
    """dlib's own rectangle area: (right - left + 1) x (bottom - top + 1)."""
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)



def largest_face(detections):
    """The detection with dlib's largest rectangle area (``dlib_area``); the first of equals."""
    return max(detections, key=lambda d: dlib_area(d.box))

class Landmarker:
    """dlib's shape predictor with the frontal detector it is paired with (upsample 1), as
    DeepfakeBench's preparation uses them."""

    def __init__(self, path=None, where="landmarks"):
        try:
            import dlib
        except ImportError:
            raise UserError(f"{where}: the aligned crop needs the dlib package: pip install "
                            "dlib-bin", arg=where) from None
        from .finders.dlib_hog import DlibFinder
        self.path = find_predictor(path, where)
        try:
            self.predictor = dlib.shape_predictor(self.path)
        except RuntimeError as exc:
            raise UserError(f"{where} {self.path}: not a dlib shape predictor ({exc})",
                            arg=where) from None
        self.detector = DlibFinder()
        self._sha = None

    def predict(self, image, box):
        """Every landmark of the face in ``box`` (x1, y1, x2, y2: whole pixels) as an N x 2 int
        array."""
        shape = self.predictor(image, dlib_rect(box))
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)],
                        dtype=int)

    def face_points(self, image, fallback=None):
        """The landmarks of the largest face the detector finds in ``image`` (N x 2 int); where
        it finds none, those of the face in the box ``fallback`` (x1, y1, x2, y2) when given,
        else None."""
        found = self.detector(image)
        if found:
            return self.predict(image, largest_face(found).box)
        return None if fallback is None else self.predict(image, fallback)

    def describe(self):
        if self._sha is None:
            self._sha = sha256_of(self.path)
        return {"file": os.path.basename(self.path), "sha256": self._sha}
