"""The Xception baseline of every table of the RECCE paper: timm's ``legacy_xception`` with its head
replaced by ``num_classes`` logits and dropout before it (as RECCE's head has), trained with the
plain classification loss."""
import torch
import torch.nn as nn

from .detector import Detector, InputSpec, register_detector
from .pretrained import xception_encoder

MIN_INPUT_SIZE = 7


@register_detector
class Xception(Detector):
    """``model(x)`` -> logits (N x num_classes); ``model(x, return_aux=True)`` -> ``{"logits"}``."""

    # the RECCE configs' size and normalisation, so that both read the same data
    default_spec = InputSpec((299, 299), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    pretrained_spec = default_spec  # timm's legacy_xception ImageNet weights
    min_input_size = MIN_INPUT_SIZE
    has_reconstruction = False
    loss = "ClassificationLoss"
    # Grad-CAM explains the encoder's last feature map (conv4, bn4, ReLU: 2048 channels at 1/32 of
    # the input, 10 x 10 at 299 px), the one the head pools
    cam_layer = "encoder.act4"

    def __init__(self, num_classes: int = 1, drop_rate: float = 0.2, pretrained=False,
                 channels_last: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.channels_last = channels_last
        self.encoder = xception_encoder(pretrained)
        self.encoder.reset_classifier(0)  # features only; the head is ours
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.encoder.num_features, num_classes)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"Xception expects N x 3 x H x W with H, W >= {MIN_INPUT_SIZE}, "
                             f"got {tuple(x.shape)}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.encoder.forward_features(x)  # N 2048 h w
        logits = self.fc(self.dropout(h.mean(dim=(2, 3))))  # N num_classes
        return {"logits": logits} if return_aux else logits
