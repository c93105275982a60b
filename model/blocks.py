"""Building blocks of RECCE: the decoder stages, graph reasoning and guided attention.

Module names and registration order follow the original release exactly, so that its checkpoints
load with ``strict=True`` (see ``tests/fixtures/recce_state_dict.tsv``).
"""
import importlib

import torch
import torch.nn as nn
import torch.nn.functional as F

# timm.models.xception is shadowed by the function of that name in timm.models: import the module
_xception = importlib.import_module("timm.models.xception")
SeparableConv2d = _xception.SeparableConv2d  # depthwise `conv1` + pointwise `pointwise`, no bias
Block = _xception.Block  # the Xception block (rep / skip / skipbn)


def upsample_stage(in_ch: int, out_ch: int) -> nn.Sequential:
    """Nearest x2 upsampling, separable 3x3 conv, BN, ReLU (decoder1, decoder3, decoder5)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        SeparableConv2d(in_ch, out_ch, 3, 1, 1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _patches(x: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """Cut N x C x (size*h) x (size*w) into non-overlapping patches: N x (h*w) x size^2 x C.

    The patch order is that of ``nn.Unfold(size, stride=size)``: positions row-major, and inside a
    patch row then column, so trained weights mean what they meant in the original.
    """
    n, c = x.shape[:2]
    x = x.reshape(n, c, h, size, w, size)  # N C h kr w kc
    x = x.permute(0, 2, 4, 3, 5, 1)  # N h w kr kc C
    return x.reshape(n, h * w, size * size, c)


class GraphReasoning(nn.Module):
    """Fuses the encoder's E7 with the decoder's D2 and D4 by attention over local patches.

    Every position p of E7 is a node linked to the 2x2 patch of D2 and the 4x4 patch of D4 at the
    same place; the arithmetic is identical at every position, so it runs batched over all of them.
    """

    def __init__(self, va_in=728, va_out=256, vb_in=256, vb_out=256, vc_in=128, vc_out=256,
                 spatial_ratio=(2, 4), drop_rate=0.2):
        super().__init__()
        self.ratio = tuple(spatial_ratio)
        self.va_embedding = nn.Sequential(
            nn.Conv2d(va_in, va_out, 1, bias=False),
            nn.ReLU(True),
            nn.Conv2d(va_out, va_out, 1, bias=False),
        )
        self.va_gated_b = nn.Sequential(nn.Conv2d(va_in, va_out, 1, bias=False), nn.Sigmoid())
        self.va_gated_c = nn.Sequential(nn.Conv2d(va_in, va_out, 1, bias=False), nn.Sigmoid())
        self.vb_embedding = nn.Sequential(
            nn.Linear(vb_in, vb_out, bias=False),
            nn.ReLU(True),
            nn.Linear(vb_out, vb_out, bias=False),
        )
        self.vc_embedding = nn.Sequential(
            nn.Linear(vc_in, vc_out, bias=False),
            nn.ReLU(True),
            nn.Linear(vc_out, vc_out, bias=False),
        )
        # Linear(512 -> 1) over [a_p ; b_pk], ReLU, softmax over the patch (dim of k)
        self.reweight_ab = nn.Sequential(nn.Linear(va_out + vb_out, 1, bias=False))
        self.reweight_ac = nn.Sequential(nn.Linear(va_out + vc_out, 1, bias=False))
        self.reproject = nn.Sequential(
            nn.Conv2d(va_out + vb_out + vc_out, va_in, 1, bias=False),
            nn.ReLU(True),
            nn.Conv2d(va_in, va_in, 1, bias=False),
            nn.Dropout(drop_rate),
        )
        self.va_out = va_out

    def _aggregate(self, a, patches, embedding, reweight, gate):
        """Attention of node a_p over its patch vectors, weighted sum, gate. a: N P Ca,
        patches: N P K Cin, gate: N P Cv -> N P Cv.

        The embedding's last Linear (W2) is linear, so it is moved past the weighted sum:
        sum_k w_k W2 r_k = W2 sum_k w_k r_k, and the score's part w_v . (W2 r_k) = (W2^T w_v) . r_k.
        W2 then runs once per position instead of once per patch vector (16x fewer for D4),
        with the same result up to float rounding.
        """
        w1, w2 = embedding[0].weight, embedding[2].weight  # Cmid x Cin, Cv x Cmid
        hidden = F.relu(patches @ w1.t())  # N P K Cmid
        weight = reweight[0].weight[0]  # Ca + Cv
        score_a = a @ weight[: self.va_out]  # N P
        score_v = hidden @ (weight[self.va_out:] @ w2)  # N P K
        w = torch.softmax(F.relu(score_v + score_a.unsqueeze(-1)), dim=-1)  # N P K
        agg = (w.unsqueeze(-2) @ hidden).squeeze(-2) @ w2.t()  # N P Cv
        return agg * gate

    def forward(self, vert_a, vert_b, vert_c):
        n, _, h, w = vert_a.shape  # E7: N x 728 x h x w
        rb, rc = self.ratio
        if vert_b.shape[-2:] != (rb * h, rb * w) or vert_c.shape[-2:] != (rc * h, rc * w):
            raise ValueError(
                f"graph reasoning needs D2 and D4 at {rb}x and {rc}x the size of E7 {h}x{w}, "
                f"got {tuple(vert_b.shape[-2:])} and {tuple(vert_c.shape[-2:])}")

        def seq(t):  # N C h w -> N P C (a view when t is channels-last)
            return t.permute(0, 2, 3, 1).reshape(n, h * w, t.shape[1])

        a = seq(self.va_embedding(vert_a))  # N P 256
        gate_b = 1 - seq(self.va_gated_b(vert_a))  # N P 256
        gate_c = 1 - seq(self.va_gated_c(vert_a))  # N P 256
        agg_b = self._aggregate(a, _patches(vert_b, rb, h, w), self.vb_embedding,
                                self.reweight_ab, gate_b)  # N P 256 (patches N P 4 256)
        agg_c = self._aggregate(a, _patches(vert_c, rc, h, w), self.vc_embedding,
                                self.reweight_ac, gate_c)  # N P 256 (patches N P 16 128)
        fused = torch.sigmoid(torch.cat([agg_b, agg_c, a], dim=-1))  # N P 768
        fused = fused.reshape(n, h, w, -1).permute(0, 3, 1, 2)  # N 768 h w, channels-last
        return self.reproject(fused)  # N 728 h w


def loop_reasoning_forward(self, vert_a, vert_b, vert_c):
    """``GraphReasoning.forward`` the original release's way: unfold, then a Python loop over the
    positions of E7 (the same numbers, far slower). The benchmarks time it against the batched
    forward: ``net.reasoning.forward = types.MethodType(loop_reasoning_forward, net.reasoning)``."""
    n, _, h, w = vert_a.shape
    rb, rc = self.ratio
    unfold_b = torch.nn.Unfold(rb, stride=rb)(vert_b).view(n, vert_b.shape[1], rb * rb, h * w)
    unfold_c = torch.nn.Unfold(rc, stride=rc)(vert_c).view(n, vert_c.shape[1], rc * rc, h * w)
    a_emb = self.va_embedding(vert_a).flatten(2)
    gate_b = 1 - self.va_gated_b(vert_a).flatten(2)
    gate_c = 1 - self.va_gated_c(vert_a).flatten(2)
    nodes = []
    for p in range(h * w):
        a = a_emb[:, :, p]
        parts = []
        for unfold, emb, rew, gate in ((unfold_b, self.vb_embedding, self.reweight_ab, gate_b),
                                       (unfold_c, self.vc_embedding, self.reweight_ac, gate_c)):
            v = emb(unfold[:, :, :, p].transpose(1, 2))
            logit = rew[0](torch.cat([a[:, None].expand(-1, v.shape[1], -1), v], dim=-1))
            parts.append((torch.softmax(F.relu(logit), dim=1) * v).sum(1) * gate[:, :, p])
        nodes.append(torch.sigmoid(torch.cat(parts + [a], dim=1)))
    return self.reproject(torch.stack(nodes, dim=-1).view(n, -1, h, w))


class GuidedAttention(nn.Module):
    """Re-weights F8 by a mask computed from the reconstruction difference |x - recons|."""

    def __init__(self, depth=728, drop_rate=0.2):
        super().__init__()
        self.gated = nn.Sequential(
            nn.Conv2d(3, 3, 3, padding=1, bias=False),
            nn.ReLU(True),
            nn.Conv2d(3, 1, 1, bias=False),
            nn.Sigmoid(),
        )
        self.h = nn.Sequential(
            nn.Conv2d(depth, depth, 1, bias=False),
            nn.BatchNorm2d(depth),
            nn.ReLU(True),
        )
        self.dropout = nn.Dropout(drop_rate)

    def forward(self, x, recons, feat):
        residual = torch.abs(x - recons)
        residual = F.interpolate(residual, size=feat.shape[-2:], mode="bilinear",
                                 align_corners=True)
        mask = self.gated(residual)  # N 1 h w
        return mask * self.h(feat) + self.dropout(feat)
