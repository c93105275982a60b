"""One evaluation loop, used by validation and by test.py, on every rank with scores gathered."""
import numpy as np
import torch

from dataset.base import iterate_quietly
from loss import classification_loss

from . import distributed as dist


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Fake probability: sigmoid of one logit, softmax column 1 of two."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0].float())
    return torch.softmax(logits.float(), dim=1)[:, 1]


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """The logit of the fake probability: the logit itself, or l1 - l0 for two logits."""
    logits = logits.float()
    return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


def autocast(device, amp):
    if device.type == "cuda" and amp in ("fp16", "bf16"):
        return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def evaluate(model, loader, device, amp="none", bad_log=None, keep_first=0):
    """Scores of the whole dataset behind ``loader``, each sample once, on every rank.

    Returns a dict of numpy arrays ``index, label, prob, logit, loss`` and the list ``video``,
    ordered by dataset index (empty arrays when no image could be read). DistributedSampler pads
    the last round with repeats: they are dropped here.
    ``keep_first`` > 0 also returns the first inputs and reconstructions (for the figure).
    """
    was_training = model.training
    model.eval()
    rows = {"index": [], "label": [], "prob": [], "logit": [], "loss": [], "video": []}
    shown = None
    for batch in iterate_quietly(loader):
        if bad_log is not None:
            bad_log.add(batch["bad"])
        if "image" not in batch:
            continue
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device)
        with autocast(device, amp):
            out = model(x, return_aux=keep_first > 0 and shown is None)
        logits = out["logits"] if isinstance(out, dict) else out
        if isinstance(out, dict):
            shown = (x[:keep_first].float().cpu(), out["recons"][:keep_first].float().cpu())
        logits = logits.float()
        per_sample = classification_loss(logits, y, reduction="none")
        rows["index"].append(batch["index"].numpy())
        rows["label"].append(batch["label"].numpy())
        rows["prob"].append(probabilities(logits).cpu().numpy())
        rows["logit"].append(log_odds(logits).cpu().numpy())
        rows["loss"].append(per_sample.cpu().numpy())
        rows["video"].extend(batch["video"])
    model.train(was_training)
    local = {k: (np.concatenate(v) if k != "video" and v else v) for k, v in rows.items()}
    parts = dist.all_gather_objects(local)
    merged = {}
    for part in parts:
        for i, idx in enumerate(part["index"]):
            merged.setdefault(int(idx), (part["label"][i], part["prob"][i], part["logit"][i],
                                         part["loss"][i], part["video"][i]))
    order = sorted(merged)
    result = {
        "index": np.array(order, np.int64),
        "label": np.array([merged[i][0] for i in order], np.int64),
        "prob": np.array([merged[i][1] for i in order], np.float64),
        "logit": np.array([merged[i][2] for i in order], np.float64),
        "loss": np.array([merged[i][3] for i in order], np.float64),
        "video": [merged[i][4] for i in order],
    }
    if keep_first:
        result["shown"] = shown
    return result
