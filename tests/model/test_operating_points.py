"""Operating points that keep their promise where they are read: video-level points fitted on
validation videos as a video's verdict aggregates them, exact confidence bounds, and an uncertain
band."""
import logging
import math

import numpy as np
import pytest
import torch

from errors import UserError
from model import calibration as C


def _scores(seed=0, videos=40, frames=8):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(videos) % 2, frames)
    video_bias = np.repeat(rng.normal(0, 1.0, videos), frames)  # frames of a video correlate
    logits = (labels * 2 - 1) * 1.2 + video_bias + rng.normal(0, 1.0, videos * frames)
    ids = np.repeat([f"v{i:03d}" for i in range(videos)], frames)
    return labels, logits, ids


def test_clopper_pearson_is_scipys_exact_interval():
    from scipy.stats import binomtest
    for k, n in ((0, 10), (1, 10), (5, 10), (10, 10), (3, 192), (0, 183)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        low, high = C.clopper_pearson(k, n)
        assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)
    assert C.clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert C.clopper_pearson(0, 0) == (0.0, 1.0)
    # a 1 % point is supported (its bound at most 2 %) from 183 real samples with no false alarm
    assert C.needed_real(0.01) == 183
    assert C.clopper_pearson(0, 183)[1] <= 0.02 < C.clopper_pearson(0, 182)[1]


def test_video_points_are_chosen_on_video_means_of_calibrated_frames():
    labels, logits, ids = _scores()
    cal = C.fit(labels, logits, {"dataset": "d"}, videos=ids)
    v = cal.video
    assert (v["videos"], v["real"], v["fake"]) == (40, 20, 20)
    p = C.sigmoid(logits / cal.temperature)
    means = np.array([p[ids == i].mean() for i in dict.fromkeys(ids)])
    vlabels = np.array([labels[ids == i][0] for i in dict.fromkeys(ids)])
    for name, target in (("fpr@0.01", 0.01), ("fpr@0.05", 0.05), ("fpr@0.1", 0.1)):
        point = v["points"][name]
        chosen = C.fpr_threshold(vlabels, means, target)  # means summed in another order
        assert point["threshold"] == pytest.approx(chosen, abs=1e-12)
        fp = int((means[vlabels == 0] >= point["threshold"]).sum())
        assert point["fpr"] == fp / 20 <= target
        assert point["real"] == 20 and point["fake"] == 20
        assert point["fpr_upper"] == pytest.approx(C.clopper_pearson(fp, 20)[1])
        assert C.supported(name, point) is (point["fpr_upper"] <= 2 * target)
    assert C.supported("fpr@0.01", v["points"]["fpr@0.01"]) is False  # 20 real videos: too few
    # the frame-level points keep their frames' bounds; the video level its own metrics
    assert cal.points["fpr@0.05"]["real"] == 160
    assert set(v["before"]) == set(v["after"]) == {"ece", "brier", "nll"}
    # stored as plain numbers and read back through the one schema
    import io
    buf = io.BytesIO()
    torch.save({"calibration": cal.to_dict()}, buf)
    buf.seek(0)
    back = C.Calibration.from_dict(torch.load(buf, weights_only=True)["calibration"])
    assert back.video["points"] == v["points"] and back.video["videos"] == 40


