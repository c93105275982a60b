"""test.py: metrics, outputs and cross-dataset tests end to end, the metrics recomputed from
scores.csv, DeepfakeBench's video grouping; bad weights, outputs and data are one line and make
nothing."""
import csv
import json
import os

import numpy as np
import pytest
import torch
import yaml

from deepfakebench_cases import fixed_scores
from helpers import TF, cli, image_list_tree, write_config


@pytest.mark.slow
def test_test_py_metrics_outputs_and_cross_dataset(run_checkpoint, demo_root, tmp_path):
    path, _ = run_checkpoint
    tf = [{"name": "Resize", "params": {"height": 32, "width": 32}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    ds = {"test_cfg": {"root": os.path.join(demo_root, "faceforensics"), "split": "test",
                       "transforms": tf}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    cfg = {"model": {"name": "Recce"}, "data": {"name": "FaceForensics",
                                                "file": str(tmp_path / "ds.yml"), "num_workers": 1}}
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    proc = cli(["test.py", "--config", str(tmp_path / "cfg.yml"), "--ckpt", path, "--device", "cpu",
                 "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "AUC" in proc.stdout and "Deepfakes ACC / AUC" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"ACC", "AUC", "EER", "AP", "LogLoss", "video_AUC", "FaceSwap_AUC"} <= set(metrics)
    fpr, tpr, thr = torch.load(out / "roc_curve.pickle", weights_only=True)
    assert fpr.dtype == torch.float64 and len(fpr) == len(thr)
    assert (out / "roc.png").is_file()
    from dataset import build_dataset
    n_test = len(build_dataset("FaceForensics", ds["test_cfg"]))
    assert len(list(csv.reader(open(out / "scores.csv")))) == 1 + n_test
    # cross-dataset: the same model on the Celeb-DF-layout set is one config change
    proc = cli(["test.py", "--config", str(tmp_path / "cfg.yml"), "--ckpt", path, "--device", "cpu",
                 "--out", str(tmp_path / "celeb"), "--opt", "data.name=CelebDF",
                 "--opt", "test_cfg.root=" + os.path.join(demo_root, "celeb_df")])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "celeb" / "metrics.json").read_text())["AUC"] is not None
    missing = cli(["test.py", "--config", str(tmp_path / "cfg.yml")])
    assert missing.returncode == 2 and "config.id" in missing.stderr


def test_test_py_output_checks_nan_weights_and_one_class(tmp_path, demo_root, bare_checkpoint,
                                                        nan_checkpoint, capsys):
    import shutil

    import test as test_py
    root = image_list_tree(demo_root, tmp_path / "d")
    path = write_config(tmp_path, root, data={"test_branch": "val_cfg"})
    (tmp_path / "afile").write_text("x")
    assert test_py.main(["--config", path, "--ckpt", bare_checkpoint, "--device", "cpu",
                         "--out", str(tmp_path / "afile")]) == 2
    assert "is a file, expected a folder" in capsys.readouterr().err
    assert test_py.main(["--config", path, "--ckpt", nan_checkpoint, "--device", "cpu",
                         "--out", str(tmp_path / "o")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    shutil.rmtree(os.path.join(root, "fake"))
    os.makedirs(os.path.join(root, "fake"))
    assert test_py.main(["--config", path, "--ckpt", bare_checkpoint, "--device", "cpu",
                         "--out", str(tmp_path / "one")]) == 0
    out = capsys.readouterr().out
    assert "written to" in out and out.strip().endswith("metrics.json, scores.csv")
    assert sorted(os.listdir(tmp_path / "one")) == ["metrics.json", "scores.csv"]


@pytest.mark.slow
def test_metrics_recompute_exactly_from_scores_csv(tmp_path, demo_root, bare_checkpoint):
    """Frame, video and per-method metrics from scores.csv alone, with scikit-learn directly."""
    from sklearn.metrics import roc_auc_score

    import test as test_py
    ds = {"test_cfg": {"root": os.path.join(demo_root, "faceforensics"), "split": "test",
                       "transforms": TF}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce"},
        "data": {"name": "FaceForensics", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "test_batch_size": 128}}))
    assert test_py.main(["--config", str(tmp_path / "c.yml"), "--ckpt", bare_checkpoint,
                         "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "o" / "scores.csv")))
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["raw_probability"]) for r in rows])  # the metrics' own, the logits'
    z = np.array([float(r["logit"]) for r in rows])
    assert np.allclose(1 / (1 + np.exp(-z)), p, atol=1e-6)
    assert roc_auc_score(y, p) == metrics["AUC"]
    assert float(((p >= 0.5) == y).mean()) == metrics["ACC"]
    videos = {}
    for r, prob in zip(rows, p):
        videos.setdefault(r["video"], [int(r["label"]), []])[1].append(prob)
    vy = [v[0] for v in videos.values()]
    vp = [float(np.mean(v[1])) for v in videos.values()]
    assert roc_auc_score(vy, vp) == metrics["video_AUC"]
    methods = np.array([r["method"] for r in rows])
    keep = (methods == "FaceSwap") | (y == 0)
    assert roc_auc_score(y[keep], p[keep]) == metrics["FaceSwap_AUC"]


def test_a_run_that_fails_on_its_input_leaves_no_output_folder(tmp_path, capsys,
                                                               make_checkpoint):
    import test as test_py
    ckpt = make_checkpoint(tmp_path / "m.bin")
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"test_cfg": {"root": str(tmp_path / "typo")}}))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({"model": {"name": "Recce"}, "data": {
        "name": "ImageList", "file": str(tmp_path / "ds.yml"), "num_workers": 0}}))
    out = tmp_path / "new" / "results"
    assert test_py.main(["--config", str(tmp_path / "c.yml"), "--ckpt", str(ckpt), "--out",
                         str(out), "--device", "cpu"]) == 2
    assert "dataset root not found" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # nothing made in the mistyped place
    (tmp_path / "afile").write_text("x")
    assert test_py.main(["--config", str(tmp_path / "c.yml"), "--ckpt", str(ckpt), "--out",
                         str(tmp_path / "afile" / "sub"), "--device", "cpu"]) == 2
    assert "is a file, not a folder to make it in" in capsys.readouterr().err


