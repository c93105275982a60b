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
from dataset.transforms import with_spec
from errors import UserError
from fileio import atomic_write, atomic_write_figure, check_output_dir
from model.checkpoint import load_detector, pick_device
from model.detector import spec_from_transforms

from . import distributed as dist
from .checkpoint import newest_best
from .config import branch
from .evaluate import device_amp, evaluate
from .figures import reliability_figure, roc_figure
from .metrics import VIDEO_RULES, all_metrics, roc

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


def calibration_report(labels, logits, calibration=None, threshold=None, videos=None):
    """test.py's calibration section: ECE (``model.calibration.ECE_BINS`` equal-width bins),
    Brier score and NLL of the raw probabilities and, with ``calibration``, of the calibrated
    ones; at each of its operating points the threshold, the validation's FPR and TPR with the
    samples and 95 % bounds they rest on, and this split's (with its own bounds); with
    ``threshold`` (a ``model.calibration.Band`` per level: {"frame": band, "video": band}) the
    same at it, and the share of ``uncertain`` verdicts for a band. With ``videos`` (each
    frame's video) the same at the video level: a video's probability is the mean of its frames'
    (as a video's verdict), its points the calibration's video-level ones, and the frame-level
    points applied to the videos beside them."""
    from model.calibration import (
        ECE_BINS,
        calibration_metrics,
        point_at,
        prob_metrics,
        sigmoid,
        video_scores,
    )
    labels = np.asarray(labels, np.int64)
    logits = np.asarray(logits, np.float64)
    report = {"bins": ECE_BINS, "frames": int(len(labels)),
              "raw": calibration_metrics(labels, logits)}
    probs = sigmoid(logits)
    if calibration is not None:
        report["temperature"] = calibration.temperature
        report["fitted_on"] = dict(calibration.fitted_on)
        report["calibrated"] = calibration_metrics(labels, logits, calibration.temperature)
        probs = calibration.probability(logits)
        report["points"] = _points_report(calibration.points, labels, probs)
    if threshold is not None:
        report["threshold"] = _band_report(threshold["frame"], labels, probs)
    if videos is not None and len(labels):
        vy, vraw = video_scores(labels, sigmoid(logits), videos)
        _, vp = video_scores(labels, probs, videos)
        video = {"videos": int(len(vy)), "real": int((vy == 0).sum()),
                 "fake": int((vy == 1).sum()), "raw": prob_metrics(vy, vraw)}
        if calibration is not None:
            video["calibrated"] = prob_metrics(vy, vp)
            video["points"] = (_points_report(calibration.video["points"], vy, vp)
                               if calibration.video is not None else {})
            video["frame_points"] = {  # the frame-level points applied to the videos
                name: {"threshold": p["threshold"], "val_fpr": p["fpr"],
                       **{f"test_{k}": v for k, v in point_at(vy, vp, p["threshold"]).items()
                          if k in ("fpr", "tpr", "fpr_upper", "tpr_lower")}}
                for name, p in calibration.points.items()}
        if threshold is not None:
            video["threshold"] = _band_report(threshold["video"], vy, vp)
        report["video"] = video
    return report


def _points_report(points, labels, probs):
    from model.calibration import point_at, supported
    out = {}
    for name, point in points.items():
        test = point_at(labels, probs, point["threshold"])
        out[name] = {"threshold": point["threshold"], "val_fpr": point.get("fpr"),
                     "val_tpr": point.get("tpr"), "val_real": point.get("real"),
                     "val_fake": point.get("fake"), "val_fpr_upper": point.get("fpr_upper"),
                     "val_tpr_lower": point.get("tpr_lower"),
                     "supported": supported(name, point),
                     **{f"test_{k}": v for k, v in test.items() if k != "threshold"}}
    return out


def _band_report(band, labels, probs):
    from model.calibration import rates
    fpr, tpr = rates(labels, probs, band.upper)
    said = np.array([band.judge(p) for p in np.asarray(probs, np.float64)])
    out = {"value": band.upper, "lower": band.lower, "source": band.source, "level": band.level,
           "test_fpr": fpr, "test_tpr": tpr,
           "test_ACC": float(((np.asarray(probs) >= band.upper) == labels).mean())
           if len(labels) else math.nan,
           "uncertain": float((said == "uncertain").mean()) if len(said) else math.nan}
    return out


