"""RetinaFace (Deng et al., CVPR 2020) as in the widely used PyTorch release
(biubug6/Pytorch_Retinaface), which the RECCE authors used to crop faces: the network, its prior
boxes, decoding, score threshold and NMS, so that its public checkpoints (mobilenet0.25_Final.pth,
Resnet50_Final.pth) load and give that release's detections.

Written from the published facts of that release (summarised in tests/fixtures/README.md); no code
of it is here.
"""
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError

from .base import Detection

CONFIGS = {
    "mobilenet0.25": {"in_channel": 32, "out_channel": 64},
    "resnet50": {"in_channel": 256, "out_channel": 256},
}
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)
WEIGHTS_HELP = ("download mobilenet0.25_Final.pth or Resnet50_Final.pth from the "
                "Pytorch_Retinaface release (github.com/biubug6/Pytorch_Retinaface, README "
                "'pretrained model') and give it as the weights, or use the dlib face detector, "
                "which needs no weights file")


def _conv_bn(inp, oup, k, stride, slope, act=True):
    layers = [nn.Conv2d(inp, oup, k, stride, k // 2, bias=False), nn.BatchNorm2d(oup)]
    if act:
        layers.append(nn.LeakyReLU(negative_slope=slope, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(inp, oup, stride, slope=0.1):
    """Depthwise 3x3 + BN + leaky, pointwise 1x1 + BN + leaky (Sequential indices 0,1,3,4)."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=slope, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=slope, inplace=True),
    )


class MobileNetV1Body(nn.Module):
    """mobilenet0.25 up to its three taps (strides 8, 16, 32: 64, 128, 256 channels)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 3, 2, 0.1), _conv_dw(8, 16, 1), _conv_dw(16, 32, 2), _conv_dw(32, 32, 1),
            _conv_dw(32, 64, 2), _conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2),
                                    *[_conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))

    def forward(self, x):
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        return [c3, c4, self.stage3(c4)]


class ResNet50Body(nn.Module):
    """torchvision's ResNet-50 (v1.5) up to layer4; taps layer2, layer3, layer4."""

    def __init__(self):
        super().__init__()
        import torchvision
        net = torchvision.models.resnet50(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class FPN(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        slope = 0.1 if out_channels <= 64 else 0.0
        self.output1 = _conv_bn(in_channels[0], out_channels, 1, 1, slope)
        self.output2 = _conv_bn(in_channels[1], out_channels, 1, 1, slope)
        self.output3 = _conv_bn(in_channels[2], out_channels, 1, 1, slope)
        self.merge1 = _conv_bn(out_channels, out_channels, 3, 1, slope)
        self.merge2 = _conv_bn(out_channels, out_channels, 3, 1, slope)

    def forward(self, feats):
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        # legacy 'nearest' to an exact size (not a 2x repeat for odd sizes)
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        slope = 0.1 if out_channels <= 64 else 0.0
        self.conv3X3 = _conv_bn(in_channels, out_channels // 2, 3, 1, slope, act=False)
        self.conv5X5_1 = _conv_bn(in_channels, out_channels // 4, 3, 1, slope)
        self.conv5X5_2 = _conv_bn(out_channels // 4, out_channels // 4, 3, 1, slope, act=False)
        self.conv7X7_2 = _conv_bn(out_channels // 4, out_channels // 4, 3, 1, slope)
        self.conv7x7_3 = _conv_bn(out_channels // 4, out_channels // 4, 3, 1, slope, act=False)

    def forward(self, x):
        a = self.conv3X3(x)
        t = self.conv5X5_1(x)
        b = self.conv5X5_2(t)
        c = self.conv7x7_3(self.conv7X7_2(t))
        return F.relu(torch.cat([a, b, c], dim=1))


class _Head(nn.Module):
    def __init__(self, in_channels, per_anchor, anchors=2):
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(in_channels, anchors * per_anchor, 1)

    def forward(self, x):  # N, A*k, H, W -> N, H*W*A, k (channel c belongs to anchor c // k)
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.per_anchor)


class RetinaFaceNet(nn.Module):
    """Returns the raw outputs: loc N x P x 4, conf N x P x 2 (softmaxed), landms N x P x 10."""

    def __init__(self, backbone="mobilenet0.25"):
        super().__init__()
        if backbone not in CONFIGS:
            raise UserError(f"unknown RetinaFace backbone {backbone!r} "
                            f"(known: {', '.join(CONFIGS)})")
        cfg = CONFIGS[backbone]
        self.body = MobileNetV1Body() if backbone == "mobilenet0.25" else ResNet50Body()
        c, out = cfg["in_channel"], cfg["out_channel"]
        self.fpn = FPN([c * 2, c * 4, c * 8], out)
        self.ssh1, self.ssh2, self.ssh3 = SSH(out, out), SSH(out, out), SSH(out, out)
        self.ClassHead = nn.ModuleList([_Head(out, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(out, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(out, 10) for _ in range(3)])

    def forward(self, x):
        fpn = self.fpn(self.body(x))
        feats = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landms


def priors(height, width):
    """(cx, cy, w, h) normalized by the image size; order: level, row, column, min size."""
    rows = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        i, j, k = np.meshgrid(np.arange(fh), np.arange(fw), np.arange(len(sizes)), indexing="ij")
        m = np.asarray(sizes, np.float64)[k]
        rows.append(np.stack([(j + 0.5) * step / width, (i + 0.5) * step / height,
                              m / width, m / height], axis=-1).reshape(-1, 4))
    return torch.from_numpy(np.concatenate(rows)).float()


def decode(loc, landms, prior, height, width):
    """Raw outputs of one image -> boxes (x1, y1, x2, y2) and 5 landmarks, in pixels."""
    v0, v1 = VARIANCE
    centers = prior[:, :2] + loc[:, :2] * v0 * prior[:, 2:]
    sizes = prior[:, 2:] * torch.exp(loc[:, 2:] * v1)
    x1y1 = centers - sizes / 2
    boxes = torch.cat([x1y1, x1y1 + sizes], dim=1) * torch.tensor([width, height, width, height])
    points = [prior[:, :2] + landms[:, 2 * k:2 * k + 2] * v0 * prior[:, 2:] for k in range(5)]
    landmarks = torch.cat(points, dim=1) * torch.tensor([width, height] * 5)
    return boxes, landmarks


def nms(dets, threshold):
    """Greedy NMS with the legacy +1 pixel area convention; suppress when IoU > threshold."""
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(iou <= threshold)[0] + 1]
    return keep


def postprocess(loc, conf, landms, height, width, score_threshold=0.02, top_k=5000,
                nms_threshold=0.4, keep_top_k=750):
    """Raw outputs of one image -> K x 15 [x1, y1, x2, y2, score, 5 x (x, y)] in pixels."""
    boxes, points = decode(loc, landms, priors(height, width), height, width)
    boxes, points = boxes.numpy(), points.numpy()
    scores = conf[:, 1].numpy()
    keep = np.where(scores > score_threshold)[0]
    boxes, points, scores = boxes[keep], points[keep], scores[keep]
    order = scores.argsort()[::-1][:top_k]
    boxes, points, scores = boxes[order], points[order], scores[order]
    dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
    keep = nms(dets, nms_threshold)
    dets, points = dets[keep][:keep_top_k], points[keep][:keep_top_k]
    return np.concatenate((dets, points), axis=1)


def preprocess(bgr: np.ndarray) -> torch.Tensor:
    """OpenCV BGR uint8 H x W x 3 -> 1 x 3 x H x W float, mean-subtracted, no scaling, no resize."""
    img = bgr.astype(np.float32) - np.asarray(BGR_MEAN, np.float32)
    return torch.from_numpy(img.transpose(2, 0, 1)).unsqueeze(0)


def load_retinaface_weights(net, path):
    """A public checkpoint, with or without the ``module.`` prefix (Resnet50_Final.pth has it)."""
    if not path or not os.path.isfile(path):
        raise UserError(f"RetinaFace weights not found: {path!r}; {WEIGHTS_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, ...: one line
        said = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot read RetinaFace weights {path}: {said}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not RetinaFace weights (no state dict of tensors in it: a "
                        f"{type(state).__name__}); {WEIGHTS_HELP}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape: another architecture
        raise UserError(f"{path} does not fit RetinaFace {type(net.body).__name__}: "
                        f"{' '.join(str(exc).split())[:200]} (another backbone?)") from None
    if missing or unexpected:
        raise UserError(f"{path} does not fit RetinaFace {type(net.body).__name__}: missing "
                        f"{missing[:3]}, unexpected {unexpected[:3]} (another backbone?)")
    return net


def backbone_of(weights, backbone=None):
    """The network of a weights file: ``backbone`` when given, else from the file name (the
    release's files are ``Resnet50_Final.pth`` and ``mobilenet0.25_Final.pth``)."""
    if backbone:
        return backbone
    return "resnet50" if "resnet" in os.path.basename(str(weights)).lower() else "mobilenet0.25"


class RetinaFaceFinder:
    """RetinaFace as a face finder: image in (RGB uint8), faces out, as the release's detect.py with
    its default thresholds."""

    name = "retinaface"

    def __init__(self, weights, backbone=None, device="cpu", score_threshold=0.02,
                 nms_threshold=0.4, min_score=0.6):
        net = RetinaFaceNet(backbone_of(weights, backbone))
        self.net = load_retinaface_weights(net, weights).to(device).eval()
        self.device = device
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_score = min_score  # the release's vis_thres: detections below it are not faces

    @torch.no_grad()
    def detect_raw(self, bgr):
        h, w = bgr.shape[:2]
        loc, conf, landms = self.net(preprocess(bgr).to(self.device))
        return postprocess(loc[0].cpu(), conf[0].cpu(), landms[0].cpu(), h, w,
                           self.score_threshold, 5000, self.nms_threshold, 750)

    def __call__(self, rgb):
        dets = self.detect_raw(np.ascontiguousarray(rgb[:, :, ::-1]))
        return [Detection(tuple(map(float, d[:4])), float(d[4]), d[5:15].reshape(5, 2).tolist())
                for d in dets if d[4] >= self.min_score]
