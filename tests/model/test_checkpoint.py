"""model/checkpoint.py: loading a checkpoint of any flavour (this project's, a bare state dict,
DeepfakeBench's), the input spec it carries or is given, and the checks of its saved spec,
config and face crop rule, through every door."""
import logging
import os
import re

import pytest
import torch
import yaml

from errors import UserError
from helpers import PLUGIN, cli, tiny_data
from model import DETECTORS, InputSpec, Recce, build_detector
from model.checkpoint import load_detector, training_spec
from registry import import_modules


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


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def tiny():
    """The plugin's detector, registered in this process, and a state dict of it."""
    import_modules([PLUGIN])
    torch.manual_seed(0)
    return build_detector({"name": "TinyDetector", "pretrained": False}).state_dict()


GOOD_SPEC = InputSpec((32, 32)).to_dict()
NAN = float("nan")
BAD_SPECS = [  # (what the file's input_spec holds, what the one line says)
    ({"mean": [0.5, NAN, 0.5]}, "input_spec.mean: expected a finite number, got nan"),
    ({"mean": [0.5, 0.5]}, "input_spec.mean: expected 3 numbers"),
    ({"std": [0.5, 0.5, 0]}, "input_spec.std: expected a positive finite number, got 0"),
    ({"std": [float("inf")] * 3}, "input_spec.std: expected a positive finite number, got inf"),
    ({"std": [1e-40] * 3}, "float32's range (std too small)"),
    ({"max_pixel_value": NAN}, "input_spec.max_pixel_value: expected a positive finite number"),
    ({"max_pixel_value": -255}, "input_spec.max_pixel_value: expected a positive finite number"),
    ({"size": [4, 4]}, "input_spec.size: [4, 4] is smaller than TinyDetector accepts (at least 8"),
    ({"size": [100000, 100000]}, "input_spec.size: expected a size in pixels from 1 to 2048, "
                                 "got 100000"),
    ({"size": 0}, "input_spec.size: expected a size in pixels from 1 to 2048, got 0"),
    ({"size": [32, NAN]}, "input_spec.size: expected an integer, got nan"),
    ({"size": "big"}, "input_spec.size: expected an integer, got 'big'"),
    ({"interpolation": "cubic"}, "input_spec.interpolation: 'cubic' is not one of nearest"),
    ({"colour": "rgb"}, "input_spec: unknown key(s) ['colour']"),
]
RESIZE = [{"name": "Resize", "params": {"height": 32, "width": 32}}]
BAD_CONFIGS = [  # (the file's saved config, what the one line says); no input_spec saved
    (["model", "TinyDetector"], "config: expected a mapping of the run's config sections"),
    ("TinyDetector", "config: expected a mapping of the run's config sections"),
    ({"model": "TinyDetector"}, "config.model: expected a mapping, got 'TinyDetector'"),
    ({"model": {"name": "TinyDetector"}, "dataset": [1]}, "config.dataset: expected a mapping"),
    ({"model": {"name": "TinyDetector", "num_classes": "two"}},
     "config.model.num_classes: 'two' is not one of [1, 2]"),
    ({"model": {"name": "TinyDetector", "drop_rate": NAN}},
     r"config.model.drop_rate: expected a number in [0, 1), got nan"),
    ({"model": {"name": "TinyDetector"}, "config": {"imports": "tiny.py"}},
     "config.config.imports: expected a list"),
    ({"model": {"name": "TinyDetector"}, "data": {"train_branch": ["t"]}},
     "config.data.train_branch: expected a branch name"),
    ({"model": {"name": "TinyDetector"}, "data": {"train_branch": "t"},
      "dataset": {"t": {"transforms": [{"name": "Resize", "params": {"height": 0, "width": 9}}]}}},
     "config.dataset.t.transforms[0] Resize.height: expected a size in pixels from 1 to 2048"),
    ({"model": {"name": "TinyDetector"}, "data": {"train_branch": "t"},
      "dataset": {"t": {"transforms": RESIZE + [{"name": "Normalize", "params": [0.5]}]}}},
     "config.dataset.t.transforms[1] Normalize.params: expected a mapping"),
    ({"model": {"name": "TinyDetector"}, "data": {"train_branch": "t"},
      "dataset": {"t": {"transforms": RESIZE + [{"name": "Normalize",
                                                 "params": {"std": 0}}]}}},
     "config.dataset.t.transforms[1] Normalize.std: expected a positive finite number, got 0"),
    ({"model": {"name": "TinyDetector"}, "data": {"train_branch": "t"},
      "dataset": {"t": {"transforms": [{"name": "Resize", "params": {"height": 4, "width": 4}}]}}},
     "config.dataset (its Resize): [4, 4] is smaller than TinyDetector accepts"),
]


