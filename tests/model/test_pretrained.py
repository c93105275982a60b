"""model/pretrained.py: ImageNet weights for the Xception encoder from a local file or the hub,
and one clear sentence, at once, when they cannot be had."""
import os

import pytest
import torch

from errors import UserError
from model import build_detector


def test_pretrained_corrupt_or_foreign_file(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UserError, match="model.pretrained: cannot read encoder weights"):
        build_detector({"name": "Recce", "pretrained": str(tmp_path / "junk.pth")})
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="model.pretrained: cannot read encoder weights"):
        build_detector({"name": "Xception", "pretrained": str(tmp_path / "junk.safetensors")})
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UserError, match="holds no state dict of tensors"):
        build_detector({"name": "Recce", "pretrained": str(tmp_path / "list.pth")})


@pytest.mark.slow
def test_pretrained_download_failure_is_one_sentence(tmp_path):
    """The download branch itself (not offline mode): a hub that cannot be reached is answered
    with one sentence and nothing else on stderr, without calling the hub client (which retries
    with back-off for about 25 s): one connection attempt decides."""
    import subprocess
    import sys

    from helpers import ROOT
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-c", (
            "import sys; sys.path.insert(0, sys.argv[1]); from model import build_detector\n"
            "import huggingface_hub\n"
            "huggingface_hub.hf_hub_download = lambda *a, **k: print('the hub client was called')\n"
            "from errors import UserError\n"
            "try:\n    build_detector({'name': 'Recce'})\nexcept UserError as e:\n    print(e)"),
         str(ROOT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "could not be downloaded (offline?)" in proc.stdout, proc.stderr[-1000:]
    assert "model.pretrained: false" in proc.stdout and proc.stderr.strip() == ""
    assert "the hub client was called" not in proc.stdout  # no retries with back-off


def test_pretrained_unavailable_is_one_clear_error_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    import model.pretrained as pre
    monkeypatch.setattr(pre, "_find_cached", lambda: None)
    monkeypatch.setattr(pre, "_download", lambda: pytest.fail("a download was attempted"))
    with pytest.raises(UserError, match="model.pretrained: false"):
        build_detector({"name": "Recce"})  # absent pretrained means True; offline: no download
    with pytest.raises(UserError, match="no such file"):
        build_detector({"name": "Recce", "pretrained": str(tmp_path / "missing.pth")})


def test_pretrained_from_local_file(tmp_path):
    import timm
    torch.manual_seed(3)
    src = timm.create_model("legacy_xception")
    # Cadene's layout: last_linear head and 2-d pointwise weights
    state = {k.replace("fc.", "last_linear."):
             (v[:, :, 0, 0] if k.endswith("pointwise.weight") else v)
             for k, v in src.state_dict().items()}
    path = tmp_path / "xception.pth"
    torch.save(state, path)
    model = build_detector({"name": "Recce", "pretrained": str(path)})
    assert torch.equal(model.encoder.block5.rep[1].pointwise.weight,
                       src.block5.rep[1].pointwise.weight)
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not an Xception"):
        build_detector({"name": "Recce", "pretrained": str(tmp_path / "bad.pth")})
