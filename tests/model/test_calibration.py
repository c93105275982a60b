"""Calibration: the metrics against hand computations on fixed numbers, the temperature fit, the
operating points, the stored calibration through every door (checkpoint, tools/calibrate.py,
the API, inference.py, test.py)."""
import csv
import hashlib
import json
import math
import os

import numpy as np
import pytest
import torch

from errors import UserError
from helpers import cli, image_list_tree, write_config
from model import InputSpec, Recce
from model import calibration as C

SPEC = InputSpec((64, 64), (0.5,) * 3, (0.5,) * 3)


# ------------------------------------------------------------------ metrics, by hand
def test_ece_brier_nll_against_hand_computations():
    probs = [0.02, 0.05, 0.30, 0.32, 0.70, 0.90, 0.95, 1.0]
    labels = [0, 0, 1, 0, 1, 1, 0, 1]
    # 15 bins of width 1/15: 0.02, 0.05 -> bin 0; 0.30, 0.32 -> bin 4 [0.2667, 0.3333);
    # 0.70 -> bin 10 [0.6667, 0.7333); 0.90 -> bin 13 [0.8667, 0.9333); 0.95, 1.0 -> bin 14
    by_hand = (2 / 8 * abs(0.035 - 0.0) + 2 / 8 * abs(0.31 - 0.5) + 1 / 8 * abs(0.70 - 1.0)
               + 1 / 8 * abs(0.90 - 1.0) + 2 / 8 * abs(0.975 - 0.5))
    assert C.ece(labels, probs) == pytest.approx(by_hand, abs=1e-12)
    count, _, _ = C.reliability(labels, probs)
    assert count.tolist() == [2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2]
    brier = np.mean([(p - y) ** 2 for p, y in zip(probs, labels)])
    assert C.brier(labels, probs) == pytest.approx(brier, abs=1e-12)
    logits = [-3.0, 0.5, 2.0, 40.0]
    ys = [0, 1, 1, 0]
    nll = (math.log1p(math.exp(-3)) + math.log1p(math.exp(-0.5)) + math.log1p(math.exp(-2))
           + 40.0) / 4  # the saturated wrong one costs its logit, not infinity
    assert C.nll(ys, logits) == pytest.approx(nll, abs=1e-12)
    assert C.calibration_metrics(ys, logits, 2.0)["nll"] == pytest.approx(
        C.nll(ys, np.array(logits) / 2.0))


def test_temperature_recovers_the_scale_of_the_data():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-z / 2.5))).astype(int)  # true temperature 2.5
    t = C.fit_temperature(y, z)
    assert t == pytest.approx(2.5, rel=0.05)
    best = C.nll(y, z / t)
    assert best <= C.nll(y, z / (t * 1.02)) and best <= C.nll(y, z / (t / 1.02))
    cal = C.fit(y, z, {"dataset": "synthetic"})
    assert cal.temperature == pytest.approx(t, rel=1e-6)
    assert cal.after["nll"] < cal.before["nll"]
    assert cal.fitted_on == {"frames": 20000, "real": int((y == 0).sum()),
                             "fake": int((y == 1).sum()), "dataset": "synthetic"}


def test_fpr_points_are_the_lowest_thresholds_within_the_rate():
    labels = [0] * 10 + [1] * 4
    probs = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.85, 0.92, 0.97, 0.99]
    thr = C.fpr_threshold(labels, probs, 0.1)  # one real of ten may be called fake: 0.95
    assert 0.9 < thr <= 0.9 + 1e-12
    assert C.rates(labels, probs, thr) == (0.1, 0.75)
    assert C.fpr_threshold(labels, probs, 0.01) > 0.95  # none may: above the highest real
    assert C.rates(labels, probs, C.fpr_threshold(labels, probs, 0.01))[0] == 0.0
    tied = [0.9] * 5 + [0.1] * 5 + [0.95] * 2
    thr = C.fpr_threshold([0] * 10 + [1] * 2, tied, 0.1)  # a tie never lets five through
    assert C.rates([0] * 10 + [1] * 2, tied, thr)[0] == 0.0
    cal = C.fit(labels, np.log(np.array(probs) / (1 - np.array(probs))))
    assert set(cal.points) == set(C.POINT_NAMES)
    for name, target in zip(C.POINT_NAMES, C.FPR_POINTS):
        assert cal.points[name]["fpr"] <= target


