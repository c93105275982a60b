"""The detector contract and its seams: every registered detector through the contract; the input
spec saved with a checkpoint and used by every entry point; one Registry class; and the acceptance
test: a detector, its loss and a dataset layout that only tests/plugins/tiny_detector.py defines,
registered through the config's ``config.imports``, through train.py, test.py, inference.py
(images and a video), tools/export.py and tools/robustness.py with no other file touched."""
import csv
import logging
import os
import re
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


# ---------------------------------------------------------------- a checkpoint's saved spec, config
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


def test_a_checkpoint_s_saved_spec_and_config_are_checked_when_loaded(tmp_path, tiny):
    from tools.weights import check, load_catalogue
    good = tmp_path / "good.bin"
    torch.save({"model": tiny, "config": {"model": {"name": "TinyDetector"}},
                "input_spec": GOOD_SPEC}, good)
    assert load_detector(str(good)).spec == InputSpec((32, 32))  # the cases differ only in one
    for path, text in _checkpoint_cases(tmp_path, tiny):
        with pytest.raises(UserError) as info:
            load_detector(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and text in message and "\n" not in message, \
            (path, message)
        with pytest.raises(UserError, match=re.escape(text)):  # weights.py reads it alike
            check(path, load_catalogue())


def test_a_requested_image_size_is_checked_as_every_size_is(tmp_path, tiny):
    good = tmp_path / "good.bin"
    torch.save({"model": tiny, "config": {"model": {"name": "TinyDetector"}},
                "input_spec": GOOD_SPEC}, good)
    assert load_detector(str(good), image_size=2048).spec.size == (2048, 2048)
    for size, text in [(0, "expected a size in pixels from 1 to 2048, got 0"),
                       (-1, "got -1"), (4096, "got 4096"), (NAN, "expected an integer, got nan"),
                       ("big", "expected an integer, got 'big'"),
                       (7, "image_size 7: the model needs at least 8")]:
        with pytest.raises(UserError, match=re.escape(text)):
            load_detector(str(good), image_size=size, image_size_key="image_size")
        with pytest.raises(UserError, match=r"^image_size"):
            load_detector(str(good), image_size=size, image_size_key="image_size")


@pytest.mark.parametrize("which", ["spec_0", "config_0", "config_8"])
def test_a_bad_checkpoint_is_one_line_through_inference_and_test(tmp_path, tiny, which):
    """A NaN mean, a config that is not a mapping, a size of 0: exit 2, one stderr line, never a
    traceback, a NaN probability or a verdict."""
    cases = dict((os.path.basename(p)[:-4], (p, t)) for p, t in _checkpoint_cases(tmp_path, tiny))
    path, text = cases[which]
    data = _tiny_data(str(tmp_path / "data"))
    proc = _cli(["inference.py", "-b", path, "-f", data, "-d", "cpu", "--import", PLUGIN])
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
    proc = _cli(["test.py", "--config", str(cfg), "--ckpt", path, "--device", "cpu", "--out",
                 str(tmp_path / "t")])
    assert proc.returncode == 2 and "nan" not in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr == f"error: {path}: {text}\n"
    assert not (tmp_path / "t").exists()


def test_a_normalisation_the_pretrained_weights_do_not_expect_is_one_warning():
    from trainer.data import pretrained_spec_warning
    spec = InputSpec((64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    recce = DETECTORS.get("Recce")
    warning = pretrained_spec_warning(True, recce, spec, "ds.yml")
    assert "ds.yml normalises with mean" in warning and "pretrained Recce weights expect" in warning
    assert pretrained_spec_warning(False, recce, spec, "ds.yml") is None
    assert pretrained_spec_warning(True, recce, recce.default_spec, "ds.yml") is None


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
    with pytest.raises(UserError, match="expected a module name, a .py file or a list of them"):
        import_modules(42)


def test_imports_one_string_is_one_import_and_any_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fine_plugin.py").write_text("LOADED = True\n")
    path = str(tmp_path / "fine_plugin.py")
    assert import_modules(path) == [path]  # one import, not one per letter
    assert import_modules("fine_plugin") == ["fine_plugin"]
    assert import_modules(("fine_plugin",)) == ["fine_plugin"]
    assert sys.modules["fine_plugin"].LOADED
    # whatever a user's module raises, by module name or by file: one line naming it
    for name, text, raised in [
            ("raises_value", "raise ValueError('bad\\nsetting')\n", "ValueError: bad setting"),
            ("raises_key", "import os\nos.environ['RECCE_NO_SUCH_VARIABLE']\n",
             "KeyError: 'RECCE_NO_SUCH_VARIABLE'"),
            ("exits", "import sys\nsys.exit(3)\n", "SystemExit: 3"),
            ("broken_syntax", "def f(:\n", "SyntaxError: ")]:
        (tmp_path / f"{name}.py").write_text(text)
        with pytest.raises(UserError) as info:
            import_modules(name, where="--import")
        assert str(info.value).startswith(f"--import: importing {name!r} failed: {raised}")
        assert "\n" not in str(info.value) and name not in sys.modules
        with pytest.raises(UserError, match=rf"importing .*{name}.py failed: {raised[:9]}"):
            import_modules(str(tmp_path / f"{name}.py"))
    with pytest.raises(UserError, match="cannot import 'fine_plugin.nope'"):
        import_modules("fine_plugin.nope")


def test_an_import_that_fails_is_one_line_through_the_command_line(tmp_path):
    """A user's module raising something other than ImportError, named by --import."""
    (tmp_path / "raises_value.py").write_text("raise ValueError('bad setting')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = _cli(["tools/weights.py", "--check", str(tmp_path / "any.bin"), "--import",
                 "raises_value"], env=env)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr == ("error: --import: importing 'raises_value' failed: ValueError: bad "
                           "setting\n")


# ---------------------------------------------------------------- a name is registered once
def test_a_registry_refuses_a_second_registration_unless_asked_to_replace():
    reg = Registry("thing", "config.thing")

    class Alpha:
        pass

    class Beta:
        pass

    assert reg.register(Alpha) is Alpha
    assert reg.register(Alpha) is Alpha  # the very same object again: nothing changes
    here = re.escape(Alpha.__module__)
    with pytest.raises(UserError, match=rf"^config.thing: {here} registers a thing named 'Alpha', "
                                        rf"which {here} has registered already; .*replace=True"):
        reg.register(Beta, name="Alpha")
    assert reg.get("Alpha") is Alpha
    assert reg.register(Beta, name="Alpha", replace=True) is Beta and reg.get("Alpha") is Beta

    @reg.register(name="gamma")
    def first():
        pass

    with pytest.raises(UserError, match="named 'gamma'"):
        @reg.register(name="gamma")
        def second():
            pass

    @reg.register(name="gamma", replace=True)
    def third():
        pass

    assert reg.get("gamma") is third and reg.origin("gamma") == Alpha.__module__
    assert list(reg) == ["Alpha", "gamma"]


def test_register_detector_takes_replace_as_decorator_and_as_a_plain_call():
    from model import register_detector

    class Probe(Detector):
        pass

    class Other(Detector):
        pass

    try:
        register_detector(Probe, name="ReplaceProbe")
        with pytest.raises(UserError, match="model.name: .*'ReplaceProbe'.*registered already"):
            register_detector(Other, name="ReplaceProbe")
        assert DETECTORS.get("ReplaceProbe") is Probe
        assert register_detector(Other, name="ReplaceProbe", replace=True) is Other
        assert DETECTORS.get("ReplaceProbe") is Other

        @register_detector(name="ReplaceProbe", replace=True)
        class Third(Detector):
            pass

        assert DETECTORS.get("ReplaceProbe") is Third
    finally:
        DETECTORS.pop("ReplaceProbe")


def test_a_users_module_cannot_replace_a_built_in_by_accident(tmp_path):
    """The error names both modules; replace=True replaces, and only then."""
    from dataset import LAYOUTS
    recce, dfdc = DETECTORS.get("Recce"), LAYOUTS.get("DFDC")
    (tmp_path / "mine.py").write_text(
        "from model import Recce, register_detector\n\n\n"
        "@register_detector\nclass Recce(Recce):\n    pass\n")
    with pytest.raises(UserError) as info:
        import_modules(["mine.py"], str(tmp_path))
    assert str(info.value) == (
        f"model.name: {tmp_path / 'mine.py'} registers a detector named 'Recce', which "
        "model.recce has registered already; choose another name, or register it with "
        "replace=True to replace it")
    assert DETECTORS.get("Recce") is recce and DETECTORS.origin("Recce") == "model.recce"
    (tmp_path / "layout.py").write_text(
        "from dataset import Layout, register_layout\n"
        "register_layout(Layout('DFDC', lambda cfg, rng: []))\n")
    with pytest.raises(UserError, match=r"data.name: .*layout.py registers a dataset named "
                                        "'DFDC', which dataset.dfdc has registered already"):
        import_modules([str(tmp_path / "layout.py")])
    assert LAYOUTS.get("DFDC") is dfdc
    (tmp_path / "mine_on_purpose.py").write_text(
        "from dataset import Layout, register_layout\n"
        "from model import Recce, register_detector\n\n\n"
        "@register_detector(replace=True)\nclass Recce(Recce):\n    pass\n\n\n"
        "register_layout(Layout('DFDC', lambda cfg, rng: []), replace=True)\n")
    try:
        import_modules([str(tmp_path / "mine_on_purpose.py")])
        assert DETECTORS.get("Recce") is not recce and issubclass(DETECTORS.get("Recce"), recce)
        assert DETECTORS.origin("Recce").startswith("recce_user_")
        assert LAYOUTS.get("DFDC") is not dfdc
    finally:
        DETECTORS.register(recce, replace=True)
        LAYOUTS.register(dfdc, name="DFDC", replace=True, module="dataset.dfdc")
    assert DETECTORS.origin("Recce") == "model.recce" and LAYOUTS.get("DFDC") is dfdc


def test_one_file_imported_again_is_not_a_second_registration(tmp_path, monkeypatch):
    """config.imports names the file, --import its module name, a notebook reloads it: one
    definition, executed again, registers again without an error."""
    import importlib

    from dataset import LAYOUTS
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = tmp_path / "twice_plugin.py"
    plugin.write_text(
        "from dataset import Layout, register_layout\n"
        "from model import Detector, register_detector\n\n\n"
        "@register_detector\nclass TwiceDetector(Detector):\n    pass\n\n\n"
        "register_layout(Layout('TwiceLayout', lambda cfg, rng: []))\n")
    try:
        import_modules([str(plugin)])
        first = DETECTORS.get("TwiceDetector")
        import_modules([str(plugin)])  # the same path: not executed again
        assert DETECTORS.get("TwiceDetector") is first
        import_modules("twice_plugin")  # by module name: the same file executed again
        assert DETECTORS.origin("TwiceDetector") == "twice_plugin"
        assert DETECTORS.get("TwiceDetector") is sys.modules["twice_plugin"].TwiceDetector
        importlib.reload(sys.modules["twice_plugin"])
        assert DETECTORS.get("TwiceDetector") is sys.modules["twice_plugin"].TwiceDetector
        assert "TwiceLayout" in LAYOUTS
    finally:
        DETECTORS.pop("TwiceDetector")
        LAYOUTS.pop("TwiceLayout")
        sys.modules.pop("twice_plugin", None)


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
    cfg.write_text(yaml.safe_dump({  # its own constructor argument and its own loss weight
        "model": {"name": "TinyDetector", "pretrained": False, "width": 12},
        "loss": {"logit_weight": 0.5},
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
    assert state["model"]["conv.weight"].shape[0] == 12  # width 12 reached the constructor
    assert state["config"]["loss"] == {"kind": "binary_ce", "logit_weight": 0.5}
    saved = yaml.safe_load((run_dir / "config.yml").read_text())
    assert saved["model"]["width"] == 12 and saved["loss"]["logit_weight"] == 0.5

    proc = _cli(["test.py", "--config", str(cfg), "--ckpt", str(ckpt), "--out",
                 str(tmp_path / "t"), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "t" / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    tested = {r["path"]: float(r["raw_probability"]) for r in rows}
    shown = {r["path"]: float(r["fake_probability"]) for r in rows}
    assert len(tested) == 12

    proc = _cli(["inference.py", "-b", str(ckpt), "-f", data, "-d", "cpu", "--import", PLUGIN,
                 "--output", str(tmp_path / "inf.csv")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "default input spec" not in proc.stderr
    with open(tmp_path / "inf.csv") as fh:
        # the raw probabilities and the ones a person reads (calibrated where the run's best
        # checkpoint is), each the same in test.py's scores.csv
        read = list(csv.DictReader(fh))
    inferred = {r["path"]: float(r["raw_probability"]) for r in read}
    inferred_shown = {r["path"]: float(r["fake_probability"]) for r in read}
    assert set(inferred) == set(tested)
    assert max(abs(inferred[p] - tested[p]) for p in tested) < 1e-4
    assert max(abs(inferred_shown[p] - shown[p]) for p in tested) < 1e-4
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
    from trainer.evaluation_report import run_test
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
        scored = list(csv.DictReader(fh))
    tested = {r["path"]: float(r["raw_probability"]) for r in scored}
    shown = {r["path"]: float(r["fake_probability"]) for r in scored}
    rows = list(inference.score(inference.parse_args(["-b", ckpt, "-f", tree, "--recursive",
                                                      "-d", "cpu", "--num_workers", "0"])))
    assert len(rows) == len(tested) == n == 4
    # the raw probabilities, and the ones a person reads (calibrated where the checkpoint is)
    assert max(abs(raw - tested[path]) for path, _, _, raw in rows) < 1e-5
    assert max(abs(prob - shown[path]) for path, prob, _, _ in rows) < 1e-5
