import os
import shutil

import pytest
import yaml

from errors import UserError
from helpers import FIXTURES, image_list_tree, write_config
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
    assert cfg["config"]["seed"] == 2022
    # the original's config.lambda_1/lambda_2/loss belong to RECCE's loss: moved, and said so
    assert cfg["loss"] == {"kind": "binary_ce", "lambda_1": 0.1, "lambda_2": 0.1,
                           "flood_level": 0.04}
    assert not {"lambda_1", "lambda_2", "flood_level", "loss"} & set(cfg["config"])
    assert "config.lambda_1 (0.1) -> loss.lambda_1" in cfg["moved"]
    assert "config.loss ('binary_ce') -> loss.kind" in cfg["moved"]
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
    bad = {"model": {"name": "Recce", "pretrain": True},
           "data": {"name": "FaceForensics", "file": ds_ok}}
    with pytest.raises(UserError, match=r"model.pretrain: the detector Recce takes no argument "
                                        r"'pretrain' \(it takes: num_classes, drop_rate, "
                                        r"pretrained, channels_last\)"):
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
    cfg = load_config(path, ["config.optimizer.lr=1e-4",
                             "config.scheduler={name: StepLR, step_size: 3}"],
                      ["train_cfg.num_steps=20"])
    assert cfg["config"]["optimizer"]["lr"] == 1e-4
    assert cfg["config"]["scheduler"] == {"name": "StepLR", "step_size": 3}
    assert cfg["loss"]["kind"] == "cross_entropy"  # two logits
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


def _base(tmp_path, **sections):
    ds = _write(tmp_path, "ds.yml", {"train_cfg": {"root": "x"}})
    return _write(tmp_path, "a.yml", {"model": {"name": "Recce"},
                                      "data": {"name": "FaceForensics", "file": ds}, **sections})


def test_the_loss_section_belongs_to_the_detector(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_base(tmp_path, loss={"lambda_1": 0.5}), ["loss.flood_level=0.1"])
    assert cfg["loss"] == {"kind": "binary_ce", "lambda_1": 0.5, "lambda_2": 0.1,
                           "flood_level": 0.1} and cfg["moved"] == []
    with pytest.raises(UserError, match=r"loss.gamma: the loss of the detector Recce takes no "
                                        r"'gamma' \(it takes: kind, lambda_1, lambda_2, "
                                        r"flood_level\)"):
        load_config(_base(tmp_path, loss={"gamma": 2}))
    with pytest.raises(UserError, match=r"loss.lambda_2: expected a number of at least 0, got -1"):
        load_config(_base(tmp_path, loss={"lambda_2": -1}))
    with pytest.raises(UserError, match=r"config.lambda_1 and loss.lambda_1 are both given"):
        load_config(_base(tmp_path, loss={"lambda_1": 0.2}, config={"lambda_1": 0.3}))
    # an original config's key is checked where the user wrote it
    with pytest.raises(UserError, match=r"config.lambda_1: expected a number"):
        load_config(_base(tmp_path, config={"lambda_1": "a lot"}))
    with pytest.raises(UserError, match=r"config.loss: 'cross_entropy' does not fit "
                                        r"model.num_classes 1"):
        load_config(_base(tmp_path, config={"loss": "cross_entropy"}))


def test_a_loss_key_the_detector_does_not_have_is_noted_and_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _base(tmp_path, model={"name": "Xception"}, config={"lambda_1": 0.1})
    cfg = load_config(path)
    assert cfg["loss"] == {"kind": "binary_ce"}
    assert cfg["moved"] == ["config.lambda_1 (0.1): the loss of Xception has no lambda_1; ignored"]


def test_the_model_section_goes_to_the_constructor_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_base(tmp_path, model={"name": "Recce", "channels_last": False}))
    assert cfg["model"] == {"name": "Recce", "channels_last": False, "pretrained": True}
    with pytest.raises(UserError, match=r"model.channels_last: expected true or false, got 'no' "
                                        r"\(the detector Recce's argument\)"):
        load_config(_base(tmp_path, model={"name": "Recce", "channels_last": "no"}))
    with pytest.raises(UserError, match=r"model.drop_rate: expected a number in \[0, 1\)"):
        load_config(_base(tmp_path, model={"name": "Recce", "drop_rate": 1.5}))
    with pytest.raises(UserError, match=r"model.num_classes: 3 is not one of \[1, 2\] \(the "
                                        r"detector Recce's argument\)"):
        load_config(_base(tmp_path), ["model.num_classes=3"])


