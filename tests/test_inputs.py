"""One clear line for every bad input: configs, index files, command lines; and what the README
promises about inputs (names stay names, EXIF orientation, exact scores)."""
import csv
import json
import os
import pickle

import cv2
import numpy as np
import pytest
import torch
import yaml

from errors import UserError
from helpers import TF, image_list_tree, write_config
from trainer.config import load_config


@pytest.fixture()
def cfg_path(tmp_path, demo_root):
    return write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"))


# ---------------------------------------------------------------- configuration values
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
def test_bad_model_config_values_name_key_and_value(cfg_path, opt, text):
    with pytest.raises(UserError, match=text):
        load_config(cfg_path, [opt])


@pytest.mark.parametrize("opt,text", [
    ("train_cfg.val_steps=0", "train_cfg.val_steps: expected an integer of at least 1, got 0"),
    ("train_cfg.log_steps=-5", "train_cfg.log_steps: expected an integer of at least 1, got -5"),
    ("train_cfg.num_steps=ten", "train_cfg.num_steps: expected an integer"),
    ("trian_cfg.num_steps=1", "has no branch 'trian_cfg'"),
    ("train_cfg.demo=1", "train_cfg.demo: expected true or false"),
])
def test_bad_dataset_values(cfg_path, opt, text):
    with pytest.raises(UserError, match=text):
        load_config(cfg_path, [], [opt])


@pytest.mark.parametrize("value", ["0012", "yes", "12:30", "1e3", "2024-05-01"])
def test_names_stay_names(cfg_path, value):
    cfg = load_config(cfg_path, [f"config.id={value}"])
    assert cfg["config"]["id"] == value


def test_names_written_in_a_file_are_text(tmp_path, cfg_path):
    raw = yaml.safe_load(open(cfg_path))
    raw["config"]["id"] = "2024-05-01"
    text = yaml.safe_dump(raw).replace("'2024-05-01'", "2024-05-01")  # unquoted: YAML reads a date
    (tmp_path / "dated.yml").write_text(text)
    assert load_config(str(tmp_path / "dated.yml"))["config"]["id"] == "2024-05-01"


