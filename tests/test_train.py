"""train.py: a stop between steps, a validation set of one class, one line for a bad value."""
import os
import signal

import pytest
import torch

from helpers import image_list_tree, popen, write_config


@pytest.mark.slow
@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_training_between_steps(tmp_path, demo_root, sig, status):
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=10_000,
                        val_steps=10_000)
    proc = popen(["train.py", "--config", path])
    for line in proc.stdout:
        if "step 2/" in line:
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at step") and "config.resume=true" in last
    assert "Traceback" not in err
    run_dir = tmp_path / "runs" / "Recce" / "t"
    state = torch.load(run_dir / "latest_model.bin", weights_only=True)
    assert state["step"] >= 2
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


@pytest.mark.slow
def test_one_class_validation_never_makes_a_nan_best(tmp_path, demo_root, capsys):
    import train
    data = image_list_tree(demo_root, tmp_path / "d")
    val = image_list_tree(demo_root, tmp_path / "v")
    import shutil
    shutil.rmtree(os.path.join(val, "fake"))
    os.makedirs(os.path.join(val, "fake"))  # real images only
    path = write_config(tmp_path, data, val, steps=2, val_steps=1)
    assert train.main(["--config", path]) == 0
    out = capsys.readouterr().out
    assert "has real images only: AUC is undefined" in out
    assert "best val AUC: undefined" in out and "best checkpoint: none" in out
    assert "nan" not in out.split("best val AUC")[1]
    assert not [f for f in os.listdir(tmp_path / "runs" / "Recce" / "t") if f.startswith("best_")]


def test_entry_points_print_one_line_before_building_data(image_list_cfg, capsys):
    import test as test_py
    import train
    for main in (train.main, test_py.main):
        args = ["--config", image_list_cfg, "--opt", "config.optimizer.lr=abc"]
        assert main(args + (["--ckpt", "x.bin"] if main is test_py.main else [])) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: config.optimizer.lr: expected a number, got 'abc'")
        assert err.count("\n") == 1