def _num(v, digits=4):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _point_lines(points, unit):
    lines = []
    for name, p in points.items():
        bound = (f" (<= {_num(p['val_fpr_upper'])}, {p['val_real']} real {unit})"
                 if p.get("val_fpr_upper") is not None else "")
        test_bound = (f" (<= {_num(p['test_fpr_upper'])}, {p['test_real']} real)"
                      if p.get("test_fpr_upper") is not None else "")
        mark = "  not supported by the validation data" if p.get("supported") is False else ""
        lines.append(f"  {name:<9} {p['threshold']:.4f}  FPR {_num(p['val_fpr'])}{bound} -> "
                     f"{_num(p['test_fpr'])}{test_bound}  TPR {_num(p['val_tpr'])} -> "
                     f"{_num(p['test_tpr'])}{mark}")
    return lines


def _band_line(t):
    if t["lower"] < t["value"]:
        return (f"band {t['lower']:.4f} to {t['value']:.4f} ({t['source']}, {t['level']} "
                f"level): uncertain {_num(t['uncertain'])}, FPR {_num(t['test_fpr'])}  TPR "
                f"{_num(t['test_tpr'])} (fake at {t['value']:.4f})")
    return (f"at threshold {t['value']:.4f} ({t['source']}): FPR {_num(t['test_fpr'])}  "
            f"TPR {_num(t['test_tpr'])}  ACC {_num(t['test_ACC'])}")


def format_calibration(report):
    """test.py's lines of a ``calibration_report``."""
    lines = []
    raw, cal = report["raw"], report.get("calibrated")
    head = f"calibration ({report['bins']} equal-width bins for ECE)"
    if cal is None:
        lines.append(f"{head}: the checkpoint has none (python tools/calibrate.py makes one)")
        lines.append(f"  raw:        ECE {_num(raw['ece'])}  Brier {_num(raw['brier'])}  "
                     f"NLL {_num(raw['nll'])}")
    else:
        f = report.get("fitted_on", {})
        lines.append(f"{head}: temperature {report['temperature']:.4f}, fitted on "
                     f"{f.get('dataset', '?')} / {f.get('branch', '?')} ({f.get('frames', '?')} "
                     "frames)")
        lines.append(f"  raw:        ECE {_num(raw['ece'])}  Brier {_num(raw['brier'])}  "
                     f"NLL {_num(raw['nll'])}")
        lines.append(f"  calibrated: ECE {_num(cal['ece'])}  Brier {_num(cal['brier'])}  "
                     f"NLL {_num(cal['nll'])}")
        lines.append("operating points (threshold on the calibrated probability: validation FPR "
                     "(95 % upper bound, samples) / TPR -> this split's)")
        lines += _point_lines(report["points"], "frames")
    t = report.get("threshold")
    if t is not None:
        lines.append(_band_line(t))
    v = report.get("video")
    if v is not None:
        lines.append(f"video level ({v['videos']} videos: {v['real']} real, {v['fake']} fake; a "
                     "video's probability is the mean of its frames')")
        lines.append(f"  raw:        ECE {_num(v['raw']['ece'])}  Brier {_num(v['raw']['brier'])}"
                     f"  NLL {_num(v['raw']['nll'])}")
        if v.get("calibrated") is not None:
            c = v["calibrated"]
            lines.append(f"  calibrated: ECE {_num(c['ece'])}  Brier {_num(c['brier'])}  "
                         f"NLL {_num(c['nll'])}")
            if v.get("points"):
                lines.append("video-level operating points (validation videos -> this split's)")
                lines += _point_lines(v["points"], "videos")
            else:
                lines.append("video-level operating points: none (the calibration has frame-level "
                             "points only: python tools/calibrate.py fits both)")
            lines.append("frame-level points applied to the videos: " + ", ".join(
                f"{name} FPR {_num(p['test_fpr'])} TPR {_num(p['test_tpr'])}"
                for name, p in v["frame_points"].items()))
        if v.get("threshold") is not None:
            lines.append("  videos " + _band_line(v["threshold"]))
    return "\n".join(lines)