def test_yaml_that_is_not_utf8(tmp_path, cfg_path):
    (tmp_path / "latin.yml").write_bytes(open(cfg_path, "rb").read() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="latin.yml is not UTF-8 text"):
        load_config(str(tmp_path / "latin.yml"))
    raw = yaml.safe_load(open(cfg_path))
    ds = raw["data"]["file"]
    with open(ds, "ab") as fh:
        fh.write("# caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="ds.yml is not UTF-8 text"):
        load_config(cfg_path)


def test_entry_points_print_one_line_before_building_data(cfg_path, capsys):
    import test as test_py
    import train
    for main in (train.main, test_py.main):
        args = ["--config", cfg_path, "--opt", "config.optimizer.lr=abc"]
        assert main(args + (["--ckpt", "x.bin"] if main is test_py.main else [])) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: config.optimizer.lr: expected a number, got 'abc'")
        assert err.count("\n") == 1


def test_pretrained_corrupt_or_foreign_file(tmp_path):
    from model import build_detector
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


# ---------------------------------------------------------------- index files and layouts
def _csv_index(tmp_path, demo_root, text, name="index.csv", encoding="utf-8"):
    root = image_list_tree(demo_root, tmp_path / "d", videos=1, frames=1)
    real = os.path.relpath(os.path.join(root, "real", "v0", os.listdir(f"{root}/real/v0")[0]),
                           tmp_path)
    (tmp_path / name).write_bytes(text.format(real=real).encode(encoding))
    return str(tmp_path / name)


@pytest.mark.parametrize("text,encoding,match", [
    ("path,label\n{real},0\ncaf\xe9.png,1\n", "latin-1", "index.csv is not UTF-8 text"),
    ("path,label\n{real},0\n{real},0,extra\n", "utf-8", r"index.csv:3: 3 fields, the header has 2"),
    ("path,label\n{real},0\n,1\n", "utf-8", r"index.csv:3: the path is empty"),
    ("path,label\n{real},2\n", "utf-8", r"index.csv:2 has label '2'"),
    ("name,y\n{real},0\n", "utf-8", "needs a header with 'path' and 'label'"),
])
def test_bad_csv_index_names_file_and_line(tmp_path, demo_root, text, encoding, match):
    from dataset import build_dataset
    path = _csv_index(tmp_path, demo_root, text, encoding=encoding)
    with pytest.raises(UserError, match=match):
        build_dataset("ImageList", {"index": path, "transforms": TF})


def test_csv_with_byte_order_mark_is_read(tmp_path, demo_root):
    from dataset import build_dataset
    path = _csv_index(tmp_path, demo_root, "\ufeffpath,label\n{real},0\n", encoding="utf-8")
    assert build_dataset("ImageList", {"index": path, "transforms": TF}).labels == [0]


@pytest.mark.parametrize("line,match", [
    ('{{"path": "{real}", "label": 0.9}}', r"index.jsonl:1 has label 0.9"),
    ('{{"path": null, "label": 1}}', r"index.jsonl:1: the path is empty or not text"),
    ('["{real}", 0]', r"index.jsonl:1: expected a JSON object"),
    ('{{"path": "{real}", "label": 1', r"index.jsonl:1: not a JSON line"),
])
def test_bad_jsonl_index(tmp_path, demo_root, line, match):
    from dataset import build_dataset
    path = _csv_index(tmp_path, demo_root, line + "\n", name="index.jsonl")
    with pytest.raises(UserError, match=match):
        build_dataset("ImageList", {"index": path, "transforms": TF})


def test_bad_ff_pickle_dfdc_metadata_and_celeb_df_list(tmp_path):
    from dataset import build_dataset
    (tmp_path / "ff").mkdir()
    torch.save([("a.png", 0), ("b.png", 2)], tmp_path / "ff" / "train_c23.pickle")
    with pytest.raises(UserError, match=r"train_c23.pickle: entry 1 is \('b.png', 2\)"):
        build_dataset("FaceForensics", {"root": str(tmp_path / "ff"), "split": "train"})
    with open(tmp_path / "ff" / "train_c23.pickle", "wb") as fh:
        pickle.dump(["a.png", "b.png"], fh)
    with pytest.raises(UserError, match="entry 0 is 'a.png', expected a \\(path, label"):
        build_dataset("FaceForensics", {"root": str(tmp_path / "ff"), "split": "train"})
    part = tmp_path / "dfdc" / "dfdc_train_part_0"
    part.mkdir(parents=True)
    (part / "metadata.json").write_text("{not json")
    with pytest.raises(UserError, match="metadata.json is not JSON"):
        build_dataset("DFDC", {"root": str(tmp_path / "dfdc"), "split": "train"})
    (part / "metadata.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a mapping of video names"):
        build_dataset("DFDC", {"root": str(tmp_path / "dfdc"), "split": "train"})
    cd = tmp_path / "cd"
    cd.mkdir()
    (cd / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0.mp4\nCeleb-real/id1.mp4\n")
    with pytest.raises(UserError, match=r"List_of_testing_videos.txt:2: expected '<label>"):
        build_dataset("CelebDF", {"root": str(cd), "split": "test"})
    (cd / "List_of_testing_videos.txt").write_bytes("1 Celeb-real/caf\xe9.mp4\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"List_of_testing_videos.txt is not UTF-8 text"):
        build_dataset("CelebDF", {"root": str(cd), "split": "test"})
    (tmp_path / "dfdc" / "test").mkdir()
    (tmp_path / "dfdc" / "test" / "labels.csv").write_text("filename,label\nc.mp4,yes\n")
    with pytest.raises(UserError, match=r"labels.csv:2: expected '<video>.mp4,<0\|1>'"):
        build_dataset("DFDC", {"root": str(tmp_path / "dfdc"), "split": "test"})


def test_random_crop_larger_than_the_image_is_a_bad_image(tmp_path, demo_root):
    from dataset import build_dataset
    root = image_list_tree(demo_root, tmp_path / "d", videos=1, frames=1)
    ds = build_dataset("ImageList", {"root": root, "transforms": [
        {"name": "RandomCrop", "params": {"height": 500, "width": 500}}]})
    sample = ds[0]
    assert "bad" in sample and "cannot transform image" in sample["reason"]


def test_symlinked_folders_followed_and_loops_not(tmp_path, demo_root):
    from dataset import build_dataset
    from dataset.wild_deepfake import build_wilddeepfake
    src = image_list_tree(demo_root, tmp_path / "src", videos=1, frames=3)
    root = tmp_path / "il"
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir()
    os.symlink(os.path.join(src, "real", "v0"), root / "real" / "linked")
    os.symlink(os.path.join(src, "fake", "v0"), root / "fake" / "linked")
    os.symlink(root / "fake", root / "fake" / "loop")  # a loop: fake/loop/loop/...
    ds = build_dataset("ImageList", {"root": str(root), "transforms": TF})
    assert sorted(ds.labels) == [0, 0, 0, 1, 1, 1]
    wd = tmp_path / "wd"
    for split in ("train", "test"):
        (wd / split / "real").mkdir(parents=True)
        (wd / split / "fake").mkdir(parents=True)
        os.symlink(os.path.join(src, "real", "v0"), wd / split / "real" / "v0")
        os.symlink(wd / split / "real", wd / split / "real" / "loop")
    counts = build_wilddeepfake(str(wd))
    assert counts["train/real"] == 3 and counts["train/fake"] == 0


# ---------------------------------------------------------------- command lines
@pytest.fixture(scope="module")
def nan_ckpt(tmp_path_factory):
    from model import Recce
    state = Recce().state_dict()
    state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    path = tmp_path_factory.mktemp("nan") / "nan.bin"
    torch.save({"model": state}, path)
    return str(path)


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory):
    from model import Recce
    path = tmp_path_factory.mktemp("good") / "good.bin"
    torch.save({"model": Recce().state_dict()}, path)
    return str(path)


def test_inference_bad_options_checked_before_the_work(tmp_path, good_ckpt, nan_ckpt, demo_root,
                                                      capsys):
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
            assert inference.main(["-b", good_ckpt, "--video", str(tmp_path), "--all_frames",
                                   "--frames", "3", "-d", "cpu"]) == 2
            assert "each choose the frames: give one" in capsys.readouterr().err
            continue
        assert inference.main(["-b", good_ckpt, "-f", folder, "-d", "cpu"] + args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        import re
        assert re.search(text, err), err
    assert inference.main(["-b", nan_ckpt, "-f", folder, "-d", "cpu", "-s", "32"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "hold NaN or infinite values" in err


def test_export_bad_options_and_nan_weights(tmp_path, good_ckpt, nan_ckpt, capsys):
    from tools.export import main
    for args, text in [(["--bin", good_ckpt, "--out", str(tmp_path / "no" / "m.onnx")], "does not exist"),
                       (["--bin", good_ckpt, "--out", str(tmp_path / "m.pt2"), "--size", "3",
                         "--format", "torch.export"], "--size 3: the model needs inputs of at least 7"),
                       (["--bin", nan_ckpt, "--out", str(tmp_path / "m.pt2"), "--size", "32",
                         "--format", "torch.export"], "NaN or infinite")] + [
            # one bound for every size: refused before the checkpoint is read, never a default
            (["--bin", str(tmp_path / "missing.bin"), "--out", str(tmp_path / "m.pt2"),
              "--size", size], f"--size: expected a size in pixels from 1 to 2048, got {size}")
            for size in ("0", "-3", "2049", "100000")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1
    assert not (tmp_path / "m.pt2").exists()


def test_robustness_bad_options_are_one_line_and_write_nothing(tmp_path, cfg_path, good_ckpt,
                                                               capsys):
    from tools.robustness import main
    (tmp_path / "afile").write_text("the user's")
    (tmp_path / "videos.csv").write_text("path,label\n")
    base = ["--config", cfg_path, "--ckpt", good_ckpt, "--device", "cpu"]
    frames = ["--protocol", "frames", "--videos", str(tmp_path / "videos.csv")]
    before = sorted(os.listdir(tmp_path))
    for args, text in [(["--out", str(tmp_path / "afile")], "--out {}: is a file, expected a "
                                                            "folder"),
                       (frames + ["--margin", "inf"], "--margin: expected a number above 0 "
                                                      "and at most 10 (1.3 is usual), got inf"),
                       (frames + ["--margin", "nan"], "--margin: expected a number above 0 "
                                                      "and at most 10 (1.3 is usual), got nan"),
                       (frames + ["--margin", "0"], "--margin: expected a number above 0 "
                                                    "and at most 10 (1.3 is usual), got 0.0"),
                       (frames + ["--frames", "0"], "--frames: expected a number of frames from "
                                                    "1 to 10000000, got 0")]:
        assert main(base + args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"error: {text.format(tmp_path / 'afile')}\n"
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "afile").read_text() == "the user's"


def test_test_py_output_checks_nan_weights_and_one_class(tmp_path, demo_root, good_ckpt, nan_ckpt,
                                                        capsys):
    import shutil

    import test as test_py
    root = image_list_tree(demo_root, tmp_path / "d")
    path = write_config(tmp_path, root, data={"test_branch": "val_cfg"})
    (tmp_path / "afile").write_text("x")
    assert test_py.main(["--config", path, "--ckpt", good_ckpt, "--device", "cpu",
                         "--out", str(tmp_path / "afile")]) == 2
    assert "is a file, expected a folder" in capsys.readouterr().err
    assert test_py.main(["--config", path, "--ckpt", nan_ckpt, "--device", "cpu",
                         "--out", str(tmp_path / "o")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    shutil.rmtree(os.path.join(root, "fake"))
    os.makedirs(os.path.join(root, "fake"))
    assert test_py.main(["--config", path, "--ckpt", good_ckpt, "--device", "cpu",
                         "--out", str(tmp_path / "one")]) == 0
    out = capsys.readouterr().out
    assert "written to" in out and out.strip().endswith("metrics.json, scores.csv")
    assert sorted(os.listdir(tmp_path / "one")) == ["metrics.json", "scores.csv"]


# ---------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_as_cv2_imread_does(tmp_path, orientation):
    from PIL import Image

    from dataset import read_rgb
    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)  # a red block in one corner, a green one in another
    rgb[20:, 35:] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(rgb).save(path, quality=100, exif=exif)
    expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # what the original saw
    got = read_rgb(str(path))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 2
    if orientation in (5, 6, 7, 8):
        assert got.shape[:2] == (50, 30)


# ---------------------------------------------------------------- scores recompute exactly
@pytest.mark.slow
def test_metrics_recompute_exactly_from_scores_csv(tmp_path, demo_root, good_ckpt):
    """Frame, video and per-method metrics from scores.csv alone, with scikit-learn directly."""
    from sklearn.metrics import roc_auc_score

    import test as test_py
    ds = {"test_cfg": {"root": os.path.join(demo_root, "faceforensics"), "split": "test",
                       "transforms": TF}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce"},
        "data": {"name": "FaceForensics", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "test_batch_size": 128}}))
    assert test_py.main(["--config", str(tmp_path / "c.yml"), "--ckpt", good_ckpt,
                         "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "o" / "scores.csv")))
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["raw_probability"]) for r in rows])  # the metrics' own, the logits'
    z = np.array([float(r["logit"]) for r in rows])
    assert np.allclose(1 / (1 + np.exp(-z)), p, atol=1e-6)
    assert roc_auc_score(y, p) == metrics["AUC"]
    assert float(((p >= 0.5) == y).mean()) == metrics["ACC"]
    videos = {}
    for r, prob in zip(rows, p):
        videos.setdefault(r["video"], [int(r["label"]), []])[1].append(prob)
    vy = [v[0] for v in videos.values()]
    vp = [float(np.mean(v[1])) for v in videos.values()]
    assert roc_auc_score(vy, vp) == metrics["video_AUC"]
    methods = np.array([r["method"] for r in rows])
    keep = (methods == "FaceSwap") | (y == 0)
    assert roc_auc_score(y[keep], p[keep]) == metrics["FaceSwap_AUC"]
