"""Renamed ``faces.finders`` (the face finders); this name still imports, with a
``DeprecationWarning``, for one release."""
import warnings

from faces.finders import FACE_FINDERS, Detection, build_face_finder, register_face_finder

warnings.warn("faces.detectors is renamed faces.finders (FACE_FINDERS, build_face_finder, "
              "register_face_finder); the old name goes in the next release",
              DeprecationWarning, stacklevel=2)

FACE_DETECTORS = FACE_FINDERS
build_face_detector = build_face_finder
register_face_detector = register_face_finder

__all__ = ["FACE_DETECTORS", "Detection", "build_face_detector", "register_face_detector"]
