import math

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from trainer.metrics import all_metrics, binary_metrics, roc

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
PROBS = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.55, 0.3, 0.95, 0.2, 0.7])
VIDEOS = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "f"]


def test_frame_metrics_against_sklearn_and_scipy():
    m = binary_metrics(LABELS, PROBS)
    assert m["ACC"] == pytest.approx(np.mean((PROBS >= 0.5) == LABELS))
    assert m["AUC"] == pytest.approx(roc_auc_score(LABELS, PROBS))
    assert m["AP"] == pytest.approx(average_precision_score(LABELS, PROBS))
    fpr, tpr, thr = roc_curve(LABELS, PROBS)
    eer = brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)
    assert m["EER"] == pytest.approx(eer)
    thr = thr.copy()
    thr[0] = thr[1] + 1  # scikit-learn < 1.3, as the original ran
    assert m["EER_threshold"] == pytest.approx(float(interp1d(fpr, thr)(eer)))
    ll = -np.mean(LABELS * np.log(PROBS) + (1 - LABELS) * np.log(1 - PROBS))
    assert m["LogLoss"] == pytest.approx(ll)
    assert m["real_ACC"] == pytest.approx(4 / 5) and m["fake_ACC"] == pytest.approx(4 / 5)


def test_video_level_is_mean_of_frames_and_methods():
    methods = ["original"] * 4 + ["A", "A", "B", "B", "original", "B"]
    m = all_metrics(LABELS, PROBS, VIDEOS, methods=methods)
    vl = np.array([0, 0, 1, 1, 0, 1])
    vp = np.array([0.25, 0.575, 0.725, 0.625, 0.2, 0.7])
    assert m["video_AUC"] == pytest.approx(roc_auc_score(vl, vp))
    assert m["video_ACC"] == pytest.approx(np.mean((vp >= 0.5) == vl))
    keep = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], bool)
    assert m["A_AUC"] == pytest.approx(roc_auc_score(LABELS[keep], PROBS[keep]))


def test_one_class_gives_nan_not_a_crash():
    m = binary_metrics([1, 1], [0.2, 0.9])
    assert math.isnan(m["AUC"]) and m["ACC"] == 0.5


def test_roc_first_threshold_is_finite():
    fpr, tpr, thr = roc(LABELS, PROBS)
    assert np.isfinite(thr).all() and thr[0] == pytest.approx(PROBS.max() + 1)


# DeepfakeBench's video level (its training/metrics/utils.py, get_video_metrics): frames grouped by
# the name of their folder; a video's probability the mean of its frames', its label
# int(sum of labels / count). Two methods (DF, NT) share the folder names 000_001 and 001_000, and
# a fake folder (FS/002) shares its name with a real one.
DFB_FRAMES = [  # path, label, probability
    ("ff/real/000/0.png", 0, 0.2), ("ff/real/000/1.png", 0, 0.4),
    ("ff\\real\\001\\0.png", 0, 0.7),  # backslashes: split at them
    ("ff/FS/002/0.png", 1, 0.95),  # a fake first: the label is not the first frame's
    ("lmdb:/s/FaceForensics++_lmdb::real/002/0.png", 0, 0.1),  # a store's image: its key
    ("ff/DF/000_001/0.png", 1, 0.9), ("ff/NT/000_001/0.png", 1, 0.35),
    ("ff/DF/001_000/0.png", 1, 0.8), ("ff/NT/001_000/0.png", 1, 0.5),
]


def test_deepfakebench_video_auc_by_hand():
    from trainer.metrics import bootstrap_interval, deepfakebench_video, video_scores
    paths, labels, probs = (list(c) for c in zip(*DFB_FRAMES))
    ids = ["real_000", "real_000", "real_001", "FS_002", "real_002", "DF_000_001", "NT_000_001",
           "DF_001_000", "NT_001_000"]
    # this project's videos: reals 0.3, 0.7, 0.1; fakes 0.9, 0.35, 0.8, 0.5, 0.95. Fake above
    # real in 3 + 2 + 3 + 2 + 3 = 13 of 15 pairs
    m = all_metrics(labels, probs, ids)
    assert m["video_AUC"] == pytest.approx(13 / 15)
    # DeepfakeBench's: 000 (0.3, real), 001 (0.7, real), 002 (0.95 and 0.1: 0.525, label
    # int(1 / 2) = 0, real), 000_001 (0.625, fake), 001_000 (0.65, fake). Both fakes are
    # above 0.3 and 0.525, below 0.7: 4 of 6 pairs
    d = all_metrics(labels, probs, paths, video_rule="deepfakebench")
    assert d["video_AUC"] == pytest.approx(4 / 6)
    assert d["AUC"] == m["AUC"]  # the frame level does not depend on the grouping
    vl, vp, names = video_scores(labels, probs, paths, "deepfakebench")
    assert names == ["000", "001", "002", "000_001", "001_000"]
    assert vl.tolist() == [0, 0, 0, 1, 1] and vp == pytest.approx([0.3, 0.7, 0.525, 0.625, 0.65])
    assert deepfakebench_video("a\\b/c\\d.png") == "b/c"  # a backslash anywhere: split at those
    with pytest.raises(Exception, match="no folder in it"):
        deepfakebench_video("0.png")
    # the bootstrap draws DeepfakeBench's videos when asked to: its value is that AUC
    assert bootstrap_interval(labels, probs, paths, "AUC", "video", 50,
                              rule="deepfakebench")[0] == pytest.approx(4 / 6)
    with pytest.raises(Exception, match="video grouping 'folders'"):
        all_metrics(labels, probs, paths, video_rule="folders")
