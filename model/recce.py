"""RECCE: end-to-end reconstruction-classification learning (Cao et al., CVPR 2022).

An Xception encoder (timm's ``legacy_xception``) is cut in two: its first four blocks feed a
reconstruction decoder trained on real faces, and the rest of it classifies the image, helped by
graph reasoning over encoder and decoder features and by an attention map drawn from the
reconstruction error; ``Recce.forward`` follows the paper's forward pass step by step.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from loss import classification_loss, flood, metric_loss, reconstruction_loss, register_loss

from .blocks import Block, GraphReasoning, GuidedAttention, upsample_stage
from .detector import Detector, InputSpec, register_detector
from .pretrained import xception_encoder

# Input normalization of every RECCE config: mean = std = 0.5, so pixels lie in [-1, 1].
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
MIN_INPUT_SIZE = 7  # the smallest side the Xception stem (two valid 3x3 convs, stride 2) accepts
NOISE_STD = 1e-6


def correlation(feat: torch.Tensor) -> torch.Tensor:
    """N x C x h x w -> N x N matrix (z z^T + 1) / 2 of the L2-normalized pooled features."""
    z = F.normalize(feat.mean(dim=(2, 3)), p=2, dim=1)
    return (z @ z.t() + 1) / 2


@register_loss
class RecceLoss(nn.Module):
    """L = flood(L_cls) + lambda_1 * L_r + lambda_2 * L_m, every term returned by name."""

    # the original release's TensorBoard tags
    TAGS = {"total": "Loss", "recons": "Recons_Loss", "metric": "Contra_Loss"}

    def __init__(self, lambda_1: float = 0.1, lambda_2: float = 0.1, flood_level: float = 0.04,
                 loss: str = "binary_ce"):
        super().__init__()
        self.lambda_1 = float(lambda_1)
        self.lambda_2 = float(lambda_2)
        self.flood_level = float(flood_level)
        self.loss = loss

    @classmethod
    def from_config(cls, cfg: dict) -> "RecceLoss":
        """From RECCE's checked ``loss:`` section (kind, lambda_1, lambda_2, flood_level)."""
        return cls(cfg["lambda_1"], cfg["lambda_2"], cfg["flood_level"], cfg["kind"])

    def forward(self, outputs: dict, x: torch.Tensor, labels: torch.Tensor) -> dict:
        cls_raw = classification_loss(outputs["logits"], labels, kind=self.loss)
        cls = flood(cls_raw, self.flood_level)
        recons = reconstruction_loss(outputs["recons"], x, labels)
        metric = metric_loss(outputs["corr"], labels)
        total = cls + self.lambda_1 * recons + self.lambda_2 * metric
        return {"cls": cls, "cls_raw": cls_raw, "recons": recons, "metric": metric, "total": total}


