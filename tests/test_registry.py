"""The framework's seams: every registered model through the model contract, and a model and a
dataset layout that this test file alone defines, put through train, test, inference and export
without any change to the project's files."""
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from dataset import Item, register_layout
from dataset.registry import Layout
from loss import build_loss
from model import MODELS, build_model, register_model
from trainer.testing import load_model

REGISTERED = sorted(MODELS)  # the project's own models, before this file adds one


@pytest.mark.parametrize("name", REGISTERED)
def test_model_contract(name, tmp_path):
    cls = MODELS[name]
    assert len(cls.mean) == len(cls.std) == 3 and cls.input_size >= cls.min_input_size
    model = build_model({"name": name, "pretrained": False})
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 1) and model(x[:1]).shape == (1, 1)
        out = model(x, return_aux=True)
    assert ("recons" in out) == cls.has_reconstruction
    if cls.has_reconstruction:
        assert out["recons"].shape == x.shape
    # every trainable parameter gets a gradient from the model's own loss, batch of one included
    model.train()
    crit = build_loss(cls.loss, {}, 1)
    for batch in (x[:1], x):
        model.zero_grad()
        y = torch.arange(len(batch)) % 2
        crit(model(batch, return_aux=True), batch, y)["total"].backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing[:5]
    # checkpoint round trip: the saved config says which model it is
    path = tmp_path / "best_model_1.bin"
    torch.save({"model": model.state_dict(), "config": {"model": {"name": name, "num_classes": 1}}},
               path)
    loaded = load_model(str(path))
    assert type(loaded) is cls
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    # export (torch.export here; ONNX in test_entry_points)
    from tools.export import export, load_for_export
    diff = export(load_for_export(str(path)), "torch.export", str(tmp_path / "m.pt2"), size=32)
    assert diff < 1e-4


# ---------------------------------------------------------------- a model and a layout of our own
class TinyNet(nn.Module):
    """A model known to nobody but this test."""

    mean = (0.4, 0.4, 0.4)
    std = (0.2, 0.2, 0.2)
    input_size = 24
    min_input_size = 8
    has_reconstruction = False
    loss = "ClassificationLoss"

    def __init__(self, num_classes=1, drop_rate=0.0, pretrained=False):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x, return_aux=False):
        logits = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        return {"logits": logits} if return_aux else logits


def _read_tiny(cfg, rng):
    """``root/<r|f>_<video>_<frame>.png``: the label in the file name."""
    root = cfg["root"]
    names = sorted(f for f in os.listdir(root) if f.endswith(".png"))
    return [Item(os.path.join(root, f), int(f[0] == "f"), f.split("_")[1]) for f in names
            if cfg.get("only") in (None, f[0])]


def _build_tiny(args):
    return [f"{len(os.listdir(args.root))} files"]


@pytest.fixture(scope="module")
def registered():
    register_model(TinyNet)
    register_layout(Layout("TinyLayout", _read_tiny, keys={"only": ("r", "f")},
                           index_name="tinylayout",
                           add_arguments=lambda p: p.add_argument("--root", required=True),
                           build_index=_build_tiny))
    yield
    from dataset.registry import LAYOUTS
    MODELS.pop("TinyNet")
    LAYOUTS.pop("TinyLayout")


def _tiny_data(root):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for kind, base in (("r", 60), ("f", 180)):
        for v in range(3):
            for f in range(2):
                img = np.clip(rng.normal(base, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(os.path.join(root, f"{kind}_{v}_{f}.png"), img)
    return root


def test_a_new_model_and_layout_go_through_every_entry_point(registered, tmp_path, capsys):
    import inference
    from tools.build_index import main as build_index
    from tools.export import export, load_for_export
    from trainer.config import load_config
    from trainer.testing import run_test
    from trainer.train import run
    data = _tiny_data(str(tmp_path / "data"))
    tf = [{"name": "Resize", "params": {"height": 24, "width": 24}},
          {"name": "Normalize", "params": {"mean": [0.4] * 3, "std": [0.2] * 3}}]
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({
        "train_cfg": {"root": data, "num_steps": 4, "log_steps": 2, "val_steps": 2, "transforms": tf},
        "test_cfg": {"root": data, "transforms": tf}}))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "TinyNet", "pretrained": False},
        "config": {"id": "tiny", "ckpt_fold": str(tmp_path / "runs"), "metric": "AUC",
                   "optimizer": {"name": "adam", "lr": 0.01}},
        "data": {"name": "TinyLayout", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "train_batch_size": 4}}))
    cfg = load_config(str(tmp_path / "c.yml"), [], ["test_cfg.only=r"])  # the layout's own key
    assert cfg["dataset"]["test_cfg"]["only"] == "r"
    cfg = load_config(str(tmp_path / "c.yml"))
    result = run(cfg)
    ckpt = result["best_checkpoint"]
    assert ckpt and "TinyNet" in ckpt
    log = open(os.path.join(result["run_dir"], "train_rank0.log")).read()
    assert "cls " in log  # the loss's own terms are what is logged
    metrics, path, out_dir, n, written = run_test(cfg, device="cpu", out_dir=str(tmp_path / "t"))
    assert n == 12 and "AUC" in metrics and "roc.png" in written
    capsys.readouterr()
    assert inference.main(["-b", ckpt, "-f", data, "-d", "cpu", "-v",
                           "--vis_dir", str(tmp_path / "vis")]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 12
    assert "TinyNet has no reconstruction" in err and not (tmp_path / "vis").exists()
    model = load_for_export(ckpt)
    assert isinstance(model, TinyNet)
    assert export(model, "torch.export", str(tmp_path / "tiny.pt2")) < 1e-5
    assert build_index(["tinylayout", "--root", data]) == 0
    assert capsys.readouterr().out.strip() == "12 files"
