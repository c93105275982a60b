import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT
from errors import UserError
from trainer.checkpoint import load_checkpoint
from trainer.config import load_config
from trainer.train import NonFiniteLoss, Trainer, run

SIZE = 64


def _config(tmp_path, demo_root, steps=4, val_steps=2, batch=4, extra=None, run_id="t"):
    tf = [{"name": "Resize", "params": {"height": SIZE, "width": SIZE}},
          {"name": "HorizontalFlip", "params": {"p": 0.5}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    ff = os.path.join(demo_root, "faceforensics")
    ds = {"train_cfg": {"root": ff, "split": "train", "method": "all", "compression": "c23",
                        "log_steps": 1, "val_steps": val_steps, "num_steps": steps,
                        "transforms": tf},
          "val_cfg": {"root": ff, "split": "val", "transforms": tf[:1] + tf[2:]}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    cfg = {"model": {"name": "Recce", "pretrained": False},
           "config": {"id": run_id, "ckpt_fold": str(tmp_path / "runs"), "metric": "AUC",
                      **(extra or {})},
           "data": {"name": "FaceForensics", "file": str(tmp_path / "ds.yml"),
                    "train_batch_size": batch, "val_batch_size": 32, "val_branch": "val_cfg",
                    "num_workers": 0}}
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "cfg.yml")


def test_short_training_writes_checkpoints_logs_and_events(tmp_path, demo_root):
    path = _config(tmp_path, demo_root, steps=4, val_steps=2)
    result = run(load_config(path))
    run_dir = tmp_path / "runs" / "Recce" / "t"
    files = set(os.listdir(run_dir))
    assert {"latest_model.bin", "config.yml", "dataset.yml", "train_rank0.log"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    assert result["best_checkpoint"] and os.path.isfile(result["best_checkpoint"])
    state = torch.load(run_dir / "latest_model.bin", weights_only=True)  # plain values only
    assert state["step"] == 4 and set(state) >= {"step", "best_step", "best_metric", "eval_metric",
                                                 "model", "optimizer", "scheduler"}
    assert not any(k.startswith("module.") for k in state["model"])
    assert [h[0] for h in result["history"]] == [2, 4]
    with pytest.raises(UserError, match="already holds a run"):
        run(load_config(path))
    # the saved config is fed back as is, and test.py finds the run's newest best checkpoint
    from trainer.testing import resolve_checkpoint
    again = load_config(str(run_dir / "config.yml"))
    assert again["dataset"]["train_cfg"]["num_steps"] == 4
    assert resolve_checkpoint(again) == result["best_checkpoint"]


def test_timestamp_run_id_is_saved(tmp_path):
    from trainer.train import make_run_dir
    cfg = {"config": {"id": None, "ckpt_fold": str(tmp_path)}, "model": {"name": "Recce"}}
    run_dir, lock = make_run_dir(cfg, resume=False)
    assert cfg["config"]["id"] and run_dir == str(tmp_path / "Recce" / cfg["config"]["id"])
    lock.release()


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, demo_root):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = Trainer(load_config(_config(tmp_path / "a", demo_root, steps=6, val_steps=3)))
    whole.fit()
    whole.close()
    first = Trainer(load_config(_config(tmp_path / "b", demo_root, steps=3, val_steps=3)))
    first.fit()
    first.close()
    second = Trainer(load_config(_config(tmp_path / "b", demo_root, steps=6, val_steps=3,
                                         extra={"resume": True})))
    assert second.step == 3
    second.fit()
    a, b = _params(whole.model), _params(second.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_original_weights_only_checkpoint_starts_fine_tuning(tmp_path, demo_root):
    from model import Recce
    run_dir = tmp_path / "runs" / "Recce" / "t"
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    original = Recce()
    torch.save({"model": original.state_dict()}, run_dir / "latest_model.bin")
    trainer = Trainer(load_config(_config(tmp_path, demo_root, extra={"resume": True})))
    assert trainer.step == 0
    assert torch.equal(trainer.model.fc.weight, original.fc.weight)


def test_non_finite_loss_stops_and_names_the_step(tmp_path, demo_root):
    trainer = Trainer(load_config(_config(tmp_path, demo_root, steps=4, val_steps=2)))
    calls = {"n": 0}
    real = trainer.criterion.forward

    def sometimes_nan(outputs, x, y):
        calls["n"] += 1
        out = real(outputs, x, y)
        if calls["n"] == 3:
            out["total"] = out["total"] * float("nan")
        return out
    trainer.criterion.forward = sometimes_nan
    with pytest.raises(NonFiniteLoss, match="step 3"):
        trainer.fit()
    state = load_checkpoint(str(tmp_path / "runs" / "Recce" / "t" / "latest_model.bin"))
    assert state["step"] == 2  # the step-2 checkpoint is intact


def test_untrusted_checkpoint_needs_trust(tmp_path):
    import numpy as np
    path = tmp_path / "old.bin"
    torch.save({"model": {}, "best_metric": np.float64(0.5)}, path)
    with pytest.raises(UserError, match="--trust"):
        load_checkpoint(str(path))
    assert load_checkpoint(str(path), trusted=True)["best_metric"] == 0.5


def test_train_py_prints_one_line_for_user_errors(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("model: {name: Recce}\n")
    proc = subprocess.run([sys.executable, "train.py", "--config", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: missing config key: data.name"


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_two_process_torchrun_ends_with_identical_parameters(tmp_path, demo_root):
    path = _config(tmp_path, demo_root, steps=2, val_steps=2, batch=2)
    out = tmp_path / "params"
    env = {**os.environ, "RECCE_TEST_DUMP": str(out), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
         os.path.join(ROOT, "tests", "ddp_worker.py"), path],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    p0 = torch.load(f"{out}0.pt", weights_only=True)
    p1 = torch.load(f"{out}1.pt", weights_only=True)
    assert p0.keys() == p1.keys()
    assert all(torch.equal(p0[k], p1[k]) for k in p0)  # parameters, not BN running statistics
    assert "gloo" in proc.stdout + proc.stderr


def test_newest_best_is_by_step_number(tmp_path):
    from trainer.checkpoint import newest_best
    assert newest_best(str(tmp_path)) is None
    for step in (2, 10, 9):
        (tmp_path / f"best_model_{step}.bin").write_bytes(b"")
    (tmp_path / "best_model_x.bin").write_bytes(b"")
    assert newest_best(str(tmp_path)) == str(tmp_path / "best_model_10.bin")