def test_video_auc_deepfakebench_merges_same_named_folders(shared_names, monkeypatch, capsys):
    """By hand. Project videos: reals 0.3, 0.7, 0.1; fakes 0.95, 0.9, 0.35, 0.8, 0.5: fake above
    real in 3 + 3 + 2 + 3 + 2 = 13 of 15 pairs. DeepfakeBench's (folder names): 000 0.3 and 001
    0.7 real; 002 (0.95, 0.1) = 0.525 with label int(1 / 2) = 0, real; 000_001 (0.9, 0.35) = 0.625
    and 001_000 (0.8, 0.5) = 0.65 fake, each above 0.3 and 0.525, below 0.7: 4 of 6 pairs."""
    import test as test_py
    fixed_scores(monkeypatch)
    cfg = str(shared_names / "c.yml")
    out = {}
    for rule in ("project", "deepfakebench"):
        argv = ["--config", cfg, "--ckpt", "stand-in.bin", "--device", "cpu", "--out",
                str(shared_names / rule)]
        assert test_py.main(argv + ([] if rule == "project" else ["--video_auc", rule])) == 0
        out[rule] = json.loads((shared_names / rule / "metrics.json").read_text())
    printed = capsys.readouterr().out
    assert printed.count("DeepfakeBench's videos") == 1
    assert out["project"]["video_AUC"] == pytest.approx(13 / 15)
    assert out["deepfakebench"]["video_AUC"] == pytest.approx(4 / 6)
    assert out["project"]["AUC"] == out["deepfakebench"]["AUC"]
    assert (out["project"]["video_grouping"], out["deepfakebench"]["video_grouping"]) == (
        "project", "deepfakebench")
    with pytest.raises(SystemExit):  # argparse refuses another grouping
        test_py.main(["--config", cfg, "--video_auc", "folders"])