def _checkpoint_cases(folder, tiny):
    """(file, expected text) for each bad case, the files written as train.py writes them."""
    config = {"model": {"name": "TinyDetector", "num_classes": 1}}
    cases = []
    for i, (change, text) in enumerate(BAD_SPECS):
        path = folder / f"spec_{i}.bin"
        torch.save({"model": tiny, "config": config, "input_spec": {**GOOD_SPEC, **change}}, path)
        cases.append((str(path), text))
    for i, (saved, text) in enumerate(BAD_CONFIGS):
        path = folder / f"config_{i}.bin"
        torch.save({"model": tiny, "config": saved}, path)
        cases.append((str(path), text))
    return cases


def test_a_checkpoint_s_saved_spec_and_config_are_checked_when_loaded(tmp_path, tiny,
                                                                       make_checkpoint):
    from tools.weights import check, load_catalogue
    good = make_checkpoint(tmp_path / "good.bin", "TinyDetector",
                           config={"model": {"name": "TinyDetector"}}, spec=32)
    assert load_detector(good).spec == InputSpec((32, 32))  # the cases differ only in one
    for path, text in _checkpoint_cases(tmp_path, tiny):
        with pytest.raises(UserError) as info:
            load_detector(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and text in message and "\n" not in message, \
            (path, message)
        with pytest.raises(UserError, match=re.escape(text)):  # weights.py reads it alike
            check(path, load_catalogue())


def test_a_requested_image_size_is_checked_as_every_size_is(tmp_path, tiny, make_checkpoint):
    good = make_checkpoint(tmp_path / "good.bin", "TinyDetector",
                           config={"model": {"name": "TinyDetector"}}, spec=32)
    assert load_detector(good, image_size=2048).spec.size == (2048, 2048)
    for size, text in [(0, "expected a size in pixels from 1 to 2048, got 0"),
                       (-1, "got -1"), (4096, "got 4096"), (NAN, "expected an integer, got nan"),
                       ("big", "expected an integer, got 'big'"),
                       (7, "image_size 7: the model needs at least 8")]:
        with pytest.raises(UserError, match=re.escape(text)):
            load_detector(good, image_size=size, image_size_key="image_size")
        with pytest.raises(UserError, match=r"^image_size"):
            load_detector(good, image_size=size, image_size_key="image_size")


@pytest.mark.parametrize("which", ["spec_0", "config_0", "config_8"])
@pytest.mark.slow
def test_a_bad_checkpoint_is_one_line_through_inference_and_test(tmp_path, tiny, which):
    """A NaN mean, a config that is not a mapping, a size of 0: exit 2, one stderr line, never a
    traceback, a NaN probability or a verdict."""
    cases = dict((os.path.basename(p)[:-4], (p, t)) for p, t in _checkpoint_cases(tmp_path, tiny))
    path, text = cases[which]
    data = tiny_data(str(tmp_path / "data"))
    proc = cli(["inference.py", "-b", path, "-f", data, "-d", "cpu", "--import", PLUGIN])
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert text in proc.stderr and path in proc.stderr
    if which != "spec_0":
        return
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"test_cfg": {"root": data,
                                                                  "transforms": []}}))
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": "TinyDetector", "pretrained": False},
        "config": {"imports": [PLUGIN]},
        "data": {"name": "TinyLayout", "file": str(tmp_path / "ds.yml"), "num_workers": 0}}))
    proc = cli(["test.py", "--config", str(cfg), "--ckpt", path, "--device", "cpu", "--out",
                 str(tmp_path / "t")])
    assert proc.returncode == 2 and "nan" not in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr == f"error: {path}: {text}\n"
    assert not (tmp_path / "t").exists()


def test_checkpoint_flavours_load_alike(run_checkpoint, tmp_path):
    from model.checkpoint import load_weights
    path, model = run_checkpoint
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
    with pytest.raises(UserError, match="missing keys"):
        load_weights(Recce(), {"model": {"fc.weight": torch.zeros(1, 2048)}})


@pytest.mark.slow
def test_checkpoint_face_crop_saved_and_checked(tmp_path):
    from model import Xception
    state = {"model": Xception().state_dict(), "config": {"model": {"name": "Xception"}},
             "face_crop": "ffpp"}
    torch.save(state, tmp_path / "a.bin")
    assert load_detector(str(tmp_path / "a.bin"), torch.device("cpu")).face_crop == "ffpp"
    state["face_crop"] = "../etc"
    torch.save(state, tmp_path / "b.bin")
    with pytest.raises(UserError, match=r"b.bin: face_crop '../etc': expected one of"):
        load_detector(str(tmp_path / "b.bin"), torch.device("cpu"))
    del state["face_crop"]
    torch.save(state, tmp_path / "c.bin")
    assert load_detector(str(tmp_path / "c.bin"), torch.device("cpu")).face_crop is None
