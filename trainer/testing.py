"""test.py's work: load a checkpoint, score a benchmark split, report and save the metrics."""
import csv
import json
import logging
import math
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from dataset import BadImageLog, build_dataset, collate
from dataset.base import worker_init
from fileio import atomic_write, atomic_write_figure, check_output_dir
from errors import UserError
from dataset.transforms import with_spec
from model.checkpoint import load_detector, pick_device
from model.detector import spec_from_transforms

from . import distributed as dist
from .checkpoint import newest_best
from .config import branch
from .evaluate import evaluate
from .metrics import VIDEO_RULES, all_metrics, roc, video_scores

log = logging.getLogger(__name__)


def resolve_checkpoint(cfg, ckpt=None):
    """``--ckpt``, else ``<ckpt_fold>/<model.name>/<id>/<ckpt>.bin``; ``best_model`` alone means
    the newest ``best_model_<step>.bin`` of that run."""
    if ckpt:
        return ckpt
    c = cfg["config"]
    if c["id"] is None:
        raise UserError("test.py needs the run: set config.id (or pass --ckpt PATH)")
    run_dir = os.path.join(c["ckpt_fold"], cfg["model"]["name"], str(c["id"]))
    path = os.path.join(run_dir, f"{c['ckpt']}.bin")
    if not os.path.isfile(path) and c["ckpt"] == "best_model":
        path = newest_best(run_dir) or path
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path} (set config.id / config.ckpt, or --ckpt)")
    return path


def format_table(metrics):
    rows = [("metric", "frame", "video")]
    for key in ("ACC", "AUC", "EER", "EER_threshold", "AP", "LogLoss", "real_ACC", "fake_ACC"):
        video = metrics.get("video_" + key)
        rows.append((key, f"{metrics[key]:.4f}", "" if video is None else f"{video:.4f}"))
    for key in sorted(k for k in metrics if k.endswith("_AUC") and not k.startswith("video_")):
        method = key[:-4]
        rows.append((f"{method} ACC / AUC", f"{metrics[method + '_ACC']:.4f} / "
                     f"{metrics[key]:.4f}", ""))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def save_outputs(out_dir, metrics, res, items, title="", video_rule="project"):
    """metrics.json (with ``video_grouping``: the rule of its video level), scores.csv (logit and
    probability at full precision: every metric recomputes exactly from it), and, when both
    classes are present, roc_curve.pickle and roc.png. Each file is written atomically. Returns
    the names written."""
    os.makedirs(out_dir, exist_ok=True)
    written = ["metrics.json", "scores.csv"]
    atomic_write(os.path.join(out_dir, "metrics.json"), lambda fh: json.dump(
        {**{k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in metrics.items()}, "video_grouping": video_rule}, fh, indent=2))

    def scores(fh):
        w = csv.writer(fh)
        w.writerow(["path", "label", "logit", "fake_probability", "video", "method"])
        for i, y, z, p, v in zip(res["index"], res["label"], res["logit"], res["prob"],
                                 res["video"]):
            w.writerow([items[i].path, int(y), repr(float(z)), repr(float(p)), v, items[i].method])
    atomic_write(os.path.join(out_dir, "scores.csv"), scores, newline="")
    if len(np.unique(res["label"])) == 2:
        fpr, tpr, thr = roc(res["label"], res["prob"])
        atomic_write(os.path.join(out_dir, "roc_curve.pickle"), lambda fh: torch.save(
            [torch.from_numpy(np.asarray(a, np.float64)) for a in (fpr, tpr, thr)], fh), mode="wb")
        plot_roc(os.path.join(out_dir, "roc.png"), res["label"], res["prob"],
                 video_inputs(res, items, video_rule), metrics,
                 f"ROC: {title}" if title else "ROC", video_rule)
        written += ["roc_curve.pickle", "roc.png"]
    return written


def video_inputs(res, items, video_rule="project"):
    """What ``video_rule`` groups the scored frames by: their video ids (``project``), or their
    paths (``deepfakebench``: DeepfakeBench groups frames by their folder's name)."""
    if video_rule == "deepfakebench":
        return [items[i].path for i in res["index"]]
    return res["video"]


