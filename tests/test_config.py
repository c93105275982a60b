import os
import shutil

import pytest
import yaml

from conftest import FIXTURES
from errors import UserError
from trainer.config import load_config, save_config



def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("dataset", ["faceforensics", "celeb_df", "wilddeepfake", "dfdc"])
def test_original_configs_load_unchanged(tmp_path, monkeypatch, dataset):
    src = FIXTURES / "original_configs"
    shutil.copytree(src, tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    name = {"faceforensics": "FaceForensics", "celeb_df": "CelebDF", "wilddeepfake": "WildDeepfake",
            "dfdc": "DFDC"}[dataset]
    cfg = load_config("config/Recce.yml", [f"data.file=./config/dataset/{dataset}.yml",
                                           f"data.name={name}"])
    assert cfg["config"]["optimizer"] == {"name": "adam", "lr": 0.0002, "weight_decay": 0.00001}
    assert cfg["config"]["seed"] == 2022 and cfg["config"]["flood_level"] == 0.04
    assert cfg["model"]["pretrained"] is True  # absent means the original's ImageNet start
    assert cfg["dataset"]["train_cfg"]["root"] == "path/to/data"
    plain = load_config("config/Recce.yml")
    assert plain["data"]["file"] == "./config/dataset/faceforensics.yml"


def test_unknown_keys_rejected_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = _write(tmp_path, "ds.yml", {"train_cfg": {"root": "x", "log_step": 5}})
    base = {"model": {"name": "Recce"}, "data": {"name": "FaceForensics", "file": ds}}
    with pytest.raises(UserError, match="unknown key in .*train_cfg: log_step"):
        load_config(_write(tmp_path, "a.yml", base))
    ds_ok = _write(tmp_path, "ds2.yml", {"train_cfg": {"root": "x"}})
    bad = {"model": {"name": "Recce", "pretrain": True}, "data": {"name": "FaceForensics", "file": ds_ok}}
    with pytest.raises(UserError, match="unknown config key: model.pretrain"):
        load_config(_write(tmp_path, "b.yml", bad))
    bad = {"model": {"name": "Recce"}, "config": {"metric": "F1"},
           "data": {"name": "FaceForensics", "file": ds_ok}}
    with pytest.raises(UserError, match="config.metric: 'F1'"):
        load_config(_write(tmp_path, "c.yml", bad))
    with pytest.raises(UserError, match="missing config key: data.file"):
        load_config(_write(tmp_path, "d.yml", {"model": {"name": "Recce"},
                                               "data": {"name": "FaceForensics"}}))
    with pytest.raises(UserError, match="config file not found"):
        load_config(str(tmp_path / "none.yml"))


def test_overrides_defaults_and_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = _write(tmp_path, "ds.yml", {"train_cfg": {"root": "x", "num_steps": 10}})
    path = _write(tmp_path, "a.yml", {"model": {"name": "Recce", "num_classes": 2},
                                      "data": {"name": "FaceForensics", "file": ds}})
    cfg = load_config(path, ["config.optimizer.lr=1e-4", "config.scheduler={name: StepLR, step_size: 3}"],
                      ["train_cfg.num_steps=20"])
    assert cfg["config"]["optimizer"]["lr"] == 1e-4
    assert cfg["config"]["scheduler"] == {"name": "StepLR", "step_size": 3}
    assert cfg["config"]["loss"] == "cross_entropy"  # two logits
    assert cfg["dataset"]["train_cfg"]["num_steps"] == 20
    run = tmp_path / "run"
    run.mkdir()
    again = load_config(save_config(cfg, str(run)))
    # the same config, its relative paths made absolute (it is read from any folder)
    expected = {**cfg, "data": {**cfg["data"], "file": str(run / "dataset.yml")},
                "config": {**cfg["config"],
                           "ckpt_fold": os.path.abspath(cfg["config"]["ckpt_fold"])},
                "dataset": {name: {**b, **({"root": os.path.abspath(b["root"])} if "root" in b
                                           else {})} for name, b in cfg["dataset"].items()}}
    assert again == expected


def test_yaml_exponent_without_dot_is_a_number(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = _write(tmp_path, "ds.yml", {"train_cfg": {"root": "x"}})
    path = tmp_path / "a.yml"
    path.write_text(f"model: {{name: Recce}}\nconfig:\n  optimizer: {{name: adam, lr: 1e-4}}\n"
                    f"data: {{name: FaceForensics, file: {ds}}}\n")
    assert load_config(str(path))["config"]["optimizer"]["lr"] == 1e-4