# test.py's scores.csv, one row per frame: ``fake_probability`` is the probability a person reads
# (calibrated where the checkpoint is, as inference.py's --output, the API and the page have it),
# ``raw_probability`` the detector's own (from which, as from the logit, every metric recomputes)
SCORE_COLUMNS = ("path", "label", "logit", "fake_probability", "raw_probability", "video",
                 "method")


def save_outputs(out_dir, metrics, res, items, title="", video_rule="project", calibration=None):
    """metrics.json (with ``video_grouping``: the rule of its video level), scores.csv
    (``SCORE_COLUMNS``: the logit and the probabilities at full precision, every metric
    recomputes exactly from the logit or the raw probability; ``fake_probability`` calibrated by
    ``calibration`` where given), and, when both classes are present, roc_curve.pickle and
    roc.png. Each file is written atomically. Returns the names written."""
    os.makedirs(out_dir, exist_ok=True)
    written = ["metrics.json", "scores.csv"]
    atomic_write(os.path.join(out_dir, "metrics.json"), lambda fh: json.dump(
        {**_json_values(metrics), "video_grouping": video_rule}, fh, indent=2))

    shown = res["prob"] if calibration is None else \
        np.atleast_1d(calibration.probability(np.asarray(res["logit"], np.float64)))

    def scores(fh):
        w = csv.writer(fh)
        w.writerow(SCORE_COLUMNS)
        for i, y, z, p, raw, v in zip(res["index"], res["label"], res["logit"], shown,
                                      res["prob"], res["video"]):
            w.writerow([items[i].path, int(y), repr(float(z)), repr(float(p)), repr(float(raw)),
                        v, items[i].method])
    atomic_write(os.path.join(out_dir, "scores.csv"), scores, newline="")
    if len(np.unique(res["label"])) == 2:
        fpr, tpr, thr = roc(res["label"], res["prob"])
        atomic_write(os.path.join(out_dir, "roc_curve.pickle"), lambda fh: torch.save(
            [torch.from_numpy(np.asarray(a, np.float64)) for a in (fpr, tpr, thr)], fh), mode="wb")
        plot_roc(os.path.join(out_dir, "roc.png"), res["label"], res["prob"],
                 video_inputs(res, items, video_rule), metrics,
                 f"ROC: {title}" if title else "ROC", video_rule)
        written += ["roc_curve.pickle", "roc.png"]
        atomic_write_figure(os.path.join(out_dir, "reliability.png"), reliability_figure(
            res["label"], res["logit"], calibration, title or "test split", res["video"]))
        written.append("reliability.png")
    return written


