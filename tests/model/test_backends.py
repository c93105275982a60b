"""Scoring backends and precisions: each gives the eager fp32 probabilities within its tolerance,
records say what scored them, the ONNX cache follows the weights' content, maps use the eager
model, and every wrong value is one error naming the keyword."""
import csv
import os

import pytest
import torch

from errors import UserError
from helpers import ROOT
from model import Recce, Xception
from model import backends as B

PLUGIN = os.path.join(ROOT, "tests", "plugins", "tiny_detector.py")
ORT = pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # threads=1 of a test does not slow the rest of the session


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECCE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture()
def faces(tmp_path, make_faces):
    return make_faces(tmp_path / "faces", [f"{i}.png" for i in range(5)], shape=(40, 40), seed=3)


@pytest.fixture()
def plugin_ckpt(tmp_path, make_checkpoint):
    from registry import import_modules
    import_modules([PLUGIN])
    return make_checkpoint(tmp_path / "tiny.bin", "TinyDetector",
                           config={"model": {"name": "TinyDetector"}}, spec=32, seed=1)


def _predict(ckpt, faces, **kw):
    from faces import Predictor
    det = Predictor.from_checkpoint(ckpt, "cpu", imports=[PLUGIN], **kw)
    return det, det.predict(str(faces))


@pytest.mark.slow
def test_each_backend_and_precision_gives_the_eager_probabilities(plugin_ckpt, faces, cache):
    _, eager = _predict(plugin_ckpt, faces)
    ort, got = _predict(plugin_ckpt, faces, backend="onnxruntime", threads=1)
    assert (ort.backend, ort.precision) == ("onnxruntime", "fp32")
    assert got == pytest.approx(eager, abs=1e-4)
    assert ort.forward.session.get_session_options().intra_op_num_threads == 1
    assert torch.get_num_threads() == 1
    bf16, got = _predict(plugin_ckpt, faces, precision="bf16")
    assert (bf16.backend, bf16.precision) == ("torch", "bf16")
    assert got == pytest.approx(eager, abs=0.02)
    assert len(os.listdir(cache)) == 1  # one export, cached
    auto, got = _predict(plugin_ckpt, faces, backend="auto")
    assert (auto.backend, auto.precision) == ("onnxruntime", "fp32")  # ONNX Runtime installed
    assert got == pytest.approx(eager, abs=1e-4)
    chosen, _ = _predict(plugin_ckpt, faces, precision="auto")
    expected = "bf16" if B.native_bf16() else "fp32"
    assert chosen.precision == expected or "differs from fp32" in chosen.forward.note


@pytest.mark.slow
def test_records_say_what_scored_them(plugin_ckpt, faces, tmp_path, capsys):
    import inference
    out = tmp_path / "rows.csv"
    assert inference.main(["-b", plugin_ckpt, "-f", str(faces), "--import", PLUGIN, "-d", "cpu",
                           "--backend", "onnxruntime", "--threads", "1", "--output",
                           str(out)]) == 0
    assert "scored by: onnxruntime fp32 (max difference" in capsys.readouterr().err
    rows = list(csv.DictReader(open(out)))
    assert {(r["backend"], r["precision"]) for r in rows} == {("onnxruntime", "fp32")}
    assert inference.main(["-b", plugin_ckpt, "-f", str(faces), "--import", PLUGIN,
                           "--threads", "0"]) == 2
    assert "error: --threads: expected a number of threads" in capsys.readouterr().err


@pytest.mark.slow
def test_the_cache_follows_the_weights_never_the_path(plugin_ckpt, faces, cache, caplog):
    _predict(plugin_ckpt, faces, backend="onnxruntime")
    first = set(os.listdir(cache))
    state = torch.load(plugin_ckpt, weights_only=True)
    state["model"]["fc.bias"] += 1.0  # other weights under the same path
    torch.save(state, plugin_ckpt)
    _, eager = _predict(plugin_ckpt, faces)
    _, got = _predict(plugin_ckpt, faces, backend="onnxruntime")
    assert got == pytest.approx(eager, abs=1e-4)
    second = set(os.listdir(cache))
    assert len(second) == 2 and first < second  # a new export; the old one is another's
    newest = cache / (second - first).pop()
    newest.write_bytes(b"not an onnx file")  # a corrupt cache file: made anew, said once
    with caplog.at_level("WARNING", logger="recce"):
        _, again = _predict(plugin_ckpt, faces, backend="onnxruntime")
    assert again == pytest.approx(eager, abs=1e-4)
    assert any("cannot be opened" in r.getMessage() and "made anew" in r.getMessage()
               for r in caplog.records)
    assert newest.stat().st_size > 100


@pytest.mark.slow
def test_maps_use_the_eager_model_on_every_backend(plugin_ckpt, faces, tmp_path):
    det, probs = _predict(plugin_ckpt, faces, backend="onnxruntime")
    names = [f"{i}.png" for i in range(5)]
    got = [p for _, p, _, _ in det.score_items(sorted(str(f) for f in faces.iterdir()), names,
                                                str(tmp_path / "vis"))]
    assert got == pytest.approx(probs, abs=1e-4)
    assert len(os.listdir(tmp_path / "vis")) == 5  # a panel per face, Grad-CAM or not


def test_wrong_values_are_one_error_naming_the_keyword(plugin_ckpt):
    from faces import Predictor
    for kw, match in (({"backend": "gpu"}, "backend: 'gpu' is not one of"),
                      ({"precision": "fp16"}, "precision: 'fp16' is not one of"),
                      ({"threads": 0}, "threads: expected a number of threads"),
                      ({"backend": "onnxruntime", "precision": "bf16"}, "scores in fp32")):
        with pytest.raises(UserError, match=match) as info:
            Predictor.from_checkpoint(plugin_ckpt, "cpu", imports=[PLUGIN], **kw)
        assert info.value.arg in kw


@pytest.mark.slow
@pytest.mark.parametrize("cls,name", [(Recce, "Recce"), (Xception, "Xception")])
def test_recce_and_xception_on_onnxruntime_and_bf16(cls, name, tmp_path, faces, make_checkpoint):
    torch.manual_seed(0)
    ckpt = make_checkpoint(tmp_path / f"{name}.bin", cls(), config={"model": {"name": name}},
                           spec=64)
    _, eager = _predict(ckpt, faces)
    _, ort = _predict(ckpt, faces, backend="onnxruntime")
    assert ort == pytest.approx(eager, abs=1e-4)
    _, bf16 = _predict(ckpt, faces, precision="bf16")
    assert bf16 == pytest.approx(eager, abs=0.05)


def test_bf16_training_and_evaluation_on_the_cpu_only_where_it_is_native(monkeypatch):
    from trainer.evaluate import autocast, device_amp
    cpu = torch.device("cpu")
    assert device_amp(cpu, "fp16", "config.amp") == "none"  # fp16 never on the CPU, as before
    assert device_amp(cpu, "none", "config.amp") == "none"
    monkeypatch.setattr(B, "native_bf16", lambda: ["avx512_bf16"])
    assert device_amp(cpu, "bf16", "config.eval_amp") == "bf16"
    with autocast(cpu, "bf16"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    with autocast(cpu, "none"):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    monkeypatch.setattr(B, "native_bf16", lambda: [])
    with pytest.raises(UserError, match="config.amp bf16: this CPU has no native bf16"):
        device_amp(cpu, "bf16", "config.amp")