def test_bands_parse_judge_and_resolve():
    assert C.parse_threshold("eer:fpr@0.01") == ("eer", "fpr@0.01")
    assert C.parse_threshold(" 0.3 : 0.7 ") == (0.3, 0.7)
    for bad in ("0.3:", "a:b", "0.1:0.2:0.3", "0.2:1.5"):
        with pytest.raises(UserError, match="threshold"):
            C.parse_threshold(bad)
    band = C.resolve_band("0.7:0.3", None)
    assert (band.lower, band.upper, band.source) == (0.3, 0.7, "given")
    assert [band.judge(p) for p in (0.29, 0.3, 0.69, 0.7)] == ["real", "uncertain", "uncertain",
                                                              "fake"]
    one = C.resolve_band(0.5, None)
    assert {one.judge(p) for p in np.linspace(0, 1, 101)} == {"real", "fake"}
    labels, logits, ids = _scores()
    cal = C.fit(labels, logits, videos=ids)
    video = C.resolve_band("eer:fpr@0.05", cal, "video")
    assert video.level == "video" and video.source == "eer:fpr@0.05"
    assert video.upper == max(cal.video["points"]["eer"]["threshold"],
                              cal.video["points"]["fpr@0.05"]["threshold"])
    frame = C.resolve_band("fpr@0.05", cal, "frame")
    assert frame.upper == cal.points["fpr@0.05"]["threshold"] and frame.note is None
    old = C.Calibration(cal.temperature, cal.points, cal.fitted_on, cal.before, cal.after)
    fallback = C.resolve_band("fpr@0.05", old, "video")
    assert fallback.level == "frame" and "no video level" in fallback.note


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, make_checkpoint):
    """An Xception checkpoint with a calibration that has a video level, one without, and a
    video of Grace Hopper's photograph."""
    from helpers import hopper_video
    d = tmp_path_factory.mktemp("points")
    labels, logits, ids = _scores()
    cal = C.fit(labels, logits, videos=ids)
    old = {k: v for k, v in cal.to_dict().items() if k != "video"}
    config = {"model": {"name": "Xception"}}
    return (cal, make_checkpoint(d / "new.bin", "Xception", config, calibration=cal.to_dict()),
            make_checkpoint(d / "old.bin", "Xception", config, calibration=old),
            hopper_video(d / "hopper.avi", 6))


@pytest.mark.slow
def test_a_video_is_judged_by_the_video_level_point(calibrated, caplog):
    pytest.importorskip("dlib")
    from faces import Predictor
    cal, new, old, video = calibrated
    pred = Predictor.from_checkpoint(new, "cpu", image_size=64, threshold="fpr@0.05")
    rec = pred.predict_video(video, frames=3)
    assert rec["threshold"] == cal.video["points"]["fpr@0.05"]["threshold"]
    assert rec["threshold_level"] == "video" and rec["threshold_source"] == "fpr@0.05"
    assert rec["threshold_fpr_upper"] == cal.video["points"]["fpr@0.05"]["fpr_upper"]
    assert rec["threshold_supported"] is C.supported("fpr@0.05", cal.video["points"]["fpr@0.05"])
    assert "at the video level" in pred.describe_threshold("video")
    # crops (and photos) keep the frame-level point
    assert pred.threshold == cal.points["fpr@0.05"]["threshold"]
    # a calibration with frame-level points only: the video is judged by one, said once
    pred = Predictor.from_checkpoint(old, "cpu", image_size=64, threshold="fpr@0.05")
    with caplog.at_level(logging.WARNING, logger="recce"):
        for _ in range(2):
            rec = pred.predict_video(video, frames=2)
    assert rec["threshold_level"] == "frame"
    assert rec["threshold"] == cal.points["fpr@0.05"]["threshold"]
    assert sum("no video level" in r.getMessage() for r in caplog.records) == 1


def test_an_uncertain_band_is_one_keyword_away(calibrated):
    pytest.importorskip("dlib")
    from faces import Predictor
    _, new, _, video = calibrated
    rec = Predictor.from_checkpoint(new, "cpu", image_size=64, threshold="0:1") \
        .predict_video(video, frames=2)
    assert rec["prediction"] == "uncertain"  # every probability below 1 lies in [0, 1)
    assert (rec["threshold_lower"], rec["threshold"]) == (0.0, 1.0)
    default = Predictor.from_checkpoint(new, "cpu", image_size=64).predict_video(video, frames=2)
    assert default["prediction"] in ("real", "fake") and default["threshold"] == 0.5


