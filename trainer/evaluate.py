"""One evaluation loop, used by validation and by test.py, on every rank with scores gathered."""
import logging
import math
import sys
import time

import numpy as np
import torch

from dataset.base import iterate_quietly, to_input
from errors import UserError
from loss import classification_loss
from model import scores

from . import distributed as dist
from .metrics import all_metrics

log = logging.getLogger("recce")
PROGRESS_EVERY = 30.0  # seconds between progress lines when no terminal shows a bar


def autocast(device, amp):
    if device.type == "cuda" and amp in ("fp16", "bf16"):
        return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
    if device.type == "cpu" and amp == "bf16":  # where device_amp let it through: native bf16
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def device_amp(device, amp, key):
    """The mixed precision ``amp`` (config key ``key``: amp, eval_amp) that ``device`` runs: all of
    them on a GPU; on the CPU bf16 where the CPU computes it natively (AMX or AVX-512 BF16, said
    once) and refused with one line where it does not, fp16 never (none, as before)."""
    if device.type == "cuda" or amp == "none":
        return amp
    if device.type == "cpu" and amp == "bf16":
        from model.backends import native_bf16
        native = native_bf16()
        if not native:
            raise UserError(f"{key} bf16: this CPU has no native bf16 (AMX or AVX-512 BF16), "
                            "where it would be slower than fp32: set it to none")
        log.info("%s bf16 on the CPU (%s)", key, ", ".join(native))
        return "bf16"
    return "none"


def _keep_examples(shown, x, recons, y, prob, k):
    """Up to ``k`` examples of each class: (inputs, reconstructions, labels, probabilities)."""
    xs, rs, ys, ps = shown if shown is not None else (
        torch.empty(0, *x.shape[1:]), torch.empty(0, *x.shape[1:]),
        torch.empty(0, dtype=torch.long), torch.empty(0))
    for c in (0, 1):
        room = k - int((ys == c).sum())
        idx = (y == c).nonzero().flatten()[:max(room, 0)].cpu()
        if len(idx):
            xs = torch.cat([xs, x[idx].float().cpu()])
            rs = torch.cat([rs, recons[idx].float().cpu()])
            ys = torch.cat([ys, y[idx].cpu()])
            ps = torch.cat([ps, prob[idx].float().cpu()])
    return xs, rs, ys, ps


@torch.no_grad()
def evaluate(model, loader, device, amp="none", bad_log=None, keep_first=0):
    """Scores of the whole dataset behind ``loader``, each sample once, on every rank.

    Returns a dict of numpy arrays ``index, label, prob, logit, loss`` and the list ``video``,
    ordered by dataset index (empty arrays when no image could be read). DistributedSampler pads
    the last round with repeats: they are dropped here.
    ``keep_first`` = k > 0 also returns up to k real and k fake inputs with their reconstructions
    and probabilities (``shown``: inputs, reconstructions, labels, probabilities; the figure of
    TensorBoard).
    """
    was_training = model.training
    model.eval()
    rows = {"index": [], "label": [], "prob": [], "logit": [], "loss": [], "video": []}
    shown = None
    from tqdm import tqdm
    main = dist.is_main()
    bar = tqdm(total=len(loader), desc="evaluate", unit="batch", leave=False,
               dynamic_ncols=True, disable=not (main and sys.stderr.isatty()))
    last = time.monotonic()
    for n, batch in enumerate(iterate_quietly(loader), 1):
        bar.update(1)
        if bar.disable and main and time.monotonic() - last >= PROGRESS_EVERY:
            log.info("evaluating: %d of %d batches", n, len(loader))
            last = time.monotonic()
        if bad_log is not None:
            bad_log.add(batch["bad"])
        if "image" not in batch:
            continue
        x = to_input(batch, device)
        y = batch["label"].to(device)
        with autocast(device, amp):
            want = keep_first > 0 and (shown is None or min(
                int((shown[2] == c).sum()) for c in (0, 1)) < keep_first)
            out = scores(model(x, return_aux=want))
        if "recons" in out:
            shown = _keep_examples(shown, x, out["recons"], y, out["prob"], keep_first)
        per_sample = classification_loss(out["logits"], y, reduction="none")
        rows["index"].append(batch["index"].numpy())
        rows["label"].append(batch["label"].numpy())
        rows["prob"].append(out["prob"].cpu().numpy())
        rows["logit"].append(out["logit"].cpu().numpy())
        rows["loss"].append(per_sample.cpu().numpy())
        rows["video"].extend(batch["video"])
    bar.close()
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


def validation_metrics(res, dataset):
    """(Acc / AUC / LogLoss, further metrics: EER, AP, video-level and per-method AUC) of
    ``evaluate``'s results ``res`` on ``dataset``; NaN without an image, said in one line."""
    if len(res["label"]) == 0:
        log.warning("validation: no readable image in %s: no metric this time", dataset.name)
        return {"Acc": math.nan, "AUC": math.nan, "LogLoss": math.nan}, {}
    methods = [dataset.items[i].method for i in res["index"]]
    m = all_metrics(res["label"], res["prob"], res["video"], methods)
    extra = {k: v for k, v in m.items() if k in ("EER", "AP", "video_AUC", "video_ACC")
             or (k.endswith("_AUC") and not k.startswith("video_"))}
    return {"Acc": m["ACC"], "AUC": m["AUC"], "LogLoss": float(res["loss"].mean())}, extra
