"""Detectors by name: ``build_detector(model_cfg)`` from the ``model`` section of a config, and
``load_detector(path)`` from any checkpoint (model/checkpoint.py).

The contract every detector keeps is ``model.detector.Detector`` (network, loss, input spec,
``predict``). A new detector is one file with its class decorated by ``@register_detector``,
imported through the config's ``config.imports`` (see the README).
"""
from .detector import (DETECTORS, Detector, InputSpec, build_detector, detector_class, log_odds,
                       probabilities, register_detector, scores)
from .recce import MEAN, STD, Recce, RecceLoss
from .xception import Xception

# The model of a checkpoint that does not say (a bare state dict, the original release's .bin):
# the original release only ever held RECCE.
DEFAULT_MODEL = "Recce"

__all__ = ["DEFAULT_MODEL", "DETECTORS", "Detector", "InputSpec", "MEAN", "Recce", "RecceLoss",
           "STD", "Xception", "build_detector", "detector_class", "log_odds", "probabilities",
           "register_detector", "scores"]
