"""Renamed ``faces.finders.retinaface``; ``RetinaFaceDetector`` is ``RetinaFaceFinder``. Kept one
release (importing it warns through ``faces.detectors``)."""
from faces.finders.retinaface import (
    RetinaFaceFinder,
    RetinaFaceNet,
    backbone_of,
    load_retinaface_weights,
    postprocess,
    preprocess,
    priors,
)

RetinaFaceDetector = RetinaFaceFinder

__all__ = ["RetinaFaceDetector", "RetinaFaceFinder", "RetinaFaceNet", "backbone_of",
           "load_retinaface_weights", "postprocess", "preprocess", "priors"]
