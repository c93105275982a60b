"""test.py, inference.py and tools/export.py end to end on small data made here."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from inference import line_for
from model import Recce


def _cli(args, **kw):
    return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialized model saved in this project's checkpoint format."""
    torch.manual_seed(0)
    model = Recce().eval()
    path = tmp_path_factory.mktemp("ckpt") / "best_model_7.bin"
    torch.save({"step": 7, "best_step": 7, "best_metric": 0.5, "eval_metric": "AUC",
                "model": model.state_dict(), "optimizer": {}, "scheduler": {}}, path)
    return str(path), model


@pytest.fixture()
def faces(tmp_path):
    folder = tmp_path / "faces"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("b.PNG", "a.jpg", "c.jpeg", "sub/d.png"):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def _expected_prob(model, path, size):
    import albumentations as A
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    img = A.Resize(size, size)(image=img)["image"]
    x = torch.from_numpy((img.astype(np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        return torch.sigmoid(model(x))[0, 0].item()


@pytest.mark.slow
def test_inference_lines_order_and_probabilities(checkpoint, faces, tmp_path):
    path, model = checkpoint
    out = tmp_path / "res.json"
    proc = _cli(["inference.py", "-b", path, "-f", str(faces), "-d", "cpu", "-s", "32",
                 "--output", str(out), "--num_workers", "1"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    names = ["a.jpg", "b.PNG", "c.jpeg"]
    assert [line.split(" \t\t|")[0] for line in lines] == [f"path: {faces / n}" for n in names]
    for line, name in zip(lines, names):
        p = _expected_prob(model, faces / name, 32)
        shown = float(line.split("probability: ")[1].split()[0])
        assert abs(shown - p) < 1e-3
        verdict = "fake" if shown >= 0.5 else "real"  # 4 decimals, as printed
        assert line == f"path: {faces / name} \t\t| fake probability: {shown:.4f} \t| prediction: {verdict}"
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == [str(faces / n) for n in names]
    rec = _cli(["inference.py", "-w", path, "-f", str(faces), "-s", "32", "--recursive",
                "--batch_size", "3", "-d", "cpu"])
    assert rec.returncode == 0 and len(rec.stdout.strip().splitlines()) == 4


def test_output_line_format_is_the_originals():
    assert line_for("x.png", 0.12964) == \
        "path: x.png \t\t| fake probability: 0.1296 \t| prediction: real"
    assert line_for("y.png", 0.5).endswith("| prediction: fake")


@pytest.mark.slow
def test_inference_bad_file_is_skipped_with_exit_1(checkpoint, faces, tmp_path):
    path, _ = checkpoint
    (faces / "broken.png").write_bytes(b"\x89PNG truncated")
    vis = tmp_path / "vis"
    out = tmp_path / "r.csv"
    proc = _cli(["inference.py", "-b", path, "-f", str(faces), "-s", "32", "-d", "cpu", "-v",
                 "--vis_dir", str(vis), "--output", str(out)])
    assert proc.returncode == 1
    assert len(proc.stdout.strip().splitlines()) == 3
    assert [l for l in proc.stderr.splitlines() if "broken.png" in l][0].startswith("skipped")
    assert len(list(vis.glob("*.png"))) == 3
    rows = list(csv.DictReader(open(out)))
    assert [r["prediction"] == "" for r in rows] == [False, False, True, False]


@pytest.mark.slow
def test_inference_usage_errors_are_one_line(checkpoint, tmp_path):
    path, _ = checkpoint
    (tmp_path / "empty").mkdir()
    for args, text in [(["-b", path, "-f", str(tmp_path / "nope")], "image folder not found"),
                       (["-b", path, "-f", str(tmp_path / "empty")], "no images"),
                       (["-b", str(tmp_path / "x.bin"), "-f", str(tmp_path)], "checkpoint not found")]:
        proc = _cli(["inference.py"] + args + ["-d", "cpu"])
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and text in proc.stderr


def test_checkpoint_flavours_load_alike(checkpoint, tmp_path):
    from model.checkpoint import load_weights
    path, model = checkpoint
    state = model.state_dict()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = torch.sigmoid(model(x))
    # DeepfakeBench: prefixes, a backbone copy, and a two-logit head
    w2 = torch.cat([torch.zeros_like(state["fc.weight"]), state["fc.weight"]])
    b2 = torch.cat([torch.zeros_like(state["fc.bias"]), state["fc.bias"]])
    bench = {f"module.model.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    bench.update({"module.model.fc.weight": w2, "module.model.fc.bias": b2,
                  "backbone.conv1.weight": torch.zeros(1)})
    for flavour in ({"model": state}, state, {f"module.{k}": v for k, v in state.items()}, bench):
        fresh = load_weights(Recce().eval(), flavour)
        with torch.no_grad():
            assert torch.allclose(torch.sigmoid(fresh(x)), ref, atol=1e-6)
    from model.checkpoint import checkpoint_num_classes
    assert checkpoint_num_classes({"model": state}) == 1
    assert checkpoint_num_classes(bench) == 2  # read from the head's shape
    assert checkpoint_num_classes({"model": {}, "config": {"model": {"num_classes": 2}}}) == 2
    from errors import UserError
    with pytest.raises(UserError, match="missing keys"):
        load_weights(Recce(), {"model": {"fc.weight": torch.zeros(1, 2048)}})


@pytest.mark.slow
def test_test_py_metrics_outputs_and_cross_dataset(checkpoint, demo_root, tmp_path):
    path, _ = checkpoint
    tf = [{"name": "Resize", "params": {"height": 32, "width": 32}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    ds = {"test_cfg": {"root": os.path.join(demo_root, "faceforensics"), "split": "test",
                       "transforms": tf}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    cfg = {"model": {"name": "Recce"}, "data": {"name": "FaceForensics",
                                                "file": str(tmp_path / "ds.yml"), "num_workers": 1}}
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    proc = _cli(["test.py", "--config", str(tmp_path / "cfg.yml"), "--ckpt", path, "--device", "cpu",
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
    proc = _cli(["test.py", "--config", str(tmp_path / "cfg.yml"), "--ckpt", path, "--device", "cpu",
                 "--out", str(tmp_path / "celeb"), "--opt", "data.name=CelebDF",
                 "--opt", "test_cfg.root=" + os.path.join(demo_root, "celeb_df")])
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "celeb" / "metrics.json").read_text())["AUC"] is not None
    missing = _cli(["test.py", "--config", str(tmp_path / "cfg.yml")])
    assert missing.returncode == 2 and "config.id" in missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torch.export"])
def test_export_agrees_with_eager(checkpoint, tmp_path, fmt):
    import onnxruntime  # noqa: F401 - a dev requirement: the ONNX file is always checked here
    from tools.export import export, load_for_export
    path, _ = checkpoint
    model = load_for_export(path)
    diff = export(model, fmt, str(tmp_path / f"m.{fmt}"), size=32, with_recons=fmt == "onnx",
                  checkpoint=path)
    assert diff is not None and diff < 1e-4
    if fmt == "onnx":  # the file explains itself
        import onnxruntime as ort

        import version
        meta = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=[
            "CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        assert json.loads(meta["input_size"]) == [32, 32]
        assert json.loads(meta["mean"]) == [0.5] * 3 and json.loads(meta["std"]) == [0.5] * 3
        assert "RGB" in meta["input"] and "sigmoid" in meta["output_logits"]
        assert meta["model"] == "Recce" and meta["checkpoint"] == os.path.basename(path)
        assert meta["project_version"].startswith(version.__version__) and "output_recons" in meta


def test_export_never_leaves_a_half_file_nor_overwrites_its_input(checkpoint, tmp_path,
                                                                  monkeypatch):
    from tools import export as ex
    path, _ = checkpoint
    out = tmp_path / "m.pt2"
    out.write_bytes(b"the user's previous export")

    def interrupted(program, f):
        open(f, "wb").write(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch.export, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.export(ex.load_for_export(path), "torch.export", str(out), size=32)
    assert out.read_bytes() == b"the user's previous export"
    assert sorted(os.listdir(tmp_path)) == ["m.pt2"]  # no temporary file left
    monkeypatch.undo()
    before = open(path, "rb").read()
    assert ex.main(["-b", path, "--out", path, "--format", "torch.export"]) == 2
    assert open(path, "rb").read() == before
