"""Detectors by name: ``build_detector(model_cfg)`` from the ``model`` section of a config, and
``load_detector(path)`` from any checkpoint (model/checkpoint.py).

The contract every detector keeps is ``model.detector.Detector`` (network, loss, input spec,
``predict``). A new detector is one file with its class decorated by ``@register_detector``,
imported through the config's ``config.imports`` (see docs/extending.md).
"""
from .checkpoint import DEFAULT_MODEL
from .detector import (
    DETECTORS,
    Detector,
    InputSpec,
    build_detector,
    log_odds,
    probabilities,
    register_detector,
    scores,
)
from .recce import MEAN, STD, Recce, RecceLoss
from .xception import Xception

__all__ = ["DEFAULT_MODEL", "DETECTORS", "Detector", "InputSpec", "MEAN", "Recce", "RecceLoss",
           "STD", "Xception", "build_detector", "log_odds", "probabilities",
           "register_detector", "scores"]
