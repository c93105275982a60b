"""The detector contract and its seams: every registered detector through the contract; the input
spec saved with a checkpoint and used by every entry point; one Registry class; and the acceptance
test: a detector, its loss and a dataset layout that only tests/plugins/tiny_detector.py defines,
registered through the config's ``config.imports``, through train.py, test.py, inference.py
(images and a video), tools/export.py and tools/robustness.py with no other file touched."""
import csv
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from helpers import hopper_video
from errors import UserError
from model import DETECTORS, Detector, InputSpec, build_detector
from model.checkpoint import load_detector, training_spec
from registry import Registry, import_modules

REGISTERED = sorted(DETECTORS)  # the project's own detectors, before any test adds one
PLUGIN = os.path.join(ROOT, "tests", "plugins", "tiny_detector.py")


def _cli(args, **kw):
    return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.mark.parametrize("name", REGISTERED)
def test_detector_contract(name, tmp_path):
    cls = DETECTORS.get(name)
    assert issubclass(cls, Detector) and isinstance(cls.default_spec, InputSpec)
    assert min(cls.default_spec.size) >= cls.min_input_size
    det = build_detector({"name": name, "pretrained": False})
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    det.eval()
    with torch.no_grad():
        assert det(x).shape == (2, 1) and det(x[:1]).shape == (1, 1)
        out = det(x, return_aux=True)
        assert torch.allclose(det.predict(x), torch.sigmoid(det(x)[:, 0]), atol=1e-6)
    assert ("recons" in out) == cls.has_reconstruction
    if cls.has_reconstruction:
        assert out["recons"].shape == x.shape
    # every trainable parameter gets a gradient from the detector's own loss, batch of one too
    det.train()
    crit = det.build_loss({})
    for batch in (x[:1], x):
        det.zero_grad()
        y = torch.arange(len(batch)) % 2
        crit(det(batch, return_aux=True), batch, y)["total"].backward()
        missing = [n for n, p in det.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing[:5]
    # checkpoint round trip: the saved config says which detector, the saved spec how to feed it
    path = tmp_path / "best_model_1.bin"
    spec = InputSpec((48, 40), (0.4, 0.45, 0.5), (0.2, 0.25, 0.3), "bicubic")
    torch.save({"model": det.state_dict(), "config": {"model": {"name": name, "num_classes": 1}},
                "input_spec": spec.to_dict()}, path)
    loaded = load_detector(str(path))
    assert type(loaded) is cls and loaded.spec == spec and loaded.spec_source == "saved"
    det.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), det(x), atol=1e-6)
    from tools.export import export, load_for_export
    diff = export(load_for_export(str(path)), "torch.export", str(tmp_path / "m.pt2"))
    assert diff < 1e-4


# ---------------------------------------------------------------- input spec: one source of truth
def _cfg(train_tf, val_tf=None):
    ds = {"train_cfg": {"transforms": train_tf}}
    if val_tf is not None:
        ds["val_cfg"] = {"transforms": val_tf}
    return {"data": {"train_branch": "train_cfg", "val_branch": "val_cfg",
                     "test_branch": "test_cfg"}, "dataset": ds}


