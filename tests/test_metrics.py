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
    m = all_metrics(LABELS, PROBS, VIDEOS, methods=["original"] * 4 + ["A", "A", "B", "B", "original", "B"])
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
