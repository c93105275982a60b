"""inference.py end to end on small data made here: its lines, outputs and exit statuses, every
flag's bad values as one line (the Python API's rules), a stop, no verdict of a NaN, and the
numbers of test.py for the same images."""
import csv
import json
import math
import os
import signal

import cv2
import numpy as np
import pytest
import torch

from checks import MAX_BATCH_SIZE, MAX_FRAMES, MAX_INPUT_SIZE, MAX_PIXELS, MAX_SIDE, MAX_WORKERS
from helpers import cli, image_list_tree, popen
from inference import line_for
from model import InputSpec


@pytest.fixture()
def faces(tmp_path, make_faces):
    folder = make_faces(tmp_path / "faces", ("b.PNG", "a.jpg", "c.jpeg", "sub/d.png"),
                        shape=(40, 30))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint):
    """A Recce checkpoint trained (as far as the command line cares) at 48 px."""
    return make_checkpoint(tmp_path_factory.mktemp("values") / "best_model_1.bin",
                           config={"model": {"name": "Recce"}}, spec=48)


def _expected_prob(model, path, size):
    import albumentations as A
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    img = A.Resize(size, size)(image=img)["image"]
    x = torch.from_numpy((img.astype(np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        return torch.sigmoid(model(x))[0, 0].item()


@pytest.mark.slow
def test_inference_lines_order_and_probabilities(run_checkpoint, faces, tmp_path):
    path, model = run_checkpoint
    out = tmp_path / "res.json"
    proc = cli(["inference.py", "-b", path, "-f", str(faces), "-d", "cpu", "-s", "32",
                 "--output", str(out), "--num_workers", "1"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    names = ["a.jpg", "b.PNG", "c.jpeg"]
    assert [line.split(" \t\t|")[0] for line in lines] == [f"path: {faces / n}" for n in names]
    for line, name in zip(lines, names):
        p = _expected_prob(model, faces / name, 32)
        shown = float(line.split("probability: ")[1].split()[0])
        assert abs(shown - p) < 1e-3
        verdict = "fake" if shown >= 0.5 else "real"  # 4 decimals, as printed
        assert line == (f"path: {faces / name} \t\t| fake probability: {shown:.4f} \t| "
                        f"prediction: {verdict}")
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == [str(faces / n) for n in names]
    rec = cli(["inference.py", "-w", path, "-f", str(faces), "-s", "32", "--recursive",
                "--batch_size", "3", "-d", "cpu"])
    assert rec.returncode == 0 and len(rec.stdout.strip().splitlines()) == 4


class Writes:
    """A stdout that keeps each write call."""
    def __init__(self):
        self.calls = []

    def write(self, text):
        self.calls.append(text)
        return len(text)

    def flush(self):
        pass


@pytest.mark.slow
def test_each_result_line_is_one_write(ckpt, faces, hopper_media, monkeypatch):
    """Ranks under torchrun share one console and run unbuffered: a line written in pieces tears
    into another rank's."""
    import inference
    for source in (["-f", str(faces)], ["--video", hopper_media[0], "--frames", "2"]):
        stdout = Writes()
        monkeypatch.setattr("sys.stdout", stdout)
        inference.main(["-b", ckpt, "-d", "cpu", *source])
        lines = [c for c in stdout.calls if "path: " in c]
        assert lines and all(c.startswith("path: ") and c.endswith("\n") and c.count("\n") == 1
                             for c in lines), stdout.calls


def test_output_line_format_is_the_originals():
    assert line_for("x.png", 0.12964) == \
        "path: x.png \t\t| fake probability: 0.1296 \t| prediction: real"
    assert line_for("y.png", 0.5).endswith("| prediction: fake")


@pytest.mark.slow
def test_inference_bad_file_is_skipped_with_exit_1(run_checkpoint, faces, tmp_path):
    path, _ = run_checkpoint
    (faces / "broken.png").write_bytes(b"\x89PNG truncated")
    vis = tmp_path / "vis"
    out = tmp_path / "r.csv"
    proc = cli(["inference.py", "-b", path, "-f", str(faces), "-s", "32", "-d", "cpu", "-v",
                 "--vis_dir", str(vis), "--output", str(out)])
    assert proc.returncode == 1
    assert len(proc.stdout.strip().splitlines()) == 3
    said = [line for line in proc.stderr.splitlines() if "broken.png" in line]
    assert said[0].startswith("skipped")
    assert len(list(vis.glob("*.png"))) == 3
    rows = list(csv.DictReader(open(out)))
    assert [r["prediction"] == "" for r in rows] == [False, False, True, False]


@pytest.mark.slow
def test_inference_usage_errors_are_one_line(run_checkpoint, tmp_path):
    path, _ = run_checkpoint
    (tmp_path / "empty").mkdir()
    for args, text in [(["-b", path, "-f", str(tmp_path / "nope")], "image folder not found"),
                       (["-b", path, "-f", str(tmp_path / "empty")], "no images"),
                       (["-b", str(tmp_path / "x.bin"), "-f", str(tmp_path)],
                        "checkpoint not found")]:
        proc = cli(["inference.py"] + args + ["-d", "cpu"])
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and text in proc.stderr


def test_inference_bad_options_checked_before_the_work(tmp_path, bare_checkpoint, nan_checkpoint,
                                                      demo_root, capsys):
    import inference
    folder = image_list_tree(demo_root, tmp_path / "d", videos=1, frames=1) + "/real/v0"
    (tmp_path / "d.csv").mkdir()
    cases = [
        (["--output", str(tmp_path / "nowhere" / "r.csv")], "the folder .*nowhere does not exist"),
        (["--output", str(tmp_path / "d")], "use a .csv or .json file name"),
        (["--output", str(tmp_path / "d.csv")], "is a folder, expected a file name"),
        (["--batch_size", "-2"], "--batch_size: expected a batch size from 1 to 65536, got -2"),
        (["--num_workers", "-1"], "--num_workers: expected a number of worker processes from 0 "
                                  "to 1024, got -1"),
        (["--image_size", "5"], "--image_size 5: the model needs at least 7"),
        (["--image_size", "6000"], "--image_size: expected a size in pixels from 1 to 2048, "
                                   "got 6000"),
        (["--margin", "inf"], r"--margin: expected a number above 0 and at most 10 \(1.3 is "
                              r"usual\), got inf"),
        (["--video", str(tmp_path), "--all_frames", "--frames", "3"], None),
        (["--detect", "--output", str(tmp_path / "r.csv"), "--frames_output",
          str(tmp_path / "r.csv")], "--output and --frames_output are both"),
        (["-v", "--vis_dir", str(tmp_path / "afile")], "--vis_dir .*afile"),
    ]
    (tmp_path / "afile").write_text("the user's")
    for args, text in cases:
        if text is None:  # --video instead of -f: argparse's own one line for two sources
            assert inference.main(["-b", bare_checkpoint, "--video", str(tmp_path), "--all_frames",
                                   "--frames", "3", "-d", "cpu"]) == 2
            assert "each choose the frames: give one" in capsys.readouterr().err
            continue
        assert inference.main(["-b", bare_checkpoint, "-f", folder, "-d", "cpu"] + args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        import re
        assert re.search(text, err), err
    assert inference.main(["-b", nan_checkpoint, "-f", folder, "-d", "cpu", "-s", "32"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "hold NaN or infinite values" in err


@pytest.mark.slow
def test_ctrl_c_in_inference_prints_one_line_and_writes_no_output(tmp_path, demo_root,
                                                                  make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "m.bin")
    folder = tmp_path / "faces"
    folder.mkdir()
    src = image_list_tree(demo_root, tmp_path / "d", videos=1, frames=1)
    img = os.path.join(src, "real", "v0", os.listdir(os.path.join(src, "real", "v0"))[0])
    for i in range(400):
        os.link(img, folder / f"{i:04d}.png")
    out = tmp_path / "res.csv"
    proc = popen(["inference.py", "-b", str(ckpt), "-f", str(folder), "-s", "64", "-d", "cpu",
                  "--output", str(out)])
    assert proc.stdout.readline().startswith("path: ")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    # a bare state dict: its input spec is said first, then the threshold, then the stop
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "does not say how its images were prepared" in lines[0], repr(err)
    assert lines[1].startswith("threshold: 0.5000 (the default)"), repr(err)
    assert lines[2].startswith("interrupted:"), repr(err)
    assert sorted(os.listdir(tmp_path)) == ["d", "faces", "m.bin"]  # no res.csv, no temporary


@pytest.mark.slow
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


# flag -> values argparse lets through (its own type check answers the rest)
FLAG_BAD = {
    "--batch_size": ["0", "-1", str(MAX_BATCH_SIZE + 1)],
    "--num_workers": ["-1", str(MAX_WORKERS + 1)],
    "--max_pixels": ["0", "-1", str(MAX_PIXELS + 1)],
    "--image_size": ["0", "-1", str(MAX_INPUT_SIZE + 1)],
    "--frames": ["0", "-1", str(MAX_FRAMES + 1)],
    "--every": ["0", "-5", str(MAX_FRAMES + 1)],
    "--margin": ["0", "-1", "nan", "inf", "-inf", "1e300", "10.5"],
    "--min_face_size": ["0", "-1", str(MAX_SIDE + 1)],
    "--min_face_score": ["nan", "inf", "-inf"],
}


FLAG_CASES = [pytest.param(f, v, id=f"{f}={v}") for f, vs in FLAG_BAD.items() for v in vs]


@pytest.mark.parametrize("flag,value", FLAG_CASES)
@pytest.mark.parametrize("mode", ["crops", "video"])
def test_every_flag_gets_the_api_s_rule_in_one_line(ckpt, hopper_media, tmp_path, capsys, flag,
                                                    value, mode):
    import inference
    out, vis = tmp_path / "r.csv", tmp_path / "vis"
    source = ["-i", hopper_media[1]] if mode == "crops" else ["--video", hopper_media[0]]
    assert inference.main(["-b", ckpt, "-d", "cpu", *source, f"{flag}={value}", "--output",
                           str(out), "-v", "--vis_dir", str(vis)]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {flag}: expected ")
    shown = float(err.rstrip("\n").rsplit(", got ", 1)[1])
    assert shown == float(value) or (math.isnan(shown) and value == "nan")
    assert not out.exists() and not vis.exists()


def test_the_command_line_in_a_fresh_process(ckpt, hopper_media, tmp_path):
    """A handful of the table as a user runs it: one line, exit 2, no traceback, nothing written;
    a value of the wrong type is argparse's own usage error, naming the flag."""
    out, frames_out, vis = tmp_path / "r.csv", tmp_path / "f.csv", tmp_path / "vis"
    written = ["--output", str(out), "-v", "--vis_dir", str(vis)]
    cases = [
        (["--video", hopper_media[0], "--frames", "0", "--frames_output", str(frames_out)],
         "--frames: expected a number of frames from 1 to 10000000, got 0"),
        (["--video", hopper_media[0], "--every", "0"],
         "--every: expected a number of frames from 1 to 10000000, got 0"),
        (["-i", hopper_media[1], "--detect", "--margin", "nan"],
         "--margin: expected a number above 0 and at most 10 (1.3 is usual), got nan"),
        (["-i", hopper_media[1], "--batch_size", "0"],
         "--batch_size: expected a batch size from 1 to 65536, got 0"),
        (["-i", hopper_media[1], "-s", "0"],
         "--image_size: expected a size in pixels from 1 to 2048, got 0"),
    ]
    for args, line in cases:
        proc = cli(["inference.py", "-b", ckpt, "-d", "cpu"] + args + written)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr == f"error: {line}\n"
    proc = cli(["inference.py", "-b", ckpt, "-d", "cpu", "--video", hopper_media[0], "--frames",
                "many"] + written)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("error: argument --frames: invalid int value: "
                                                 "'many'")
    assert sorted(os.listdir(tmp_path)) == []


def test_the_command_line_prints_no_verdict_of_a_nan(tmp_path, hopper_media):
    """A user's detector (imported with --import) that gives NaN: one line naming the input and
    the detector, exit 2, no "prediction: real", no output file."""
    plugin = tmp_path / "nan_detector.py"
    plugin.write_text(
        "import torch.nn as nn\n"
        "from model import Detector, InputSpec, register_detector\n\n\n"
        "@register_detector\n"
        "class NanValuesDetector(Detector):\n"
        "    default_spec = InputSpec((16, 16), (0.5,) * 3, (0.5,) * 3)\n\n"
        "    def __init__(self, num_classes=1, drop_rate=0.0, pretrained=False):\n"
        "        super().__init__()\n"
        "        self.num_classes = num_classes\n"
        "        self.fc = nn.Linear(3, num_classes)\n\n"
        "    def forward(self, x, return_aux=False):\n"
        "        logits = self.fc(x.mean(dim=(2, 3))) * float('nan')\n"
        "        return {'logits': logits} if return_aux else logits\n")
    ckpt = tmp_path / "nan_model.bin"
    torch.save({"model": {"fc.weight": torch.zeros(1, 3), "fc.bias": torch.zeros(1)},
                "config": {"model": {"name": "NanValuesDetector", "num_classes": 1}},
                "input_spec": InputSpec((16, 16), (0.5,) * 3, (0.5,) * 3).to_dict()}, ckpt)
    out = tmp_path / "r.csv"
    proc = cli(["inference.py", "-b", str(ckpt), "-i", hopper_media[1], "-d", "cpu", "--import",
                str(plugin), "--output", str(out)])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[1:] == [  # after the threshold's line, one error line
        f"error: the detector gave a non-finite probability (nan) for {hopper_media[1]}"]
    assert "prediction" not in proc.stdout and not out.exists()