def test_training_spec_reads_resize_and_normalize_else_the_default():
    recce = DETECTORS.get("Recce")
    resize = {"name": "Resize", "params": {"height": 64, "width": 64}}
    norm = {"name": "Normalize", "params": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}
    spec = training_spec(_cfg([resize, {"name": "HorizontalFlip"}, norm]), recce)
    assert spec == InputSpec((64, 64), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear")
    # nothing stated: the detector's default; the validation branch fills what training leaves out
    assert training_spec(_cfg([]), recce) == recce.default_spec
    spec = training_spec(_cfg([{"name": "RandomResizedCrop", "params": {"size": [80, 80]}}],
                              [{"name": "Resize", "params": {"height": 80, "width": 80,
                                                             "interpolation": 2}}]), recce)
    assert spec.size == (80, 80) and spec.interpolation == "bicubic" and spec.mean == (0.5,) * 3
    # Normalize's own defaults (ImageNet) are what albumentations applies when params are left out
    spec = training_spec(_cfg([{"name": "Normalize"}]), recce)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.size == (299, 299)
    # one number for all channels, as albumentations takes it: the spec and the loader's deferred
    # normalisation read it alike
    from dataset.base import deferred_normalize
    scalar = {"name": "Normalize", "params": {"mean": 0.5, "std": 0.25}}
    spec = training_spec(_cfg([scalar]), recce)
    assert spec.mean == (0.5,) * 3 and spec.std == (0.25,) * 3
    assert deferred_normalize([scalar])[1] == (spec.mean, spec.std, spec.max_pixel_value)


def test_with_spec_sets_or_completes_a_branch():
    from dataset.transforms import with_spec
    spec = InputSpec((96, 96), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    flip = {"name": "HorizontalFlip", "params": {"p": 0.5}}
    stated = [{"name": "Resize", "params": {"height": 299, "width": 299}}, flip,
              {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    out, changed = with_spec(stated, spec)  # test time: the checkpoint's spec wins
    assert changed and out[1] == flip and out[0]["params"]["height"] == 96
    assert out[2]["params"]["mean"] == [0.485, 0.456, 0.406]
    same, changed = with_spec(out, spec)
    assert not changed and same == out
    kept, changed = with_spec(stated, spec, replace=False)  # training: what the file says stays
    assert not changed and kept == stated
    completed, changed = with_spec([flip], spec, replace=False)
    assert changed and [e["name"] for e in completed] == ["Resize", "HorizontalFlip", "Normalize"]


def test_checkpoint_spec_sources(tmp_path, caplog):
    torch.manual_seed(0)
    det = build_detector({"name": "Recce", "pretrained": False})
    bare = tmp_path / "bare.pth"
    torch.save(det.state_dict(), bare)
    with caplog.at_level(logging.WARNING, logger="recce"):
        loaded = load_detector(str(bare))
    assert loaded.spec == DETECTORS.get("Recce").default_spec and loaded.spec_source == "default"
    lines = [r.getMessage() for r in caplog.records if "default input spec" in r.getMessage()]
    assert len(lines) == 1 and "299 px" in lines[0] and "(image_size sets another size)" in lines[0]
    assert load_detector(str(bare), image_size=128).spec.size == (128, 128)
    with pytest.raises(UserError, match="^image_size 3: the model needs at least 7$"):
        load_detector(str(bare), image_size=3)
    # a checkpoint of an earlier release: no input_spec, but its dataset config says
    old = tmp_path / "old.bin"
    torch.save({"model": det.state_dict(), "config": {
        "model": {"name": "Recce"}, "data": {"train_branch": "train_cfg"},
        "dataset": {"train_cfg": {"transforms": [
            {"name": "Resize", "params": {"height": 224, "width": 224}}]}}}}, old)
    loaded = load_detector(str(old))
    assert loaded.spec.size == (224, 224) and loaded.spec_source == "config"
    # a detector the process does not know: the run's imports are named
    foreign = tmp_path / "foreign.bin"
    torch.save({"model": det.state_dict(), "config": {"model": {"name": "Mine"},
                                                      "config": {"imports": ["/x/mine.py"]}}},
               foreign)
    with pytest.raises(UserError, match="'Mine' detector, which is not registered.*/x/mine.py"):
        load_detector(str(foreign))


def test_a_normalisation_the_pretrained_weights_do_not_expect_is_one_warning(tmp_path, caplog):
    from trainer.train import Trainer

    class Probe(Trainer):
        def __init__(self, cfg, pretrained):
            self.cfg, self.rank = cfg, 0
            self.cfg["model"]["pretrained"] = pretrained
            self.model_cls = DETECTORS.get("Recce")
            self.cfg["data"]["file"] = "ds.yml"

    det = build_detector({"name": "Recce", "pretrained": False})
    det.spec = InputSpec((64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with caplog.at_level(logging.INFO, logger="recce"):
        Probe({"model": {}, "data": {}}, True)._check_spec(det)
        Probe({"model": {}, "data": {}}, False)._check_spec(det)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "pretrained Recce weights expect" in warned[0].getMessage()


# ---------------------------------------------------------------- one registry class
def test_registry_names_its_key_and_the_known_names():
    reg = Registry("thing", "config.thing")

    @reg.register
    class Alpha:
        pass

    reg.register(lambda: None, name="beta")
    assert reg.get("Alpha") is Alpha and "beta" in reg and list(reg) == ["Alpha", "beta"]
    with pytest.raises(UserError, match=r"config.thing: unknown thing 'gamma' \(known: Alpha, beta\)"):
        reg.get("gamma")
    from dataset import LAYOUTS
    from faces.detectors import FACE_DETECTORS
    from loss import LOSSES
    for r in (DETECTORS, LOSSES, LAYOUTS, FACE_DETECTORS):
        assert isinstance(r, Registry)
    assert {"RecceLoss", "ClassificationLoss"} <= set(LOSSES)
    assert {"dlib", "retinaface"} <= set(FACE_DETECTORS)


def test_import_modules_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="config.imports: file not found: nope.py"):
        import_modules(["nope.py"], str(tmp_path))
    with pytest.raises(UserError, match="cannot import 'no_such_module_here'"):
        import_modules(["no_such_module_here"])
    (tmp_path / "broken.py").write_text("raise RuntimeError('half written')\n")
    with pytest.raises(UserError, match="importing .*broken.py failed: RuntimeError: half written"):
        import_modules(["broken.py"], str(tmp_path))
    with pytest.raises(UserError, match="expected a list"):
        import_modules("broken.py")


# ---------------------------------------------------------------- the acceptance test
def _tiny_data(root):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for kind, base in (("r", 70), ("f", 170)):
        for v in range(3):
            for f in range(2):
                img = np.clip(rng.normal(base, 25, (40 + 8 * v, 36, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(os.path.join(root, f"{kind}_{v}_{f}.png"), img)
    return root


@pytest.mark.slow
def test_a_detector_of_ones_own_goes_through_every_entry_point(tmp_path):
    """Nothing of the project is edited: the plugin file is named by config.imports (train.py,
    test.py, robustness.py) and --import (inference.py, export.py), each run in a fresh process."""
    data = _tiny_data(str(tmp_path / "data"))
    flip = [{"name": "HorizontalFlip", "params": {"p": 0.5}}]
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({  # no resize, no normalisation: the
        "train_cfg": {"root": data, "num_steps": 4, "log_steps": 2, "val_steps": 2,  # detector's
                      "transforms": flip},                                             # own spec
        "test_cfg": {"root": data, "transforms": []}}))
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "TinyDetector", "pretrained": False},
        "config": {"id": "tiny", "ckpt_fold": str(tmp_path / "runs"), "metric": "AUC",
                   "imports": [PLUGIN], "optimizer": {"name": "adam", "lr": 0.01}},
        "data": {"name": "TinyLayout", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "train_batch_size": 4}}))
    proc = _cli(["train.py", "--config", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "runs" / "TinyDetector" / "tiny"
    log = (run_dir / "train_rank0.log").read_text()
    assert "logit_l2 " in log and "input spec: 96 px" in log  # its own loss terms, its own spec
    ckpt = sorted(run_dir.glob("best_model_*.bin"))[-1]
    state = torch.load(ckpt, weights_only=True)
    assert state["input_spec"]["size"] == [96, 96]
    assert state["input_spec"]["mean"] == pytest.approx([0.485, 0.456, 0.406])

    proc = _cli(["test.py", "--config", str(cfg), "--ckpt", str(ckpt), "--out",
                 str(tmp_path / "t"), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "t" / "scores.csv") as fh:
        tested = {r["path"]: float(r["fake_probability"]) for r in csv.DictReader(fh)}
    assert len(tested) == 12

    proc = _cli(["inference.py", "-b", str(ckpt), "-f", data, "-d", "cpu", "--import", PLUGIN,
                 "--output", str(tmp_path / "inf.csv")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "default input spec" not in proc.stderr
    with open(tmp_path / "inf.csv") as fh:
        inferred = {r["path"]: float(r["fake_probability"]) for r in csv.DictReader(fh)}
    assert set(inferred) == set(tested)
    assert max(abs(inferred[p] - tested[p]) for p in tested) < 1e-4
    assert len(set(round(p, 6) for p in tested.values())) > 1  # the probabilities are not constant

    if _has("dlib"):  # the default face detector of videos
        video = hopper_video(tmp_path / "clip.avi")
        proc = _cli(["inference.py", "-b", str(ckpt), "--video", video, "-d", "cpu", "--import",
                     PLUGIN, "--frames", "3"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "fake probability:" in proc.stdout and "frames: 3" in proc.stdout

    proc = _cli(["tools/export.py", "-b", str(ckpt), "--format", "torch.export", "--out",
                 str(tmp_path / "tiny.pt2"), "--import", PLUGIN])
    assert proc.returncode == 0, proc.stderr[-2000:]
    program = torch.export.load(str(tmp_path / "tiny.pt2"))
    assert program.example_inputs[0][0].shape[-2:] == (96, 96)  # the checkpoint's input size

    proc = _cli(["tools/robustness.py", "--config", str(cfg), "--ckpt", str(ckpt), "--types",
                 "GB", "--levels", "1", "--out", str(tmp_path / "rob"), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "rob" / "robustness.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["type"], r["level"]) for r in rows] == [("clean", "0"), ("GB", "1")]
    assert float(rows[0]["frame_AUC"]) == pytest.approx(_auc(tested, data), abs=1e-9)


def _has(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _auc(probs, root):
    from sklearn.metrics import roc_auc_score
    paths = sorted(probs)
    return roc_auc_score([int(os.path.basename(p)[0] == "f") for p in paths],
                         [probs[p] for p in paths])


def test_a_recce_trained_at_64_px_scores_alike_in_test_and_inference(demo_root, tmp_path):
    """The newcomer's case: no --image_size, and inference.py gives test.py's numbers."""
    import inference
    from helpers import image_list_tree, write_config
    from trainer.config import load_config
    from trainer.testing import run_test
    from trainer.train import run
    tree = image_list_tree(demo_root, tmp_path / "tree", videos=2, frames=1)
    cfg = load_config(write_config(tmp_path, tree, steps=1, val_steps=1))
    result = run(cfg)
    ckpt = result["best_checkpoint"]
    assert torch.load(ckpt, weights_only=True)["input_spec"]["size"] == [64, 64]
    cfg["dataset"]["val_cfg"]["transforms"] = []  # a test branch stating nothing: the spec rules
    cfg["data"]["test_branch"] = "val_cfg"
    _, _, out_dir, n, _ = run_test(cfg, ckpt, "cpu", str(tmp_path / "t"))
    with open(os.path.join(out_dir, "scores.csv")) as fh:
        tested = {r["path"]: float(r["fake_probability"]) for r in csv.DictReader(fh)}
    rows = list(inference.score(inference.parse_args(["-b", ckpt, "-f", tree, "--recursive",
                                                      "-d", "cpu", "--num_workers", "0"])))
    assert len(rows) == len(tested) == n == 4
    assert max(abs(prob - tested[path]) for path, prob, _ in rows) < 1e-5
