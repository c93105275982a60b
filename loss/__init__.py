"""Reusable loss terms and the loss registry.

A detector builds its own training loss (``Detector.build_loss``), called as
``criterion(outputs, x, labels)`` with the dict that ``det(x, return_aux=True)`` returns and the
clean input; it returns every term by name plus ``total``, and the trainer logs each term (``TAGS``
gives the TensorBoard tag of a term, else its own name). Labels: 0 = real, 1 = fake, as in
the original. The terms here are shared: classification (BCE or cross-entropy), flooding, RECCE's
reconstruction and metric-learning terms. ``LOSSES`` holds the losses a detector can name
(``Detector.loss``): ``ClassificationLoss`` here, ``RecceLoss`` with RECCE (model/recce.py).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError
from registry import Registry

EPS = 1e-6
KINDS = ("binary_ce", "cross_entropy")
LOSSES = Registry("loss", "Detector.loss")
register_loss = LOSSES.register


def check_kind(kind, num_classes, where="loss.kind") -> str:
    """The one check of a loss kind (``loss.kind``, the original configs' ``config.loss``)
    against the number of logits; returns the kind."""
    if kind not in KINDS:
        raise UserError(f"{where}: unknown loss {kind!r} (known: {', '.join(KINDS)})")
    expected = "binary_ce" if num_classes == 1 else "cross_entropy"
    if kind != expected:
        raise UserError(f"{where}: {kind!r} does not fit model.num_classes {num_classes} "
                        f"(use {expected!r})")
    return kind


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        reduction: str = "mean", kind: str | None = None) -> torch.Tensor:
    """``binary_ce`` (BCE-with-logits on one logit) or ``cross_entropy`` (two logits); ``kind``
    None picks by the number of logits (evaluation's LogLoss). The kind was checked against the
    model when the loss was built (``check_kind``)."""
    kind = kind or ("binary_ce" if logits.shape[1] == 1 else "cross_entropy")
    if kind == "binary_ce":
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype),
                                                  reduction=reduction)
    return F.cross_entropy(logits, labels.long(), reduction=reduction)


def flood(loss: torch.Tensor, level: float) -> torch.Tensor:
    """Flooding (Ishida et al., 2020): |L - b| + b keeps the training loss from going below b."""
    return (loss - level).abs() + level


def reconstruction_loss(recons: torch.Tensor, x: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the real samples only; 0 when the batch has none.

    The error of the fake samples is masked out (``torch.where``) and the sum divided by the real
    samples' element count (at least 1), rather than selecting ``recons[labels == 0]``: nothing
    is read back to the host (a GPU's queue is never stalled by the loss), and the graph stays
    connected (DDP's gradient hooks) when the batch has no real sample. The gradient is the
    original's bit for bit (sign(recons - x) / count on the real samples, 0 elsewhere), so
    training follows the same path; the value may differ in the last bit (summation order).
    """
    real = labels == 0
    mask = real.view(-1, *([1] * (recons.dim() - 1)))
    err = (recons - x).abs()
    total = torch.where(mask, err, torch.zeros((), dtype=err.dtype, device=err.device)).sum()
    return total / (real.sum() * math.prod(recons.shape[1:])).clamp(min=1)


def metric_loss(corr: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the correlation matrices of max(0, 1 - mean_same + mean_diff).

    "same" pairs are two different real samples, "different" pairs one real and one fake.
    """
    real = labels == 0
    fake = ~real
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    same = (real[:, None] & real[None, :]) & ~eye
    diff = (real[:, None] & fake[None, :]) | (fake[:, None] & real[None, :])
    same_f, diff_f = same.to(corr.dtype), diff.to(corr.dtype)
    mean_same = (corr * same_f).sum(dim=(1, 2)) / (same_f.sum() + EPS)  # one per matrix
    mean_diff = (corr * diff_f).sum(dim=(1, 2)) / (diff_f.sum() + EPS)
    return torch.clamp(1 - mean_same + mean_diff, min=0).sum()


@register_loss
class ClassificationLoss(nn.Module):
    """The plain classification loss (BCE for one logit, cross-entropy for two): a baseline's."""

    TAGS = {"total": "Loss"}

    def __init__(self, loss: str = "binary_ce"):
        super().__init__()
        self.loss = loss

    @classmethod
    def from_config(cls, cfg: dict) -> "ClassificationLoss":
        """From a detector's checked ``loss:`` section (its ``kind``)."""
        return cls(cfg["kind"])

    def forward(self, outputs: dict, x: torch.Tensor, labels: torch.Tensor) -> dict:
        cls = classification_loss(outputs["logits"], labels, kind=self.loss)
        return {"cls": cls, "total": cls}


def build_loss(name: str, cfg: dict, num_classes: int) -> nn.Module:
    """The registered loss ``name`` from a ``loss:`` section, its ``kind`` (default: the one that
    fits ``num_classes``) checked against the number of logits."""
    kind = cfg.get("kind", "binary_ce" if num_classes == 1 else "cross_entropy")
    return LOSSES.get(name).from_config({**cfg, "kind": check_kind(kind, num_classes)})
