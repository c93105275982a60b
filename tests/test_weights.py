"""tools/weights.py: the catalogue of public RECCE checkpoints and the recognition of a file."""
import pytest
import torch

from model import Recce, Xception


def _deepfakebench_file(path, recce):
    """A file shaped as DeepfakeBench's RecceDetector saves it: DataParallel's ``module.``, the
    network under ``model.`` with a two-logit head, an unused Xception under ``backbone.``."""
    state = {f"module.model.{k}": v for k, v in recce.state_dict().items() if not k.startswith("fc.")}
    w, b = recce.state_dict()["fc.weight"], recce.state_dict()["fc.bias"]
    state["module.model.fc.weight"] = torch.cat([torch.zeros_like(w), w])
    state["module.model.fc.bias"] = torch.cat([torch.zeros_like(b), b])
    state["module.backbone.conv1.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(state, path)


@pytest.fixture(scope="module")
def recce():
    torch.manual_seed(0)
    return Recce().eval()


def test_list_names_every_catalogue_entry(capsys):
    from tools.weights import load_catalogue, main
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, entry in load_catalogue().items():
        assert f"{name}: " in out and entry["published"] in out
    assert "recce_best.pth of the v1.0.1 release" in out and "releases/tag/v1.0.1" in out


def test_check_recognises_each_kind(recce, tmp_path, capsys):
    from model.checkpoint import load_detector
    from tools.weights import check, load_catalogue, main
    catalogue = load_catalogue()
    dfb = tmp_path / "recce_best.pth"
    _deepfakebench_file(dfb, recce)
    info = check(str(dfb), catalogue)
    assert info["kind"] == "deepfakebench" and info["architecture"] == "Recce"
    assert info["heads"] == 2 and info["spec"].size == (256, 256)
    assert info["spec"].interpolation == "bicubic" and "deepfakebench_recce" in info["match"]
    assert "no published sha256" in info["match"]
    # loading it gives that spec and the two-logit softmax's probability
    det = load_detector(str(dfb))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(det.predict(x), torch.sigmoid(recce(x)[:, 0]), atol=1e-6)
    assert det.spec.size == (256, 256) and det.spec_source == "deepfakebench"

    bare = tmp_path / "params.pth"
    torch.save(recce.state_dict(), bare)
    info = check(str(bare), catalogue)
    assert info["kind"] == "state_dict" and info["architecture"] == "Recce" and info["heads"] == 1
    assert info["spec_source"] == "default" and info["command"].startswith("python inference.py -w")
    assert "original_ffpp_c23" in info["match"]

    xc = tmp_path / "xception.pth"
    torch.save(Xception().state_dict(), xc)
    info = check(str(xc), catalogue)
    assert info["architecture"] == "Xception" and "--model Xception" in info["command"]
    assert info["match"] == "unknown"

    # a published digest, when there is one, names the entry
    catalogue["original_ffpp_c23"]["sha256"] = info_sha = check(str(bare), catalogue)["sha256"]
    assert check(str(bare), catalogue)["match"] == "original_ffpp_c23 (sha256 matches)"
    assert len(info_sha) == 64

    capsys.readouterr()
    assert main(["--check", str(dfb)]) == 0
    out = capsys.readouterr().out
    assert "kind: DeepfakeBench's RecceDetector state dict" in out
    assert "input: 256 px (bicubic)" in out and f"score with: python inference.py -b {dfb}" in out


def test_check_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    from tools.weights import main
    junk = tmp_path / "notes.pth"
    junk.write_text("not a checkpoint")
    assert main(["--check", str(junk)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read checkpoint")
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(3, 3)}, other)
    assert main(["--check", str(other)]) == 1
    assert "architecture: unknown" in capsys.readouterr().out
