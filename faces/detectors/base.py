"""Renamed ``faces.finders.base``; kept one release (importing it warns through
``faces.detectors``)."""
from faces.finders.base import MIN_FACE_SCORE, MIN_FACE_SIZE, Detection, min_score_of, usable

__all__ = ["MIN_FACE_SCORE", "MIN_FACE_SIZE", "Detection", "min_score_of", "usable"]