def test_a_calibration_needs_both_classes_and_finite_logits():
    with pytest.raises(UserError, match="no fake one"):
        C.fit([0, 0], [0.1, 0.2])
    with pytest.raises(UserError, match="no real one"):
        C.fit([1, 1], [0.1, 0.2])
    with pytest.raises(UserError, match="not a finite number"):
        C.fit([0, 1], [0.1, float("nan")])


# a fit that would mean nothing: (labels, logits, what the refusal says)
MEANINGLESS = [
    pytest.param([0, 1, 0, 1], [0.3] * 4, r"the 4 frames' logits are all equal \(0\.3\)",
                 id="no spread"),
    pytest.param([1, 1, 1], [0.1, 0.2, 0.3], "no real one", id="one class"),
    pytest.param([0, 1, 0, 1], [1.0, -2.0, -1.0, 2.0], r"temperature 99\.99\d* is the "
                 r"search's upper bound \(100\): the NLL keeps falling as the temperature grows",
                 id="upper bound"),
    pytest.param([0, 1, 0, 1], [-1.0, 2.0, -3.0, 2.0], r"temperature 0\.01 is the search's "
                 r"lower bound \(0\.01\): the scores separate the classes", id="lower bound"),
    pytest.param([0, 1, 0, 0, 0, 0], [-1.5, 0.8, -0.7, 0.8, -3.5, -0.9],
                 r"TPR 0 at every operating point \(fpr@0\.01, fpr@0\.05, fpr@0\.1, eer\)",
                 id="TPR 0 everywhere"),
]


@pytest.mark.parametrize("labels,logits,said", MEANINGLESS)
def test_a_fit_that_means_nothing_is_refused(labels, logits, said):
    with pytest.raises(UserError, match=said) as info:
        C.fit(labels, logits)
    assert "\n" not in str(info.value)