def roc_figure(labels, probs, videos, metrics, title, video_rule="project"):
    """Frame- and video-level ROC curves, titled, each with its EER point marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    fpr, tpr, _ = roc(labels, probs)
    ax.plot(fpr, tpr, label=f"frame (AUC {metrics['AUC']:.4f})")
    vl, vp, _ = video_scores(labels, probs, videos, video_rule)
    if len(np.unique(vl)) == 2 and "video_AUC" in metrics:
        vf, vt, _ = roc(vl, vp)
        which = " by folder name" if video_rule == "deepfakebench" else ""
        ax.plot(vf, vt, label=f"video{which} (AUC {metrics['video_AUC']:.4f})")
    eer = metrics.get("EER")
    if eer is not None and eer == eer:
        ax.plot([eer], [1 - eer], "o", color="k", ms=6,
                label=f"frame EER {eer:.4f} (false positives = false negatives)")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot([0, 1], [1, 0], color="0.8", lw=0.6)  # where the EER points lie
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fake called fake)")
    import textwrap
    ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=10)  # long dataset paths fit
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_roc(path, labels, probs, videos, metrics, title, video_rule="project"):
    atomic_write_figure(path, roc_figure(labels, probs, videos, metrics, title, video_rule))


def branch_spec(cfg):
    """(spec, where) that the test branch states, for a checkpoint that states none (a bare state
    dict, the original's .bin): the dataset file is then the only word on the preprocessing."""
    from model import DETECTORS
    default = DETECTORS.get(cfg["model"]["name"]).default_spec
    spec, _ = spec_from_transforms(branch(cfg, "test").get("transforms"), default)
    return spec, f"the resize and normalisation of {cfg['data']['test_branch']}"


def test_branch(cfg, spec):
    """The test branch with its resize and normalisation set to the checkpoint's input spec (what
    the model was trained with), one log line when the dataset file said otherwise."""
    test_cfg = dict(branch(cfg, "test"))
    test_cfg["transforms"], changed = with_spec(test_cfg.get("transforms"), spec)
    if changed and dist.is_main():
        log.info("input spec of the checkpoint: %s (the test branch of %s states another; the "
                 "checkpoint's is used)", spec.describe(), cfg["data"]["file"])
    return test_cfg


def run_test(cfg, ckpt=None, device=None, out_dir=None, trusted=False, perturb=(), model=None,
             video_rule="project"):
    """Score the test branch, prepared by the checkpoint's input spec, under the distortions
    ``perturb`` (``[(type, level)]``); the video level groups frames by ``video_rule``
    (``project``: each video of the dataset; ``deepfakebench``: DeepfakeBench's grouping by the
    frames' folder name, see ``trainer.metrics.deepfakebench_video``). Returns
    (metrics, checkpoint path, output folder, images scored, names of the files written). A
    ``model`` already loaded from ``ckpt`` is used as it is."""
    if video_rule not in VIDEO_RULES:
        raise UserError(f"video grouping {video_rule!r}: expected one of {', '.join(VIDEO_RULES)}")
    rank, world, dev = dist.init(cfg["config"]["distribute"]["backend"],
                                 timeout_s=cfg["config"]["distribute"]["timeout"])
    device = dev if world > 1 else pick_device(device or cfg["config"]["device"])
    path = resolve_checkpoint(cfg, ckpt)
    out_dir = out_dir or os.path.dirname(os.path.abspath(path))
    if dist.is_main():
        check_output_dir(out_dir, "out")  # before the work, not after it
    if model is None:
        model = load_detector(path, device, model_cfg=cfg["model"],
                              trusted=trusted or cfg["config"]["trust_checkpoint"],
                              fallback_spec=branch_spec(cfg))
    ds = build_dataset(cfg["data"]["name"], test_branch(cfg, model.spec), cfg["config"]["seed"],
                       perturb, defer_normalize=True)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
    loader = DataLoader(ds, batch_size=cfg["data"]["test_batch_size"], sampler=sampler,
                        num_workers=cfg["data"]["num_workers"], collate_fn=collate,
                        pin_memory=device.type == "cuda", worker_init_fn=worker_init)
    bad = BadImageLog()
    amp = cfg["config"]["eval_amp"] if device.type == "cuda" else "none"  # fp32 by default
    res = evaluate(model, loader, device, amp, bad)
    if bad.count:
        log.warning("skipped %d unreadable image(s)", bad.take_count())
    if len(res["index"]) == 0:
        raise UserError(f"{ds.name}: no readable image in the test split ({len(bad.seen)} bad "
                        "file(s)); nothing to score")
    classes = set(res["label"].tolist())
    if len(classes) < 2:
        log.warning("the test split has %s images only: AUC, EER and AP are undefined, and no "
                    "ROC curve is written", "real" if classes == {0} else "fake")
    methods = [ds.items[i].method for i in res["index"]]
    metrics = all_metrics(res["label"], res["prob"], video_inputs(res, ds.items, video_rule),
                          methods, video_rule)
    metrics["LogLoss"] = float(res["loss"].mean())
    title = f"{os.path.basename(path)} on {ds.name}"
    written = (save_outputs(out_dir, metrics, res, ds.items, title, video_rule)
               if dist.is_main() else [])
    return metrics, path, out_dir, len(res["index"]), written
