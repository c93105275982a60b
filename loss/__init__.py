"""Training losses by name: ``build_loss(name, cfg, num_classes)``.

A loss is called as ``criterion(outputs, x, labels)`` with the dict that ``model(x,
return_aux=True)`` returns and the clean input, and returns every term by name plus ``total``; the
trainer logs each term (``TAGS`` gives the TensorBoard tag of a term, else its own name). A model
class names its loss (``Model.loss``). Labels: 0 = real, 1 = fake (SPEC section 2).

- ``RecceLoss``: classification (flooded) + reconstruction + metric learning: ``cls``, ``cls_raw``,
  ``recons``, ``metric``, ``total``.
- ``ClassificationLoss``: the plain classification loss of a baseline: ``cls``, ``total``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError

EPS = 1e-6
LOSSES = ("binary_ce", "cross_entropy")


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        reduction: str = "mean", kind: str | None = None) -> torch.Tensor:
    """``binary_ce`` (BCE-with-logits on one logit) or ``cross_entropy`` (two logits); ``kind``
    None picks by the number of logits (evaluation's LogLoss)."""
    kind = kind or ("binary_ce" if logits.shape[1] == 1 else "cross_entropy")
    if (kind == "binary_ce") != (logits.shape[1] == 1):
        raise UserError(f"config.loss: {kind} does not fit a model with {logits.shape[1]} "
                        f"logit(s) (binary_ce needs 1, cross_entropy 2)")
    if kind == "binary_ce":
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


def _check_kind(loss, num_classes):
    if loss not in LOSSES:
        raise UserError(f"config.loss: unknown loss {loss!r} (known: {', '.join(LOSSES)})")
    expected = "binary_ce" if num_classes == 1 else "cross_entropy"
    if loss != expected:
        raise UserError(f"config.loss: {loss!r} does not fit model.num_classes {num_classes} "
                        f"(use {expected!r})")
    return loss


class RecceLoss(nn.Module):
    """L = flood(L_cls) + lambda_1 * L_r + lambda_2 * L_m, every term returned by name."""

    # the original release's TensorBoard tags
    TAGS = {"total": "Loss", "recons": "Recons_Loss", "metric": "Contra_Loss"}

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
        loss = _check_kind(cfg.get("loss", "binary_ce"), num_classes)
        return cls(cfg.get("lambda_1", 0.1), cfg.get("lambda_2", 0.1),
                   cfg.get("flood_level", 0.04), loss)

    def forward(self, outputs: dict, x: torch.Tensor, labels: torch.Tensor) -> dict:
        cls_raw = classification_loss(outputs["logits"], labels, kind=self.loss)
        cls = flood(cls_raw, self.flood_level)
        recons = reconstruction_loss(outputs["recons"], x, labels)
        metric = metric_loss(outputs["corr"], labels)
        total = cls + self.lambda_1 * recons + self.lambda_2 * metric
        return {"cls": cls, "cls_raw": cls_raw, "recons": recons, "metric": metric, "total": total}


class ClassificationLoss(nn.Module):
    """The plain classification loss (BCE for one logit, cross-entropy for two): a baseline's."""

    TAGS = {"total": "Loss"}

    def __init__(self, loss: str = "binary_ce"):
        super().__init__()
        if loss not in LOSSES:
            raise UserError(f"config.loss: unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        self.loss = loss

    @classmethod
    def from_config(cls, cfg: dict, num_classes: int) -> "ClassificationLoss":
        return cls(_check_kind(cfg.get("loss", "binary_ce"), num_classes))

    def forward(self, outputs: dict, x: torch.Tensor, labels: torch.Tensor) -> dict:
        cls = classification_loss(outputs["logits"], labels, kind=self.loss)
        return {"cls": cls, "total": cls}


CRITERIA = {"RecceLoss": RecceLoss, "ClassificationLoss": ClassificationLoss}


def register_loss(cls):
    """Make a loss class (with ``from_config(config_section, num_classes)``) known by its name."""
    CRITERIA[cls.__name__] = cls
    return cls


def build_loss(name: str, cfg: dict, num_classes: int) -> nn.Module:
    """The loss ``name`` (a model's ``loss`` attribute) from the ``config`` section."""
    if name not in CRITERIA:
        raise UserError(f"unknown loss: {name!r} (known: {', '.join(CRITERIA)})")
    return CRITERIA[name].from_config(cfg, num_classes)
