"""Frame- and video-level metrics, as the original computes them (ACC at 0.5, scikit-learn AUC,
EER by scipy's brentq on the ROC), and DeepfakeBench's video grouping beside this project's."""
import math
from collections import OrderedDict

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from errors import UserError
from model.calibration import eer, roc  # noqa: F401 - the ROC and EER of the original, here too

EPS = 1e-7


def log_loss(labels, probs):
    p = np.clip(np.asarray(probs, np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def predictions(probs):
    """Fake (1) where the probability is at least 0.5, as the original."""
    return (np.asarray(probs, np.float64) >= 0.5).astype(np.int64)


def binary_metrics(labels, probs, prefix=""):
    """ACC at 0.5, AUC, EER (+ threshold), AP, LogLoss, real and fake accuracy."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    pred = predictions(probs)
    both = len(np.unique(labels)) == 2
    out = OrderedDict()
    out["ACC"] = metric_value("ACC", labels, probs)
    out["AUC"] = metric_value("AUC", labels, probs)
    rate, thr = eer(labels, probs) if both else (math.nan, math.nan)
    out["EER"], out["EER_threshold"] = rate, thr
    out["AP"] = float(average_precision_score(labels, probs)) if both else math.nan
    out["LogLoss"] = log_loss(labels, probs)
    out["real_ACC"] = float((pred[labels == 0] == 0).mean()) if (labels == 0).any() else math.nan
    out["fake_ACC"] = float((pred[labels == 1] == 1).mean()) if (labels == 1).any() else math.nan
    return OrderedDict((prefix + k, v) for k, v in out.items())


VIDEO_RULES = ("project", "deepfakebench")


def deepfakebench_video(path):
    """DeepfakeBench's video of a frame (its training/metrics/utils.py, get_video_metrics): the
    frame's path split at backslashes if it has one, else at slashes, and the part before the
    file name; so frames in folders of the same name are one video, whichever dataset, method or
    label they belong to. An image of an LMDB store (``lmdb:<store>::<key>``) is named by its
    key."""
    path = str(path)
    if path.startswith("lmdb:") and "::" in path:  # dataset.base.lmdb_path
        path = path.partition("::")[2]
    parts = path.split("\\") if "\\" in path else path.split("/")
    if len(parts) < 2:
        raise UserError(f"frame path {path!r}: no folder in it, so no video for DeepfakeBench's "
                        "video-level metrics (--video_auc deepfakebench groups frames by the "
                        "name of their folder)")
    return parts[-2]


def _groups(labels, probs, videos, rule):
    """(frame indices per video, video labels, video probabilities, video names) by ``rule``.

    ``project``: ``videos`` are the frames' video ids; a video's label is that of its frames and
    its probability their mean. ``deepfakebench``: ``videos`` are the frames' paths, grouped by
    ``deepfakebench_video``; as DeepfakeBench computes them, a video's probability is the sum of
    its frames' probabilities (in order) over their count and its label int(sum of labels /
    count): fake only when every frame is fake."""
    if rule not in VIDEO_RULES:
        raise UserError(f"video grouping {rule!r}: expected one of {', '.join(VIDEO_RULES)}")
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    key = deepfakebench_video if rule == "deepfakebench" else (lambda v: v)
    members = OrderedDict()
    for i, v in enumerate(videos):
        members.setdefault(key(v), []).append(i)
    index = [np.asarray(ix) for ix in members.values()]
    if rule == "project":
        vlabels = np.array([labels[ix[0]] for ix in index], np.int64)
        vprobs = np.array([float(np.mean(probs[ix])) for ix in index])
    else:
        binary = (labels >= 1).astype(np.int64)  # its y_true[y_true >= 1] = 1
        vlabels = np.array([int(sum(int(binary[i]) for i in ix) / len(ix)) for ix in index],
                           np.int64)
        vprobs = np.array([sum(float(probs[i]) for i in ix) / len(ix) for ix in index])
    return index, vlabels, vprobs, list(members)


def video_scores(labels, probs, videos, rule="project"):
    """Frames grouped by video: (video labels, mean probabilities, video names); ``rule`` as in
    ``_groups`` (``deepfakebench``: ``videos`` are the frames' paths)."""
    _, vlabels, vprobs, names = _groups(labels, probs, videos, rule)
    return vlabels, vprobs, names


def all_metrics(labels, probs, videos, methods=None, video_rule="project"):
    """Frame-level, video-level and (FF++) per-method metrics as one flat dict. ``video_rule``
    picks the videos of the video level (``deepfakebench``: ``videos`` are the frames' paths)."""
    out = binary_metrics(labels, probs)
    vl, vp, _ = video_scores(labels, probs, videos, video_rule)
    video = binary_metrics(vl, vp, prefix="video_")
    for k in ("ACC", "AUC", "EER", "AP"):
        out["video_" + k] = video["video_" + k]
    if methods is not None and any(m not in ("", "original") for m in methods):
        labels, probs, methods = map(np.asarray, (labels, probs, methods))
        for m in sorted(set(methods) - {"", "original"}):
            keep = (methods == m) | (labels == 0)
            sub = binary_metrics(labels[keep], probs[keep])
            out[f"{m}_ACC"], out[f"{m}_AUC"] = sub["ACC"], sub["AUC"]
    return out


def metric_value(name, labels, probs):
    """One of AUC, ACC, EER of ``binary_metrics`` (NaN where a class is missing)."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    if name == "ACC":
        return float((predictions(probs) == labels).mean())
    if len(np.unique(labels)) < 2:
        return math.nan
    if name == "AUC":
        return float(roc_auc_score(labels, probs))
    if name == "EER":
        return eer(labels, probs)[0]
    raise ValueError(f"unknown metric {name!r}")


def bootstrap_interval(labels, probs, videos, metric, level="frame", resamples=1000, seed=0,
                       confidence=0.95, rule="project"):
    """``(value, low, high)``: the metric and its percentile bootstrap interval over videos.

    Each resample draws videos with replacement, the real and the fake videos separately (as many
    of each as the test set has, so that both classes are in every resample); ``level`` "frame"
    scores the drawn videos' frames, "video" their mean probabilities. Frames of one video are
    not independent: resampling frames would make the interval far too narrow. ``rule``: the
    videos, as in ``video_scores`` (``deepfakebench``: ``videos`` are the frames' paths).
    """
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    members, vlabel, vprob, _ = _groups(labels, probs, videos, rule)
    if level == "video":
        value = metric_value(metric, vlabel, vprob)
    elif level == "frame":
        value = metric_value(metric, labels, probs)
    else:
        raise ValueError(f"level {level!r}: frame or video")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(vlabel == c) for c in (0, 1)]
    stats = []
    for _ in range(resamples):
        drawn = np.concatenate([rng.choice(ix, size=len(ix), replace=True) for ix in by_class
                                if len(ix)])
        if level == "video":
            stats.append(metric_value(metric, vlabel[drawn], vprob[drawn]))
        else:
            frames = np.concatenate([members[j] for j in drawn])
            stats.append(metric_value(metric, labels[frames], probs[frames]))
    stats = np.asarray(stats, np.float64)
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return value, math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return value, float(low), float(high)
