"""tools/weights.py: the catalogue of public RECCE checkpoints, the recognition of a file, and
the commands it prints, each run as printed."""
import shlex

import pytest
import torch

from helpers import PLUGIN, cli, deepfakebench_file, write_faces
from model import Recce, Xception


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


@pytest.mark.slow
def test_check_recognises_each_kind(recce, tmp_path, capsys):
    from model.checkpoint import load_detector
    from tools.weights import check, load_catalogue, main
    catalogue = load_catalogue()
    dfb = tmp_path / "recce_best.pth"
    deepfakebench_file(dfb, recce)
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


# ------------------------------------------------------------------ every printed command runs
def _faces(folder, n=2):
    """``n`` images of random pixels in ``folder``; returns its path as text."""
    return str(write_faces(folder, [f"{i}.png" for i in range(n)]))


def _printed(stdout):
    return next(line for line in stdout.splitlines()
                if line.startswith("score with: "))[len("score with: "):]


def _run_printed(command, faces):
    """The printed command, run as printed from the project's folder (FACES: a folder)."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "inference.py"], command
    return cli(["inference.py"] + [faces if a == "FACES" else a for a in argv[2:]])


@pytest.mark.slow
def test_the_command_printed_for_a_detector_of_ones_own_runs_as_printed(tmp_path, capsys,
                                                                         make_checkpoint):
    """tools/weights.py --check on checkpoints of the plugin's detector: the printed command
    carries the --import it needs (the run's saved imports, or the --import given here). A fresh
    process, which knows nothing of the plugin, runs the first; the others run in this one."""
    import inference
    from registry import import_modules
    from tools.weights import main
    import_modules([PLUGIN])
    folder = tmp_path / "my runs"  # a space: the printed paths are quoted
    folder.mkdir()
    run = folder / "best_model_4.bin"
    make_checkpoint(run, "TinyDetector", config={
        "model": {"name": "TinyDetector", "num_classes": 1}, "config": {"imports": [PLUGIN]}},
        spec=32)
    bare = folder / "tiny.pth"
    torch.save(torch.load(run, weights_only=True)["model"], bare)  # the weights alone
    faces = _faces(tmp_path / "faces")

    proc = cli(["tools/weights.py", "--check", str(run)])  # not registered in that process
    assert proc.returncode == 1 and "TinyDetector, not registered here" in proc.stdout
    command = _printed(proc.stdout)
    assert command.endswith(f"--import {PLUGIN}") and shlex.split(command)[3] == str(run)
    proc = _run_printed(command, faces)
    assert proc.returncode == 0, (command, proc.stderr)
    assert proc.stdout.count("fake probability: ") == 2, proc.stdout
    # a bare state dict that no detector known there fits: no command that could not run
    proc = cli(["tools/weights.py", "--check", str(bare)])
    assert proc.returncode == 1 and "score with: no command" in proc.stdout

    capsys.readouterr()
    for path, expected in [(run, "input: 32 px (bilinear)"),
                           (bare, "architecture: TinyDetector (1 logit")]:
        assert main(["--check", str(path), "--import", PLUGIN]) == 0
        out = capsys.readouterr().out
        command = _printed(out)
        assert expected in out and command.endswith(f"--import {PLUGIN}"), out
        argv = shlex.split(command)
        assert argv[:2] == ["python", "inference.py"] and str(path) in argv
        assert inference.main([faces if a == "FACES" else a for a in argv[2:]]) == 0, command
        assert capsys.readouterr().out.count("fake probability: ") == 2
    assert "--model TinyDetector" in command and " -w " in command


@pytest.mark.slow
def test_the_commands_of_the_catalogue_and_of_check_run_as_printed(recce, tmp_path, capsys):
    """--list's "score with" for each entry (FILE: a file of the entry's kind) and --check's
    command for each kind, run through inference.py's command line."""
    import inference
    from tools.weights import check, load_catalogue
    faces = _faces(tmp_path / "faces", n=1)
    bare = tmp_path / "params.pth"
    torch.save(recce.state_dict(), bare)
    dfb = tmp_path / "recce_best.pth"
    deepfakebench_file(dfb, recce)
    files = {"state_dict": str(bare), "deepfakebench": str(dfb)}
    commands = [e["score_with"].replace("FILE", files[e["flavour"]])
                for e in load_catalogue().values()]
    commands += [check(path, load_catalogue())["command"] for path in files.values()]
    for command in commands:
        argv = shlex.split(command)
        assert argv[:2] == ["python", "inference.py"], command
        capsys.readouterr()
        assert inference.main([faces if a == "FACES" else a for a in argv[2:]]) == 0, command
        assert capsys.readouterr().out.count("fake probability: ") == 1