def test_test_report_has_both_levels_and_the_uncertain_share():
    from trainer.evaluation_report import calibration_report, format_calibration
    labels, logits, ids = _scores(0)
    cal = C.fit(labels, logits, videos=ids)
    tl, tz, tid = _scores(1, videos=60)
    bands = {lv: C.resolve_band("eer:fpr@0.01", cal, lv) for lv in ("frame", "video")}
    report = calibration_report(tl, tz, cal, bands, tid)
    v = report["video"]
    assert (v["videos"], v["real"], v["fake"]) == (60, 30, 30)
    vl, vp = C.video_scores(tl, cal.probability(tz), tid)
    point = cal.video["points"]["fpr@0.05"]
    fpr, tpr = C.rates(vl, vp, point["threshold"])
    assert v["points"]["fpr@0.05"]["test_fpr"] == fpr and v["points"]["fpr@0.05"]["test_tpr"] == tpr
    assert v["points"]["fpr@0.05"]["val_fpr_upper"] == point["fpr_upper"]
    frame_point = cal.points["fpr@0.01"]["threshold"]
    assert v["frame_points"]["fpr@0.01"]["test_fpr"] == C.rates(vl, vp, frame_point)[0]
    b = bands["video"]
    share = np.mean([b.lower <= p < b.upper for p in vp])
    assert v["threshold"]["uncertain"] == pytest.approx(share)
    assert v["calibrated"]["ece"] == pytest.approx(C.ece(vl, vp))
    text = format_calibration(report)
    assert "video level (60 videos: 30 real, 30 fake" in text
    assert "video-level operating points" in text and "uncertain" in text
    assert not math.isnan(report["threshold"]["uncertain"])


def test_one_reading_of_a_threshold_for_every_door():
    """parse_threshold takes back what it returns (the page's workers read the form's text, the
    API a pair), restricts the names to a checkpoint's points where given, and shows a number
    typed at a command line or a form as typed."""
    for given in ("0.25", 0.25, " EER ", "eer:fpr@0.01", " 0.3 : 0.7 ", (0.3, "eer"), None):
        once = C.parse_threshold(given)
        assert C.parse_threshold(once) == once
    assert C.parse_threshold((0.3, "EER")) == (0.3, "eer")
    assert C.parse_threshold("eer", points=("eer",)) == "eer"
    with pytest.raises(UserError, match=r"^threshold 'fpr@0.1': expected a probability in "
                                        r"\[0, 1\] or an operating point \(eer\)"):
        C.parse_threshold("fpr@0.1", points=("eer",))
    with pytest.raises(UserError, match=r"\(none: the checkpoint has no calibration\)"):
        C.parse_threshold("eer", points=())
    with pytest.raises(UserError, match=r"^--t 1.5: expected a probability in \[0, 1\]$"):
        C.parse_threshold(" 1.5", "--t", typed=True)  # as typed at a command line
    with pytest.raises(UserError, match=r"^threshold ' 1.5': expected a probability"):
        C.parse_threshold(" 1.5")  # as Python writes it
    with pytest.raises(UserError, match=r"^threshold '0.3:0.2:0.1': a band is two thresholds"):
        C.parse_threshold((0.3, 0.2, 0.1))
    band = C.resolve_band((0.7, 0.3), None)
    assert (band.lower, band.upper, band.source) == (0.3, 0.7, "given")


def test_test_py_reads_its_threshold_before_any_work(tmp_path, capsys):
    import test as test_py
    missing = str(tmp_path / "no_config.yml")
    assert test_py.main(["--config", missing, "--threshold", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --threshold 2: expected a probability in " \
                                              "[0, 1]"
    assert test_py.main(["--config", missing, "--threshold", "eer:nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --threshold 'eer:nope': expected a "
                                              "probability in [0, 1] or an operating point")
    assert test_py.main(["--config", missing, "--threshold", "eer"]) == 2  # read, then the file
    assert "config file not found" in capsys.readouterr().err