@register_detector
class Recce(Detector):
    """RECCE face-forgery detector.

    ``model(x)`` returns the logits (N x num_classes). ``model(x, return_aux=True)`` returns a dict
    with ``logits``, ``recons`` (N x 3 x H x W) and ``corr`` (three N x N correlation matrices of
    E4, D2, D4), which is what the losses need.
    """

    # 299 px, pixels in [-1, 1] (WildDeepfake's configs say 224 px: the checkpoint keeps that)
    default_spec = InputSpec((299, 299), MEAN, STD)
    pretrained_spec = default_spec  # timm's legacy_xception ImageNet weights: mean = std = 0.5
    min_input_size = MIN_INPUT_SIZE
    has_reconstruction = True  # return_aux gives "recons": the heat map of --visualize
    loss = "RecceLoss"
    # its loss: L = flood(L_cls) + lambda_1 * L_r + lambda_2 * L_m (the original's defaults)
    loss_defaults = {"lambda_1": 0.1, "lambda_2": 0.1, "flood_level": 0.04}
    loss_kinds = {"lambda_1": "nonneg", "lambda_2": "nonneg", "flood_level": "nonneg"}
    # Grad-CAM explains the encoder's last feature map (conv4, bn4, ReLU: 2048 channels at 1/32 of
    # the input, 10 x 10 at 299 px), the one the head pools
    cam_layer = "encoder.act4"

    def __init__(self, num_classes: int = 1, drop_rate: float = 0.2, pretrained=False,
                 channels_last: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.channels_last = channels_last
        # Registration order matters: it fixes the state_dict order of the original release.
        self.encoder = xception_encoder(pretrained)
        # The encoder's ImageNet head is kept for checkpoint compatibility but never used.
        for p in self.encoder.fc.parameters():
            p.requires_grad_(False)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.encoder.num_features, num_classes)
        self.attention = GuidedAttention(depth=728, drop_rate=drop_rate)
        self.reasoning = GraphReasoning(728, 256, 256, 256, 128, 256, (2, 4), drop_rate)
        self.decoder1 = upsample_stage(728, 256)
        self.decoder2 = Block(256, 256, 3, 1)
        self.decoder3 = upsample_stage(256, 128)
        self.decoder4 = Block(128, 128, 3, 1)
        self.decoder5 = upsample_stage(128, 64)
        self.decoder6 = nn.Sequential(nn.Conv2d(64, 3, 1, bias=False), nn.Tanh())
        if channels_last:
            # NHWC is much faster for this network's depthwise and 1x1 convs on CPU and GPU alike;
            # it changes the memory layout only, never the state_dict names, shapes or numbers.
            self.to(memory_format=torch.channels_last)

    def _check_input(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Recce expects an N x 3 x H x W batch, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"Recce needs inputs of at least {MIN_INPUT_SIZE} x {MIN_INPUT_SIZE} "
                             f"pixels (the Xception stem), got {x.shape[-2]} x {x.shape[-1]}")

    def _add_noise(self, x: torch.Tensor) -> torch.Tensor:
        """Training only: half of the samples, chosen at random, get N(0, 1e-6) noise, clipped."""
        chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
        noisy = torch.clamp(x + torch.randn_like(x) * NOISE_STD, -1.0, 1.0)
        return torch.where(chosen, noisy, x)

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        self._check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        enc = self.encoder
        h = self._add_noise(x) if self.training else x
        h = enc.act1(enc.bn1(enc.conv1(h)))  # N 32 (H-3)/2+1
        h = enc.act2(enc.bn2(enc.conv2(h)))  # N 64
        h = enc.block1(h)  # N 128 /4
        h = enc.block2(h)  # N 256 /8
        h = enc.block3(h)  # N 728 /16
        e4 = enc.block4(h)  # N 728 h w   (19 x 19 at 299)

        d = self.decoder1(self.dropout(e4))  # N 256 2h 2w
        d2 = self.decoder2(d)  # N 256 2h 2w
        d = self.decoder3(d2)  # N 128 4h 4w
        d4 = self.decoder4(d)  # N 128 4h 4w
        d = self.decoder5(d4)  # N 64 8h 8w
        d = self.decoder6(d)  # N 3 8h 8w
        recons = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=True)  # N 3 H W

        e7 = enc.block7(enc.block6(enc.block5(e4)))  # N 728 h w
        fusion = self.reasoning(e7, d2, d4) + e7  # N 728 h w
        f8 = enc.block8(fusion)  # N 728 h w
        h = self.attention(x, recons, f8)  # N 728 h w
        h = enc.block12(enc.block11(enc.block10(enc.block9(h))))  # N 1024 h/2 w/2
        h = enc.act3(enc.bn3(enc.conv3(h)))  # N 1536
        h = enc.act4(enc.bn4(enc.conv4(h)))  # N 2048
        h = self.dropout(h.mean(dim=(2, 3)))  # N 2048
        logits = self.fc(h)  # N num_classes
        if not return_aux:
            return logits
        corr = torch.stack([correlation(e4), correlation(d2), correlation(d4)])  # 3 N N
        return {"logits": logits, "recons": recons.contiguous(), "corr": corr}
