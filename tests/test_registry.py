"""registry.py: one Registry class for detectors, losses, layouts and face finders, a name
registered once (a user's module cannot replace a built-in by accident), the user's modules
imported by ``config.imports`` and ``--import`` with every failure one line; and the acceptance
test of those seams: a detector, its loss and a dataset layout that only
tests/plugins/tiny_detector.py defines, through train.py, test.py, inference.py (images and a
video), tools/export.py and tools/robustness.py with no other file touched."""
import csv
import os
import re
import sys

import pytest
import torch
import yaml

from errors import UserError
from helpers import PLUGIN, cli, hopper_video, tiny_data
from model import DETECTORS
from registry import Registry, import_modules


# ---------------------------------------------------------------- one registry class
def test_registry_names_its_key_and_the_known_names():
    reg = Registry("thing", "config.thing")

    @reg.register
    class Alpha:
        pass

    reg.register(lambda: None, name="beta")
    assert reg.get("Alpha") is Alpha and "beta" in reg and list(reg) == ["Alpha", "beta"]
    with pytest.raises(UserError,
                       match=r"config.thing: unknown thing 'gamma' \(known: Alpha, beta\)"):
        reg.get("gamma")
    from dataset import LAYOUTS
    from faces.finders import FACE_FINDERS
    from loss import LOSSES
    for r in (DETECTORS, LOSSES, LAYOUTS, FACE_FINDERS):
        assert isinstance(r, Registry)
    assert {"RecceLoss", "ClassificationLoss"} <= set(LOSSES)
    assert {"dlib", "retinaface"} <= set(FACE_FINDERS)


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
    proc = cli(["tools/weights.py", "--check", str(tmp_path / "any.bin"), "--import",
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


@pytest.mark.slow
def test_a_detector_of_ones_own_goes_through_every_entry_point(tmp_path):
    """Nothing of the project is edited: the plugin file is named by config.imports (train.py,
    test.py, robustness.py) and --import (inference.py, export.py), each run in a fresh process."""
    data = tiny_data(str(tmp_path / "data"))
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
    proc = cli(["train.py", "--config", str(cfg)])
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

    proc = cli(["test.py", "--config", str(cfg), "--ckpt", str(ckpt), "--out",
                 str(tmp_path / "t"), "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "t" / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    tested = {r["path"]: float(r["raw_probability"]) for r in rows}
    shown = {r["path"]: float(r["fake_probability"]) for r in rows}
    assert len(tested) == 12

    proc = cli(["inference.py", "-b", str(ckpt), "-f", data, "-d", "cpu", "--import", PLUGIN,
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
        proc = cli(["inference.py", "-b", str(ckpt), "--video", video, "-d", "cpu", "--import",
                     PLUGIN, "--frames", "3"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "fake probability:" in proc.stdout and "frames: 3" in proc.stdout

    proc = cli(["tools/export.py", "-b", str(ckpt), "--format", "torch.export", "--out",
                 str(tmp_path / "tiny.pt2"), "--import", PLUGIN])
    assert proc.returncode == 0, proc.stderr[-2000:]
    program = torch.export.load(str(tmp_path / "tiny.pt2"))
    assert program.example_inputs[0][0].shape[-2:] == (96, 96)  # the checkpoint's input size

    proc = cli(["tools/robustness.py", "--config", str(cfg), "--ckpt", str(ckpt), "--types",
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