def test_the_saved_config_says_where_the_original_keys_went(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_base(tmp_path, config={"lambda_1": 0.3, "flood_level": 0.05}))
    run = tmp_path / "run"
    run.mkdir()
    text = open(save_config(cfg, str(run))).read()
    assert text.startswith("# Where the values of the given config's loss keys went:\n"
                           "# config.lambda_1 (0.3) -> loss.lambda_1\n"
                           "# config.flood_level (0.05) -> loss.flood_level\n")
    again = load_config(str(run / "config.yml"))
    assert again["loss"] == cfg["loss"] and again["loss"]["lambda_1"] == 0.3
    assert "lambda_1" not in yaml.safe_load(text)["config"] and again["moved"] == []


def _documented_keys(rel, sections):
    """(path, default as written) of each row of the key tables of docs ``rel`` whose first cell
    starts with one of ``sections``; a row of several keys (``config.resume, resume_best``) is
    one pair each, its defaults split alike (``false, false``) or one for all (``required``)."""
    from helpers import ROOT
    out = []
    for line in open(os.path.join(ROOT, rel), encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 3 or not cells[0].startswith(sections):
            continue
        names = [n.replace("*new*", "").strip() for n in cells[0].split(", ")]
        section = names[0].rsplit(".", 1)[0]
        paths = [n if "." in n else f"{section}.{n}" for n in names]
        defaults = cells[1].split(", ") if len(paths) > 1 else [cells[1]]
        defaults = defaults * len(paths) if len(defaults) == 1 else defaults
        assert len(defaults) == len(paths), f"{rel}: {line.strip()} (one default a key)"
        out += list(zip(paths, defaults))
    return out


def test_the_docs_key_tables_follow_the_one_table_of_keys():
    """docs/training.md's config and data tables list each key of ``trainer.config.KEYS`` once,
    with its default as the table declares it; the defaults and kinds derive from it."""
    from checks import REQUIRED
    from trainer.config import DEFAULTS, KEYS, SCHEMA
    documented = _documented_keys("docs/training.md", ("config.", "data."))
    paths = [p for p, _ in documented]
    assert sorted(paths) == sorted(k.path for k in KEYS), \
        "docs/training.md's key tables and trainer.config.KEYS differ"
    key = {k.path: k for k in KEYS}
    for path, shown in documented:
        assert shown == key[path].shown_default(), (path, shown, key[path].shown_default())
    assert DEFAULTS["config"]["distribute"]["timeout"] == 1800
    assert DEFAULTS["data"]["name"] is REQUIRED and SCHEMA["data.num_workers"] == "workers"
    assert list(SCHEMA) == [k.path for k in KEYS]


def test_a_key_s_bounds_narrow_its_kind_and_name_keys_stay_text(tmp_path, monkeypatch):
    from checks import Key
    ratio = Key("train_cfg.ratio", 0.5, "number", bounds=(0, 1))
    assert ratio.check("0.25") == 0.25 and ratio.check(1) == 1
    with pytest.raises(UserError, match=r"^train_cfg.ratio: expected a number from 0 to 1, "
                                        r"got 1.5$"):
        ratio.check(1.5)
    with pytest.raises(UserError, match=r"^train_cfg.ratio: expected a finite number"):
        ratio.check(float("nan"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_base(tmp_path), ["config.id=0012", "config.ckpt_fold=1e3"])
    assert cfg["config"]["id"] == "0012" and cfg["config"]["ckpt_fold"] == "1e3"
def test_run_id_is_one_folder_name(tmp_path, demo_root):
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"))
    for bad in ("../../escaped", "a/b", "..", "."):
        with pytest.raises(UserError, match="config.id: .* must be one folder name"):
            load_config(path, [f"config.id={bad}"])
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("opt,text", [
    ("config.scheduler={name: StepLR", "--opt config.scheduler: cannot parse the value"),
    ("config.optimizer=adam", "config.optimizer: expected a mapping with a name"),
    ("config.optimizer.lr=abc", "config.optimizer.lr: expected a number, got 'abc'"),
    ("data.num_workers=two", "data.num_workers: expected an integer, got 'two'"),
    ("data.num_workers=-1", "data.num_workers: expected a number of worker processes from 0 to "
                            "1024, got -1"),
    ("data.train_batch_size=0", "data.train_batch_size: expected a batch size from 1 to 65536, "
                                "got 0"),
    ("data.test_batch_size=1e9", "data.test_batch_size: expected a batch size from 1 to 65536"),
    ("config.lambda_1=[1, 2]", r"config.lambda_1: expected a number, got \[1, 2\]"),
    ("config.debug='false'", "config.debug: expected true or false, got 'false'"),
    ("config.resume=yes please", "config.resume: expected true or false"),
    ("model.drop_rate=1.5", r"model.drop_rate: expected a number in \[0, 1\)"),
    ("config.optimizer.lr=-1", "config.optimizer: .* rejected: Invalid learning rate: -1"),
    ("config.optimizer.betas=[0.9, 1.5]", "config.optimizer: .* rejected: Invalid beta"),
    ("config.scheduler={name: CosineAnnealingLR, T_max: 0}", "config.scheduler: .* rejected"),
    ("config.scheduler={name: StepLR, step_size: 0}", "config.scheduler: .* rejected"),
    ("config.scheduler={name: ReduceLROnPlateau, mode: up}", "config.scheduler: .* rejected"),
    ("config.keep_best=0", "config.keep_best: expected an integer of at least 1"),
    ("config.metric=F1", "config.metric: 'F1' is not one of"),
])
def test_bad_model_config_values_name_key_and_value(image_list_cfg, opt, text):
    with pytest.raises(UserError, match=text):
        load_config(image_list_cfg, [opt])


@pytest.mark.parametrize("opt,text", [
    ("train_cfg.val_steps=0", "train_cfg.val_steps: expected an integer of at least 1, got 0"),
    ("train_cfg.log_steps=-5", "train_cfg.log_steps: expected an integer of at least 1, got -5"),
    ("train_cfg.num_steps=ten", "train_cfg.num_steps: expected an integer"),
    ("trian_cfg.num_steps=1", "has no branch 'trian_cfg'"),
    ("train_cfg.demo=1", "train_cfg.demo: expected true or false"),
])
def test_bad_dataset_values(image_list_cfg, opt, text):
    with pytest.raises(UserError, match=text):
        load_config(image_list_cfg, [], [opt])


@pytest.mark.parametrize("value", ["0012", "yes", "12:30", "1e3", "2024-05-01"])
def test_names_stay_names(image_list_cfg, value):
    cfg = load_config(image_list_cfg, [f"config.id={value}"])
    assert cfg["config"]["id"] == value


def test_names_written_in_a_file_are_text(tmp_path, image_list_cfg):
    raw = yaml.safe_load(open(image_list_cfg))
    raw["config"]["id"] = "2024-05-01"
    text = yaml.safe_dump(raw).replace("'2024-05-01'", "2024-05-01")  # unquoted: YAML reads a date
    (tmp_path / "dated.yml").write_text(text)
    assert load_config(str(tmp_path / "dated.yml"))["config"]["id"] == "2024-05-01"


def test_yaml_that_is_not_utf8(tmp_path, image_list_cfg):
    text = open(image_list_cfg, "rb").read() + "# caf\xe9\n".encode("latin-1")
    (tmp_path / "latin.yml").write_bytes(text)
    with pytest.raises(UserError, match="latin.yml is not UTF-8 text"):
        load_config(str(tmp_path / "latin.yml"))
    raw = yaml.safe_load(open(image_list_cfg))
    ds = raw["data"]["file"]
    with open(ds, "ab") as fh:
        fh.write("# caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="ds.yml is not UTF-8 text"):
        load_config(image_list_cfg)
