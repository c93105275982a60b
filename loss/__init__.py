"""RECCE's training loss: classification (flooded) + reconstruction + metric learning.

``RecceLoss(cfg)(outputs, labels)`` takes the dict that ``model(x, return_aux=True)`` returns plus
the clean input, and gives every term by name: ``cls``, ``recons``, ``metric`` and ``total``.
Labels: 0 = real, 1 = fake (SPEC section 2).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError

EPS = 1e-6
LOSSES = ("binary_ce", "cross_entropy")


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    """BCE-with-logits on one logit, cross-entropy on two or more."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype),
                                                  reduction=reduction)
    return F.cross_entropy(logits, labels.long(), reduction=reduction)


def flood(loss: torch.Tensor, level: float) -> torch.Tensor:
    """Flooding (Ishida et al., 2020): |L - b| + b keeps the training loss from going below b."""
    return (loss - level).abs() + level


def reconstruction_loss(recons: torch.Tensor, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the real samples only; 0 when the batch has none."""
    real = labels == 0
    if not bool(real.any()):
        return recons.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) connected
    return F.l1_loss(recons[real], x[real])


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


class RecceLoss(nn.Module):
    """L = flood(L_cls) + lambda_1 * L_r + lambda_2 * L_m, every term returned by name."""

    def __init__(self, lambda_1: float = 0.1, lambda_2: float = 0.1, flood_level: float = 0.04,
                 loss: str = "binary_ce"):
        super().__init__()
        if loss not in LOSSES:
            raise UserError(f"config.loss: unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        self.lambda_1 = float(lambda_1)
        self.lambda_2 = float(lambda_2)
        self.flood_level = float(flood_level)
        self.loss = loss

    @classmethod
    def from_config(cls, cfg: dict, num_classes: int) -> "RecceLoss":
        """From the ``config`` section; checks that the loss suits the number of logits."""
        loss = cfg.get("loss", "binary_ce")
        expected = "binary_ce" if num_classes == 1 else "cross_entropy"
        if loss != expected and loss in LOSSES:
            raise UserError(f"config.loss: {loss!r} does not fit model.num_classes {num_classes} "
                            f"(use {expected!r})")
        return cls(cfg.get("lambda_1", 0.1), cfg.get("lambda_2", 0.1),
                   cfg.get("flood_level", 0.04), loss)

    def forward(self, outputs: dict, x: torch.Tensor, labels: torch.Tensor) -> dict:
        cls_raw = classification_loss(outputs["logits"], labels)
        cls = flood(cls_raw, self.flood_level)
        recons = reconstruction_loss(outputs["recons"], x, labels)
        metric = metric_loss(outputs["corr"], labels)
        total = cls + self.lambda_1 * recons + self.lambda_2 * metric
        return {"cls": cls, "cls_raw": cls_raw, "recons": recons, "metric": metric, "total": total}
