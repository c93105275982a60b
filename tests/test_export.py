"""tools/export.py: ONNX and torch.export files that agree with the eager model and explain
themselves; bad options and NaN weights are one line; an export is whole or not written."""
import json
import os

import pytest
import torch


def test_export_bad_options_and_nan_weights(tmp_path, bare_checkpoint, nan_checkpoint, capsys):
    from tools.export import main
    for args, text in [(["--bin", bare_checkpoint, "--out", str(tmp_path / "no" / "m.onnx")],
                        "does not exist"),
                       (["--bin", bare_checkpoint, "--out", str(tmp_path / "m.pt2"), "--size", "3",
                         "--format", "torch.export"],
                        "--size 3: the model needs inputs of at least 7"),
                       (["--bin", nan_checkpoint, "--out", str(tmp_path / "m.pt2"), "--size", "32",
                         "--format", "torch.export"], "NaN or infinite")] + [
            # one bound for every size: refused before the checkpoint is read, never a default
            (["--bin", str(tmp_path / "missing.bin"), "--out", str(tmp_path / "m.pt2"),
              "--size", size], f"--size: expected a size in pixels from 1 to 2048, got {size}")
            for size in ("0", "-3", "2049", "100000")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1
    assert not (tmp_path / "m.pt2").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torch.export"])
def test_export_agrees_with_eager(run_checkpoint, tmp_path, fmt):
    import onnxruntime  # noqa: F401 - a dev requirement: the ONNX file is always checked here

    from tools.export import export, load_for_export
    path, _ = run_checkpoint
    model = load_for_export(path)
    diff = export(model, fmt, str(tmp_path / f"m.{fmt}"), size=32, with_recons=fmt == "onnx",
                  checkpoint=path)
    assert diff is not None and diff < 1e-4
    if fmt == "onnx":  # the file explains itself
        import onnxruntime as ort

        import version
        meta = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=[
            "CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        assert json.loads(meta["input_size"]) == [32, 32]
        assert json.loads(meta["mean"]) == [0.5] * 3 and json.loads(meta["std"]) == [0.5] * 3
        assert "RGB" in meta["input"] and "sigmoid" in meta["output_logits"]
        assert meta["model"] == "Recce" and meta["checkpoint"] == os.path.basename(path)
        assert meta["project_version"].startswith(version.__version__) and "output_recons" in meta


@pytest.mark.slow
def test_export_never_leaves_a_half_file_nor_overwrites_its_input(run_checkpoint, tmp_path,
                                                                  monkeypatch):
    from tools import export as ex
    path, _ = run_checkpoint
    out = tmp_path / "m.pt2"
    out.write_bytes(b"the user's previous export")

    def interrupted(program, f):
        open(f, "wb").write(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch.export, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.export(ex.load_for_export(path), "torch.export", str(out), size=32)
    assert out.read_bytes() == b"the user's previous export"
    assert sorted(os.listdir(tmp_path)) == ["m.pt2"]  # no temporary file left
    monkeypatch.undo()
    before = open(path, "rb").read()
    assert ex.main(["-b", path, "--out", path, "--format", "torch.export"]) == 2
    assert open(path, "rb").read() == before