def test_a_fit_near_the_bounds_but_inside_them_is_kept():
    """The control of the table above: a temperature of 50 or 0.02 is a fit, not a bound."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, 4000)
    for true_t in (50.0, 0.02):
        y = (rng.random(4000) < 1 / (1 + np.exp(-z / true_t))).astype(int)
        assert C.fit(y, z).temperature == pytest.approx(true_t, rel=0.2)


def test_thresholds_as_users_give_them():
    cal = C.fit([0, 0, 0, 1, 1, 1], [-2.0, -1.0, 0.5, 0.2, 1.0, 3.0])
    assert C.resolve_threshold(None, cal) == (0.5, "default")
    assert C.resolve_threshold(0.7, None) == (0.7, "given")
    assert C.resolve_threshold("0.25", None) == (0.25, "given")
    assert C.resolve_threshold("fpr@0.05", cal) == (cal.points["fpr@0.05"]["threshold"],
                                                    "fpr@0.05")
    assert C.resolve_threshold(" EER ", cal)[1] == "eer"
    with pytest.raises(UserError, match="no calibration"):
        C.resolve_threshold("fpr@0.01", None)
    for bad, match in (("fpr@0.2", r"'fpr@0.2': expected a probability in \[0, 1\] or an "
                                   "operating point"),
                       (float("nan"), r"nan: expected a probability in \[0, 1\]$"),
                       (7, r"^threshold 7: expected a probability in \[0, 1\]$"),
                       (-0.5, r"^threshold -0.5: expected a probability"),
                       ("1.5", r"^threshold '1.5': expected a probability"),
                       ([0.5], r"^threshold \[0.5\]: .* got list"), (True, "got bool")):
        with pytest.raises(UserError, match=match) as info:
            C.resolve_threshold(bad, cal)
        assert info.value.arg == "threshold"


def test_a_stored_calibration_is_checked():
    good = C.fit([0, 1, 0, 1], [-1.0, 1.0, 0.3, 0.2]).to_dict()
    assert C.Calibration.from_dict(good).to_dict() == good
    for key, value, match in (("temperature", -1.0, "temperature: expected a positive"),
                              ("temperature", "2", "temperature: expected a positive"),
                              ("points", {"fpr@0.3": {"threshold": 0.5}}, "unknown operating"),
                              ("points", {"eer": {"threshold": 1.5}}, "eer.threshold"),
                              ("fitted_on", [1], "fitted_on: expected a mapping")):
        with pytest.raises(UserError, match=match):
            C.Calibration.from_dict({**good, key: value}, "x.bin: calibration")


# ------------------------------------------------------------------ through the doors
@pytest.fixture(scope="module")
def data(demo_root, tmp_path_factory):
    """An ImageList tree of the demo's frames, a config whose validation branch is it, and an
    uncalibrated checkpoint of a Recce at 64 px whose validation logits a temperature can fit:
    a random Recce's head rescaled so that its logits have mean 0 and spread 1 on those frames,
    the fake frames scoring higher on average (a random head's logits, all on one side of 0 and
    close together, fit no temperature below the search's bound)."""
    from model.checkpoint import load_detector
    from trainer.config import load_config
    from trainer.evaluation_report import score_split, test_branch
    tmp = tmp_path_factory.mktemp("calib")
    root = image_list_tree(demo_root, tmp / "data", videos=3, frames=2)
    cfg = write_config(tmp, root)
    torch.manual_seed(0)
    ckpt = tmp / "best_model_1.bin"
    state = {"model": Recce().state_dict(), "config": {"model": {"name": "Recce"}},
             "input_spec": SPEC.to_dict()}
    torch.save(state, ckpt)
    _, res = score_split(load_config(cfg), load_detector(str(ckpt), "cpu"), torch.device("cpu"),
                         test_branch(load_config(cfg), SPEC, "val_cfg"))
    z, y = np.asarray(res["logit"], np.float64), np.asarray(res["label"])
    sign = 1.0 if z[y == 1].mean() > z[y == 0].mean() else -1.0
    scale = sign / z.std()
    head = state["model"]
    head["fc.bias"] = ((head["fc.bias"].double() - z.mean()) * scale).float()
    head["fc.weight"] = (head["fc.weight"].double() * scale).float()
    torch.save(state, ckpt)
    return {"root": root, "cfg": cfg, "ckpt": str(ckpt), "tmp": tmp}


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.slow
def test_calibrate_tool_writes_a_new_checkpoint_and_never_overwrites(data, capsys):
    from tools import calibrate
    before = _digest(data["ckpt"])
    assert calibrate.main(["--bin", data["ckpt"], "--config", data["cfg"], "--device", "cpu"]) == 0
    out = data["ckpt"].replace(".bin", ".calibrated.bin")
    said = capsys.readouterr().out
    assert f"written: {out}" in said and "fpr@0.01" in said
    assert _digest(data["ckpt"]) == before  # the given file is untouched
    state = torch.load(out, weights_only=True)  # plain values: read without trusting it
    cal = C.Calibration.from_dict(state["calibration"])
    assert cal.fitted_on["branch"] == "val_cfg" and cal.fitted_on["frames"] == 12
    # the temperature is the one of the validation frames' own scores
    from model.checkpoint import load_detector
    from trainer.config import load_config
    from trainer.evaluation_report import score_split, test_branch
    det = load_detector(out, "cpu")
    assert det.calibration.temperature == cal.temperature
    _, res = score_split(load_config(data["cfg"]), det, torch.device("cpu"),
                         test_branch(load_config(data["cfg"]), det.spec, "val_cfg"))
    assert C.fit_temperature(res["label"], res["logit"]) == pytest.approx(cal.temperature,
                                                                          rel=1e-6)
    # a second run refuses to overwrite what is there, and the file there is kept as it was
    sentinel = _digest(out)
    assert calibrate.main(["--bin", data["ckpt"], "--config", data["cfg"], "--device",
                           "cpu"]) == 2
    assert "the file exists" in capsys.readouterr().err and _digest(out) == sentinel
    assert calibrate.main(["--bin", data["ckpt"], "--config", data["cfg"], "--out",
                           data["ckpt"]]) == 2
    assert "never changes the given one" in capsys.readouterr().err
    assert _digest(data["ckpt"]) == before
    assert calibrate.main(["--bin", data["ckpt"], "--config", data["cfg"], "--branch", "nope",
                           "--out", str(data["tmp"] / "x.bin")]) == 2
    assert "error: --branch 'nope': " in capsys.readouterr().err
    assert not (data["tmp"] / "x.bin").exists()


@pytest.mark.slow
def test_a_bare_state_dict_is_calibrated_into_a_self_describing_file(data, capsys):
    from tools import calibrate
    bare = data["tmp"] / "bare.pth"
    torch.save(torch.load(data["ckpt"], weights_only=True)["model"], bare)
    out = data["tmp"] / "bare_cal.pth"
    assert calibrate.main(["--bin", str(bare), "--config", data["cfg"], "--out", str(out)]) == 0
    from model.checkpoint import load_detector
    det = load_detector(str(out), "cpu")  # no config, no fallback: the file says it all
    assert det.spec_source == "saved" and det.spec.size == (64, 64)
    assert det.calibration is not None and type(det).__name__ == "Recce"


@pytest.mark.slow
def test_calibrate_tool_refuses_a_fit_without_spread_and_writes_nothing(data, capsys):
    """A head whose weights are zero gives every frame the same logit (its bias): one error line
    saying so, exit 2, the given file untouched, no --out and no default file written."""
    from tools import calibrate
    state = torch.load(data["ckpt"], weights_only=True)
    state["model"]["fc.weight"].zero_()
    flat = data["tmp"] / "flat.bin"
    torch.save(state, flat)
    before = _digest(flat)
    out = data["tmp"] / "flat_out.bin"
    for extra in (["--out", str(out)], []):
        assert calibrate.main(["--bin", str(flat), "--config", data["cfg"], "--device", "cpu",
                               *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        assert captured.err.startswith(f"error: {flat} on ImageList / val_cfg: calibration: the "
                                       "12 frames' logits are all equal (")
        assert captured.err.endswith("; nothing was written\n")
        assert _digest(flat) == before
    assert not out.exists() and not (data["tmp"] / "flat.calibrated.bin").exists()


def test_train_py_leaves_a_best_checkpoint_uncalibrated_where_the_fit_is_refused(
        demo_root, tmp_path):
    """A run whose head is zeroed after every step validates logits that are all equal: the best
    checkpoint has no calibration, and the log and train.py's closing line say why. The same run
    left alone is calibrated (the control)."""
    from helpers import ROOT
    from train import summary_lines
    from trainer.config import load_config
    from trainer.hooks import Hook
    from trainer.train import Trainer

    class Flat(Hook):
        def after_step(self, trainer, losses):
            with torch.no_grad():
                trainer.model.fc.weight.zero_()

    root = image_list_tree(demo_root, tmp_path / "d")

    def train(run_id, *hooks):
        cfg = load_config(write_config(
            tmp_path, root, steps=3, val_steps=3, batch=4, model={"name": "TinyDetector"},
            run_id=run_id, extra={"imports": [os.path.join(ROOT, "tests", "plugins",
                                                           "tiny_detector.py")],
                                  "seed": 7, "optimizer": {"name": "sgd", "lr": 0.5}}))
        trainer = Trainer(cfg)
        for hook in hooks:
            trainer.add_hook(hook)
        result = trainer.fit()
        trainer.close()
        return result
    control = train("control")
    stored = torch.load(control["best_checkpoint"], weights_only=True)["calibration"]
    assert stored["fitted_on"]["weights"] == "raw"
    assert summary_lines(control).splitlines()[-1].startswith("calibrated: temperature ")
    result = train("flat", Flat())
    log = open(os.path.join(result["run_dir"], "train_rank0.log")).read().splitlines()
    said = [line.split(" WARNING ", 1)[1] for line in log if "not calibrated" in line]
    why = "calibration: the 12 frames' logits are all equal ("
    assert len(said) == 1 and said[0].startswith(f"best checkpoints are not calibrated: {why}")
    assert result["best_checkpoint"] and result["calibration"] is None
    assert "calibration" not in torch.load(result["best_checkpoint"], weights_only=True)
    assert summary_lines(result).splitlines()[-1] == \
        f"not calibrated: {said[0].split(': ', 1)[1]}"


@pytest.fixture(scope="module")
def calibrated(data):
    """The uncalibrated checkpoint with a hand-made calibration: temperature 2."""
    state = torch.load(data["ckpt"], weights_only=True)
    points = {"fpr@0.01": {"threshold": 0.9, "fpr": 0.01, "tpr": 0.4},
              "fpr@0.05": {"threshold": 0.7, "fpr": 0.05, "tpr": 0.6},
              "fpr@0.1": {"threshold": 0.6, "fpr": 0.1, "tpr": 0.7},
              "eer": {"threshold": 0.5, "fpr": 0.2, "tpr": 0.8}}
    state["calibration"] = C.Calibration(2.0, points, {"dataset": "d", "branch": "val_cfg",
                                                       "frames": 12},
                                         {"ece": 0.2, "nll": 0.9}, {"ece": 0.1, "nll": 0.7}
                                         ).to_dict()
    path = data["tmp"] / "hand_calibrated.bin"
    torch.save(state, path)
    return str(path)


def _logit(p):
    return math.log(p / (1 - p))


def test_the_api_gives_calibrated_probabilities_and_says_the_threshold(data, calibrated):
    from faces import Predictor
    images = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(data["root"]) for f in fs)[:4]
    raw = Predictor.from_checkpoint(data["ckpt"], "cpu").predict(images)
    det = Predictor.from_checkpoint(calibrated, "cpu", threshold="fpr@0.05")
    assert (det.threshold, det.threshold_source) == (0.7, "fpr@0.05")
    assert det.calibration["temperature"] == 2.0
    cal = det.predict(images)
    for r, c in zip(raw, cal):
        assert c == pytest.approx(1 / (1 + math.exp(-_logit(r) / 2.0)), abs=1e-5)
    assert raw != pytest.approx(cal, abs=1e-3)
    with pytest.raises(UserError, match="no calibration"):
        Predictor.from_checkpoint(data["ckpt"], "cpu", threshold="eer")
    with pytest.raises(UserError, match="threshold 'fpr@1'"):
        Predictor.from_checkpoint(data["tmp"] / "not_read.bin", "cpu", threshold="fpr@1")


def test_inference_rows_carry_raw_probability_and_threshold_source(data, calibrated, tmp_path,
                                                                   capsys):
    import inference
    folder = os.path.join(data["root"], "fake", "v0")
    out = tmp_path / "rows.csv"
    assert inference.main(["-b", calibrated, "-f", folder, "-d", "cpu", "--threshold",
                           "fpr@0.01", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("threshold: 0.9000 (fpr@0.01, validation FPR 0.0100, TPR "
                                   "0.4000); calibrated probabilities (temperature 2.0000")
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 2
    for row in rows:
        p, raw = float(row["fake_probability"]), float(row["raw_probability"])
        assert p == pytest.approx(1 / (1 + math.exp(-_logit(raw) / 2.0)), abs=1e-6)
        assert (row["threshold"], row["threshold_source"]) == ("0.9", "fpr@0.01")
        assert row["prediction"] == ("fake" if p >= 0.9 else "real")
    lines = captured.out.splitlines()  # the original's lines, with the calibrated numbers
    assert len(lines) == 2 and all(line.startswith("path: ") for line in lines)
    assert f"fake probability: {float(rows[0]['fake_probability']):.4f} \t| prediction: " \
        in lines[0]
    assert inference.main(["-b", calibrated, "-f", folder, "--threshold", "2"]) == 2
    assert "--threshold 2: expected a probability in [0, 1]" in capsys.readouterr().err
    assert inference.main(["-b", data["ckpt"], "-f", folder, "--threshold", "eer"]) == 2
    assert "error: --threshold eer: the checkpoint has no calibration" in capsys.readouterr().err


def test_test_py_reports_calibration_and_the_rates_at_each_point(data, calibrated, tmp_path,
                                                                 capsys):
    import test as test_py
    out = tmp_path / "t"
    assert test_py.main(["--config", data["cfg"], "--ckpt", calibrated, "--device", "cpu",
                         "--out", str(out), "--opt", "data.test_branch=val_cfg",
                         "--threshold", "fpr@0.1"]) == 0
    said = capsys.readouterr().out
    assert "calibration (15 equal-width bins for ECE): temperature 2.0000" in said
    assert "at threshold 0.6000 (fpr@0.1)" in said
    assert (out / "reliability.png").stat().st_size > 5000
    metrics = json.load(open(out / "metrics.json"))
    report = metrics["calibration"]
    rows = list(csv.DictReader(open(out / "scores.csv")))
    labels = np.array([int(r["label"]) for r in rows])
    logits = np.array([float(r["logit"]) for r in rows])
    probs = 1 / (1 + np.exp(-logits / 2.0))
    # recomputed here, independently of the module: ECE by its definition, rates by counting
    edges = np.minimum((probs * 15).astype(int), 14)
    ece = sum(np.sum(edges == b) / len(probs) * abs(probs[edges == b].mean()
                                                     - labels[edges == b].mean())
              for b in range(15) if np.any(edges == b))
    assert report["calibrated"]["ece"] == pytest.approx(ece, abs=1e-9)
    assert report["raw"]["brier"] == pytest.approx(
        np.mean((1 / (1 + np.exp(-logits)) - labels) ** 2), abs=1e-9)
    for name, point in report["points"].items():
        called = probs >= point["threshold"]
        assert point["test_fpr"] == pytest.approx(called[labels == 0].mean())
        assert point["test_tpr"] == pytest.approx(called[labels == 1].mean())
    assert report["threshold"]["source"] == "fpr@0.1"


@pytest.mark.slow
def test_test_py_rows_read_as_inference_and_the_api_read_the_same_crops(data, calibrated,
                                                                       tmp_path):
    """One crop, one number under one name: test.py's scores.csv, inference.py --output and the
    API give the same calibrated fake_probability and the same raw_probability for each crop of
    a calibrated checkpoint; the metrics stay the raw scores'."""
    import inference
    import test as test_py
    from faces import Predictor
    out = tmp_path / "t"
    assert test_py.main(["--config", data["cfg"], "--ckpt", calibrated, "--device", "cpu",
                         "--out", str(out), "--opt", "data.test_branch=val_cfg"]) == 0
    with open(out / "scores.csv", newline="") as fh:
        tested = {os.path.abspath(r["path"]): r for r in csv.DictReader(fh)}
    assert len(tested) == 12
    assert inference.main(["-b", calibrated, "-f", data["root"], "--recursive", "-d", "cpu",
                           "--output", str(tmp_path / "rows.csv")]) == 0
    with open(tmp_path / "rows.csv", newline="") as fh:
        inferred = {os.path.abspath(r["path"]): r for r in csv.DictReader(fh)}
    assert set(inferred) == set(tested)
    paths = sorted(tested)
    api = Predictor.from_checkpoint(calibrated, "cpu").predict(paths)
    for path, p in zip(paths, api):
        row = tested[path]
        raw, shown = float(row["raw_probability"]), float(row["fake_probability"])
        assert raw == pytest.approx(1 / (1 + math.exp(-float(row["logit"]))), abs=1e-6)
        assert shown == pytest.approx(1 / (1 + math.exp(-float(row["logit"]) / 2.0)), abs=1e-12)
        assert abs(shown - raw) > 1e-4  # calibrated: not the raw number under its name
        assert float(inferred[path]["fake_probability"]) == pytest.approx(shown, abs=1e-5)
        assert float(inferred[path]["raw_probability"]) == pytest.approx(raw, abs=1e-5)
        assert p == pytest.approx(shown, abs=1e-5)
    from sklearn.metrics import roc_auc_score
    metrics = json.load(open(out / "metrics.json"))
    labels = [int(tested[p]["label"]) for p in paths]
    raws = [float(tested[p]["raw_probability"]) for p in paths]
    assert roc_auc_score(labels, raws) == metrics["AUC"]
    assert float(np.mean((np.array(raws) >= 0.5) == labels)) == metrics["ACC"]


# ------------------------------------------------------------------ stored calibrations, tampered
GOOD = {"temperature": 2.0,
        "points": {name: {"threshold": t, "fpr": f, "tpr": r} for name, t, f, r in (
            ("fpr@0.01", 0.9, 0.01, 0.4), ("fpr@0.05", 0.7, 0.05, 0.6),
            ("fpr@0.1", 0.6, 0.1, 0.7), ("eer", 0.5, 0.2, 0.8))},
        "fitted_on": {"dataset": "d", "branch": "val_cfg", "frames": 12},
        "before": {"ece": 0.2, "nll": 0.9, "brier": 0.3},
        "after": {"ece": 0.1, "nll": 0.7, "brier": 0.2}, "ece_bins": 15}


def _with(path, value):
    """GOOD with the key at ``path`` ("points/eer/fpr") set to ``value`` (``...`` removes
    it)."""
    out = json.loads(json.dumps(GOOD))
    *parents, last = path.split("/")
    at = out
    for key in parents:
        at = at[key]
    if value is ...:
        del at[last]
    else:
        at[last] = value
    return out


# a stored calibration that a reader would stumble on -> the one line that names it
TAMPERED = [
    ({"temperature": 1.3, "points": {"eer": {"threshold": 0.6}}},
     "calibration.before: missing (a calibration holds temperature, points, before and after"),
    (_with("before", ...), "calibration.before: missing"),
    (_with("after/ece", ...), "calibration.after.ece: missing (required: ece, nll)"),
    (_with("points/eer/fpr", ...), "calibration.points.eer.fpr: missing (required: threshold, "
                                   "fpr, tpr)"),
    (_with("points/fpr@0.05", {"threshold": 0.7}), "calibration.points.fpr@0.05.fpr: missing"),
    (_with("points/eer/tpr", "0.8"), "calibration.points.eer.tpr: expected a number, got '0.8'"),
    (_with("points/eer/threshold", 1.5), "calibration.points.eer.threshold: expected a "
                                         "probability in [0, 1], got 1.5"),
    (_with("points/eer", 0.5), "calibration.points.eer: expected a mapping, got 0.5"),
    (_with("points", [0.5]), "calibration.points: expected a mapping, got [0.5]"),
    (_with("points/fpr@0.2", {"threshold": 0.5, "fpr": 0.2, "tpr": 0.9}),
     "calibration.points: unknown operating point 'fpr@0.2'"),
    (_with("temperature", float("nan")), "calibration.temperature: expected a positive finite "
                                         "number, got nan"),
    (_with("temperature", ...), "calibration.temperature: missing"),
    (_with("before/nll", float("inf")), "calibration.before.nll: expected a number of at least 0, "
                                        "got inf"),
    (_with("after", "good"), "calibration.after: expected a mapping, got 'good'"),
    (_with("fitted_on/frames", -3), "calibration.fitted_on.frames: expected an integer of at "
                                    "least 0, got -3"),
    (_with("fitted_on", [1]), "calibration.fitted_on: expected a mapping, got [1]"),
    ([2.0], "calibration: expected a mapping, got [2.0]"),
]
# partial but whole enough: what is left out has a stated meaning
PARTIAL = [_with("fitted_on", ...), _with("before/brier", ...), _with("ece_bins", ...),
           _with("points", {"eer": GOOD["points"]["eer"]}), _with("fitted_on/branch", None)]


@pytest.fixture(scope="module")
def stored(data, tmp_path_factory):
    """A checkpoint per calibration of TAMPERED and PARTIAL: (tampered, partial) paths."""
    tmp = tmp_path_factory.mktemp("stored")
    state = torch.load(data["ckpt"], weights_only=True)

    def save(name, calibration):
        torch.save({**state, "calibration": calibration}, tmp / name)
        return str(tmp / name)
    return ([save(f"tampered_{k}.bin", c) for k, (c, _) in enumerate(TAMPERED)],
            [save(f"partial_{k}.bin", c) for k, c in enumerate(PARTIAL)])


def test_a_stored_calibration_is_one_schema_checked_once():
    assert C.Calibration.from_dict(GOOD).to_dict() == GOOD
    for calibration, said in TAMPERED:
        with pytest.raises(UserError) as info:
            C.Calibration.from_dict(calibration, "x.bin: calibration")
        assert str(info.value).startswith(f"x.bin: {said}"), str(info.value)
    for calibration in PARTIAL:
        cal = C.Calibration.from_dict(calibration)
        assert cal.describe().startswith("temperature 2.0000 (fitted on ")
        assert C.resolve_threshold("eer", cal) == (0.5, "eer")
    cal = C.Calibration.from_dict(_with("fitted_on", ...))
    assert "(fitted on ? / ?, ? frames; ECE 0.2000 -> 0.1000" in cal.describe()


@pytest.mark.parametrize("k", range(len(TAMPERED)), ids=[t[1][:40] for t in TAMPERED])
@pytest.mark.slow
def test_a_tampered_calibration_is_one_line_through_every_door(data, stored, k, tmp_path,
                                                               capsys):
    """The API, inference.py (with and without an operating point) and test.py: one line naming
    the file and the key, no output file, never a traceback."""
    import inference
    import test as test_py
    from faces import Predictor
    path, said = stored[0][k], TAMPERED[k][1]
    with pytest.raises(UserError) as info:
        Predictor.from_checkpoint(path, "cpu")
    assert str(info.value).startswith(f"{path}: {said}") and "\n" not in str(info.value)
    folder = os.path.join(data["root"], "fake", "v0")
    out = tmp_path / "rows.csv"
    for extra in ([], ["--threshold", "eer"]):
        assert inference.main(["-b", path, "-f", folder, "-d", "cpu", "--output", str(out),
                               *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        assert captured.err.startswith(f"error: {path}: {said}")
    assert test_py.main(["--config", data["cfg"], "--ckpt", path, "--device", "cpu", "--out",
                         str(tmp_path / "t"), "--opt", "data.test_branch=val_cfg"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"error: {path}: {said}")
    assert not any("Traceback" in line for line in err)
    assert not out.exists()
    assert not (tmp_path / "t").exists() or os.listdir(tmp_path / "t") == []


@pytest.mark.slow
def test_a_partial_calibration_scores_where_what_it_lacks_has_a_meaning(data, stored, capsys):
    import inference
    from faces import Predictor
    folder = os.path.join(data["root"], "fake", "v0")
    for path in stored[1]:
        det = Predictor.from_checkpoint(path, "cpu", threshold="eer")
        assert det.threshold == 0.5 and "calibrated probabilities" in det.describe_threshold()
        assert inference.main(["-b", path, "-f", folder, "-d", "cpu", "--threshold", "eer"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2
    only_eer = stored[1][PARTIAL.index(_with("points", {"eer": GOOD["points"]["eer"]}))]
    assert inference.main(["-b", only_eer, "-f", folder, "-d", "cpu", "--threshold",
                           "fpr@0.01"]) == 2
    assert capsys.readouterr().err == ("error: --threshold fpr@0.01: the checkpoint's calibration "
                                       "has no frame-level operating point fpr@0.01 (it has eer)\n")


@pytest.mark.slow
def test_calibrate_tool_replaces_a_tampered_calibration(data, stored, tmp_path, capsys):
    """The error's remedy works: tools/calibrate.py reads a file whose calibration is broken and
    writes a new one with a whole calibration; the given file keeps what it had."""
    from tools import calibrate
    path = stored[0][0]
    before = _digest(path)
    out = tmp_path / "recalibrated.bin"
    assert calibrate.main(["--bin", path, "--config", data["cfg"], "--device", "cpu", "--out",
                           str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"replaced its unreadable calibration ({path}: {TAMPERED[0][1]}")
    assert _digest(path) == before
    from model.checkpoint import load_detector
    assert load_detector(str(out), "cpu").calibration.fitted_on["branch"] == "val_cfg"


@pytest.mark.slow
def test_the_issue_s_calibration_in_a_fresh_process(stored, data):
    """``{temperature: 1.3, points: {eer: {threshold: 0.6}}}`` as a user meets it."""
    path = stored[0][0]
    proc = cli(["inference.py", "-b", path, "-f", os.path.join(data["root"], "fake", "v0"), "-d",
                "cpu", "--threshold", "eer"], timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {path}: {TAMPERED[0][1]}; tools/calibrate.py writes one)\n"


def test_video_and_photo_verdicts_aggregate_calibrated_faces(data, calibrated, tmp_path):
    pytest.importorskip("dlib")
    from faces import Predictor
    from helpers import hopper_video
    video = hopper_video(tmp_path / "clip.avi")
    det = Predictor.from_checkpoint(calibrated, "cpu", threshold=0.55)
    rec = det.predict_video(video, frames=3)
    faces = [f for f in rec["faces"] if f["track"] == rec["track"]]
    assert rec["fake_probability"] == pytest.approx(np.mean([f["fake_probability"]
                                                             for f in faces]))
    assert rec["raw_probability"] == pytest.approx(np.mean([f["raw_probability"]
                                                            for f in faces]))
    for f in faces:
        assert f["fake_probability"] == pytest.approx(
            1 / (1 + math.exp(-_logit(f["raw_probability"]) / 2.0)), abs=1e-6)
    assert (rec["threshold"], rec["threshold_source"]) == (0.55, "given")
    assert rec["prediction"] == ("fake" if rec["fake_probability"] >= 0.55 else "real")
