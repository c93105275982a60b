"""A user's own detector, loss and dataset layout in one file, known to the project only through a
config's ``config.imports`` (or ``--import`` on the command line): the acceptance test of the
detector contract (tests/test_registry.py) puts it through every entry point."""
import os

import torch.nn as nn
import torch.nn.functional as F

from dataset import Item, Layout, register_layout
from loss import classification_loss
from model import Detector, InputSpec, register_detector

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyLoss(nn.Module):
    """Its own terms: classification plus ``logit_weight`` x the mean squared logit."""

    TAGS = {"total": "Loss"}

    def __init__(self, weight, kind):
        super().__init__()
        self.weight, self.kind = weight, kind

    def forward(self, outputs, x, labels):
        cls = classification_loss(outputs["logits"], labels, kind=self.kind)
        l2 = outputs["logits"].pow(2).mean()
        return {"cls": cls, "logit_l2": l2, "total": cls + self.weight * l2}


@register_detector
class TinyDetector(Detector):
    """Its own constructor argument (``width``: the channels of its one conv) and its own loss
    weight (``logit_weight`` in the ``loss:`` section)."""

    default_spec = InputSpec((96, 96), IMAGENET_MEAN, IMAGENET_STD)
    min_input_size = 8
    loss_defaults = {"logit_weight": 0.1}
    loss_kinds = {"logit_weight": "nonneg"}

    def __init__(self, num_classes=1, drop_rate=0.0, pretrained=False, width: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, width, 5, stride=2)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x, return_aux=False):
        logits = self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))
        return {"logits": logits} if return_aux else logits

    def build_loss(self, cfg=None):
        from model.detector import loss_arguments
        cfg = loss_arguments(type(self), cfg, self.num_classes)  # the trainer's is checked already
        return TinyLoss(cfg["logit_weight"], cfg["kind"])


def _read(cfg, rng):
    """``root/<r|f>_<video>_<frame>.png``: the label is in the file name."""
    root = cfg["root"]
    names = sorted(f for f in os.listdir(root) if f.endswith(".png"))
    return [Item(os.path.join(root, f), int(f[0] == "f"), f.split("_")[1]) for f in names
            if cfg.get("only") in (None, f[0])]


register_layout(Layout("TinyLayout", _read, keys={"only": ("r", "f")}))