def _json_values(value):
    """``value`` with every NaN (nested too) as None: metrics.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _json_values(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def video_inputs(res, items, video_rule="project"):
    """What ``video_rule`` groups the scored frames by: their video ids (``project``), or their
    paths (``deepfakebench``: DeepfakeBench groups frames by their folder's name)."""
    if video_rule == "deepfakebench":
        return [items[i].path for i in res["index"]]
    return res["video"]


def plot_roc(path, labels, probs, videos, metrics, title, video_rule="project"):
    atomic_write_figure(path, roc_figure(labels, probs, videos, metrics, title, video_rule))


def branch_spec(cfg, name=None):
    """(spec, where) that the test branch (or the branch ``name``) states, for a checkpoint that
    states none (a bare state dict, the original's .bin): the dataset file is then the only word
    on the preprocessing."""
    from model import DETECTORS
    default = DETECTORS.get(cfg["model"]["name"]).default_spec
    chosen = branch(cfg, "test") if name is None else (cfg["dataset"].get(name) or {})
    spec, _ = spec_from_transforms(chosen.get("transforms"), default)
    return spec, f"the resize and normalisation of {name or cfg['data']['test_branch']}"


def test_branch(cfg, spec, name=None):
    """The test branch (or the branch ``name`` of the dataset file) with its resize and
    normalisation set to the checkpoint's input spec (what the model was trained with), one log
    line when the dataset file said otherwise."""
    if name is None:
        test_cfg = dict(branch(cfg, "test"))
    elif name in cfg["dataset"]:
        test_cfg = dict(cfg["dataset"][name])
    else:
        raise UserError(f"branch {name!r}: {cfg['data']['file']} has no such branch (it has "
                        f"{', '.join(cfg['dataset'])})", arg="branch")
    test_cfg["transforms"], changed = with_spec(test_cfg.get("transforms"), spec)
    if changed and dist.is_main():
        log.info("input spec of the checkpoint: %s (the %s branch of %s states another; the "
                 "checkpoint's is used)", spec.describe(), name or "test", cfg["data"]["file"])
    return test_cfg


def score_split(cfg, model, device, branch_cfg, perturb=(), rank=0, world=1):
    """(dataset, ``evaluate``'s results) of ``model`` on the dataset branch ``branch_cfg``, each
    process a share, scores gathered; unreadable images are skipped and counted on one line, a
    split without any readable image is a UserError."""
    ds = build_dataset(cfg["data"]["name"], branch_cfg, cfg["config"]["seed"], perturb,
                       defer_normalize=True)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
    loader = DataLoader(ds, batch_size=cfg["data"]["test_batch_size"], sampler=sampler,
                        num_workers=cfg["data"]["num_workers"], collate_fn=collate,
                        pin_memory=device.type == "cuda", worker_init_fn=worker_init)
    bad = BadImageLog()
    amp = device_amp(device, cfg["config"]["eval_amp"], "config.eval_amp")  # fp32 by default
    res = evaluate(model, loader, device, amp, bad)
    if bad.count:
        log.warning("skipped %d unreadable image(s)", bad.take_count())
    if len(res["index"]) == 0:
        raise UserError(f"{ds.name}: no readable image in the split ({len(bad.seen)} bad "
                        "file(s)); nothing to score")
    return ds, res


def run_test(cfg, ckpt=None, device=None, out_dir=None, trusted=False, perturb=(), model=None,
             video_rule="project", threshold=None, backend="torch", precision="fp32"):
    """Score the test branch, prepared by the checkpoint's input spec, under the distortions
    ``perturb`` (``[(type, level)]``); the video level groups frames by ``video_rule``
    (``project``: each video of the dataset; ``deepfakebench``: DeepfakeBench's grouping by the
    frames' folder name, see ``trainer.metrics.deepfakebench_video``). Returns
    (metrics, checkpoint path, output folder, images scored, names of the files written). A
    ``model`` already loaded from ``ckpt`` is used as it is. ``metrics["calibration"]``: the
    ``calibration_report`` (with ``threshold``: a number or an operating point name, its rates
    too). ``backend`` and ``precision``: how the forward runs (``model.backends``), said in
    ``metrics["scored_by"]``."""
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
    from model.calibration import resolve_band
    chosen = None if threshold is None else {
        level: resolve_band(threshold, getattr(model, "calibration", None), level)
        for level in ("frame", "video")}
    scored, scored_by = model, {"backend": "torch", "precision": "fp32"}
    if (backend, precision) != ("torch", "fp32"):
        from model.backends import ScoringModule, build_scorer
        scorer = build_scorer(model, device, backend, precision)
        if dist.is_main():
            log.info("scored by: %s", scorer.describe())
        scored = ScoringModule(model, scorer)
        scored_by = {"backend": scorer.backend, "precision": scorer.precision}
    ds, res = score_split(cfg, scored, device, test_branch(cfg, model.spec), perturb, rank, world)
    classes = set(res["label"].tolist())
    if len(classes) < 2:
        log.warning("the test split has %s images only: AUC, EER and AP are undefined, and no "
                    "ROC curve is written", "real" if classes == {0} else "fake")
    methods = [ds.items[i].method for i in res["index"]]
    metrics = all_metrics(res["label"], res["prob"], video_inputs(res, ds.items, video_rule),
                          methods, video_rule)
    metrics["LogLoss"] = float(res["loss"].mean())
    metrics["scored_by"] = scored_by
    calibration = getattr(model, "calibration", None)
    metrics["calibration"] = calibration_report(res["label"], res["logit"], calibration, chosen,
                                                res["video"])
    title = f"{os.path.basename(path)} on {ds.name}"
    written = (save_outputs(out_dir, metrics, res, ds.items, title, video_rule, calibration)
               if dist.is_main() else [])
    return metrics, path, out_dir, len(res["index"]), written
