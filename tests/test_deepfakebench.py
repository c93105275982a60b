"""The DeepfakeBench layout on dataset JSON files built here in DeepfakeBench's published structure
(``{dataset: {label: {split: {video: {"label", "frames"}}}}}``, a compression level for the FF++
family), with frames copied from the demo data."""
import json
import logging
import os
import re
import shutil
import sys

import pytest
import yaml

from dataset import build_dataset
from dataset.deepfakebench import DEFAULT_LABELS, frame_path, sample_frames, sort_frames
from errors import UserError


def test_frame_sampling_is_deepfakebench_s():
    frames = [f"{i:03d}.png" for i in range(10)]
    # v1: step = total // frame_num from the first frame, the first frame_num of those
    assert sample_frames(frames, 3) == ["000.png", "003.png", "006.png"]
    assert sample_frames(frames, 4) == ["000.png", "002.png", "004.png", "006.png"]
    assert sample_frames(frames, 6) == frames[:6]  # step 1
    assert sample_frames(frames, 3, "first") == frames[:3]
    assert sample_frames(frames, 10) == frames and sample_frames(frames, 32) == frames


def test_frame_paths_under_root_and_rgb_dir():
    """Its loader: a path starting with "." is read as it is (./datasets = root here), any other
    under rgb_dir (its default ./datasets/rgb = <root>/rgb)."""
    assert frame_path("./datasets/FF/a/000.png", "/data") == os.path.join("/data", "FF", "a",
                                                                          "000.png")
    assert frame_path(".\\datasets\\FF\\a\\000.png", "/data") == os.path.join("/data", "FF", "a",
                                                                              "000.png")
    assert frame_path("/abs/000.png", "/data") == "/abs/000.png"
    assert frame_path("FF/000.png", "/data") == os.path.join("/data", "rgb", "FF", "000.png")
    assert frame_path("FF\\000.png", "/data") == os.path.join("/data", "rgb", "FF", "000.png")
    assert frame_path("datasets/FF/0.png", "/data", "/r") == os.path.join("/r", "datasets", "FF",
                                                                         "0.png")


def _frames(demo_root):
    ff = os.path.join(demo_root, "faceforensics")
    real = os.path.join(ff, "original_sequences", "youtube", "c23", "images")
    fake = os.path.join(ff, "manipulated_sequences", "Deepfakes", "c23", "images")
    pick = lambda folder: [os.path.join(folder, v, f) for v in sorted(os.listdir(folder))  # noqa: E731
                           for f in sorted(os.listdir(os.path.join(folder, v)))][:12]
    return pick(real), pick(fake)


@pytest.fixture()
def bench(tmp_path, demo_root):
    """A DeepfakeBench tree: datasets/ with the frames, dataset_json/ with FaceForensics++.json
    (forward slashes) and Celeb-DF-v2.json (backslashes, no compression level)."""
    real, fake = _frames(demo_root)
    root = tmp_path / "datasets"

    def place(files, rel):
        out = []
        for i, f in enumerate(files):
            dest = root / rel / f"{i:03d}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
            out.append(f"./datasets/{rel}/{i:03d}.png")
        return out

    def videos(label, files, prefix, n=2, backslash=False):
        vids = {}
        for v in range(n):
            paths = place(files, f"{prefix}/{v:03d}")
            if backslash:
                paths = [p.replace("/", "\\") for p in paths]
            vids[f"{v:03d}"] = {"label": label, "frames": paths}
        return vids

    ff = {"FaceForensics++": {
        "FF-real": {s: {c: videos("FF-real", real, f"FF/original/{c}/{s}")
                        for c in ("c23", "c40")} for s in ("train", "test")},
        "FF-DF": {s: {c: videos("FF-DF", fake, f"FF/Deepfakes/{c}/{s}") for c in ("c23", "c40")}
                  for s in ("train", "test")}}}
    cdf = {"Celeb-DF-v2": {
        "CelebDFv2_real": {"test": videos("CelebDFv2_real", real, "CDF/real", backslash=True)},
        "CelebDFv2_fake": {"test": videos("CelebDFv2_fake", fake, "CDF/fake", backslash=True)}}}
    folder = root / "dataset_json"  # where tools/reproduce.py --data-root deepfakebench=DIR looks
    folder.mkdir()
    (folder / "FaceForensics++.json").write_text(json.dumps(ff))
    (folder / "Celeb-DF-v2.json").write_text(json.dumps(cdf))
    assert len(real) == len(fake) == 12, (len(real), len(fake))
    return {"dataset_json_folder": str(folder), "root": str(root)}, len(real)


def test_reads_the_published_structure(bench):
    cfg, n_frames = bench
    ds = build_dataset("DeepfakeBench", {**cfg, "dataset": "FaceForensics++", "split": "train",
                                         "frame_num": 3})
    items = ds.items
    assert len(items) == 2 * 2 * 3  # two labels x two videos x three frames
    assert {it.label for it in items if it.method == "FF-real"} == {0}
    assert {it.label for it in items if it.method == "FF-DF"} == {1}
    assert {it.video for it in items} == {"FF-real_000", "FF-real_001", "FF-DF_000", "FF-DF_001"}
    assert all("/c23/train/" in it.path.replace(os.sep, "/") for it in items)
    step = n_frames // 3
    assert sorted(os.path.basename(it.path) for it in items if it.video == "FF-DF_000") == \
        [f"{i:03d}.png" for i in range(0, 3 * step, step)]
    c40 = build_dataset("DeepfakeBench", {**cfg, "dataset": "FaceForensics++", "split": "test",
                                          "compression": "c40"}).items
    assert all("/c40/test/" in it.path.replace(os.sep, "/") for it in c40)
    assert len(c40) == 2 * 2 * n_frames  # frame_num 32 >= the frames there: all of them
    # DeepfakeBench's _c40 suffix convention: the same file's c40 entries
    shutil.copy(os.path.join(cfg["dataset_json_folder"], "FaceForensics++.json"),
                os.path.join(cfg["dataset_json_folder"], "FaceForensics++_c40.json"))
    suffixed = build_dataset("DeepfakeBench", {**cfg, "dataset": "FaceForensics++_c40",
                                               "split": "test"}).items
    assert [it.path for it in suffixed] == [it.path for it in c40]
    cdf = build_dataset("DeepfakeBench", {**cfg, "dataset": "Celeb-DF-v2", "split": "test"})
    assert len(cdf.items) == 2 * 2 * n_frames and cdf[0]["image"].shape[0] == 3  # backslashes read


def test_label_dict_is_deepfakebench_s_and_overridable(bench):
    cfg, _ = bench
    assert DEFAULT_LABELS["FF-real"] == 0 and DEFAULT_LABELS["CelebDFv2_fake"] == 1
    flipped = build_dataset("DeepfakeBench", {**cfg, "dataset": "Celeb-DF-v2", "split": "test",
                                              "label_dict": {"CelebDFv2_real": 1}}).items
    assert {it.label for it in flipped} == {1}


def test_bad_inputs_are_one_line(bench, tmp_path, caplog):
    cfg, _ = bench
    folder = cfg["dataset_json_folder"]
    base = {**cfg, "split": "test"}
    with pytest.raises(UserError, match="no DFDC.json in dataset_json_folder"):
        build_dataset("DeepfakeBench", {**base, "dataset": "DFDC"})
    with pytest.raises(UserError, match="has no 'val' split"):
        build_dataset("DeepfakeBench", {**base, "dataset": "FaceForensics++", "split": "val"})
    with pytest.raises(UserError, match="has no compression 'raw'"):
        build_dataset("DeepfakeBench", {**base, "dataset": "FaceForensics++", "compression": "raw"})
    data = json.load(open(os.path.join(folder, "Celeb-DF-v2.json")))
    data["Celeb-DF-v2"]["CelebDFv2_fake"]["test"]["000"]["label"] = "CelebDFv3_fake"
    (tmp_path / "datasets" / "dataset_json" / "Odd.json").write_text(json.dumps({"Odd": data["Celeb-DF-v2"]}))
    with pytest.raises(UserError, match="label 'CelebDFv3_fake', which label_dict does not map"):
        build_dataset("DeepfakeBench", {**base, "dataset": "Odd"})
    (tmp_path / "datasets" / "dataset_json" / "Broken.json").write_text("{not json")
    with pytest.raises(UserError, match="Broken.json is not JSON"):
        build_dataset("DeepfakeBench", {**base, "dataset": "Broken"})
    with pytest.raises(UserError, match="none of the frames it names is under root .* or rgb_dir"):
        build_dataset("DeepfakeBench", {**base, "dataset": "Celeb-DF-v2",
                                        "root": str(tmp_path / "elsewhere")})
    os.remove(os.path.join(cfg["root"], "CDF", "real", "000", "000.png"))
    with caplog.at_level(logging.WARNING, logger="recce"):
        items = build_dataset("DeepfakeBench", {**base, "dataset": "Celeb-DF-v2"}).items
    assert "1 frame(s) named by Celeb-DF-v2.json are missing" in caplog.text
    assert not any(it.path.endswith(os.path.join("000", "000.png")) and "real" in it.path
                   for it in items)


@pytest.mark.parametrize("field,value,text", [
    ("label", ["CelebDFv2_fake"], "label: expected a label name (text), got ['CelebDFv2_fake']"),
    ("label", 1, "label: expected a label name (text), got 1"),
    ("label", None, "label: expected a label name (text), got None"),
    ("frames", [3, 4], "frames: expected frame paths (text), got 3"),
    ("frames", [{"path": "a.png"}], "frames: expected frame paths (text), got {'path': 'a.png'}"),
    ("frames", ["", "a.png"], "frames: expected frame paths (text), got ''"),
    ("frames", [None], "frames: expected frame paths (text), got None"),
])
def test_a_json_value_of_the_wrong_type_is_one_line(bench, tmp_path, field, value, text):
    cfg, _ = bench
    data = json.load(open(os.path.join(cfg["dataset_json_folder"], "Celeb-DF-v2.json")))
    data["Celeb-DF-v2"]["CelebDFv2_fake"]["test"]["001"][field] = value
    (tmp_path / "datasets" / "dataset_json" / "Typed.json").write_text(
        json.dumps({"Typed": data["Celeb-DF-v2"]}))
    with pytest.raises(UserError) as info:
        build_dataset("DeepfakeBench", {**cfg, "split": "test", "dataset": "Typed"})
    assert str(info.value) == (f"{os.path.join(cfg['dataset_json_folder'], 'Typed.json')}: "
                               f"Typed/CelebDFv2_fake/test: video '001': {text}")


def test_config_validation_knows_the_branch_keys(bench, tmp_path):
    from trainer.config import load_config
    cfg, _ = bench
    ds = {"train_cfg": {**cfg, "dataset": "FaceForensics++", "split": "train", "num_steps": 1,
                        "log_steps": 1, "val_steps": 1, "label_dict": {"FF-real": "zero"}}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({"model": {"name": "Recce"}, "data": {
        "name": "DeepfakeBench", "file": str(tmp_path / "ds.yml")}}))
    with pytest.raises(UserError, match="train_cfg.label_dict: expected a mapping of label names"):
        load_config(str(tmp_path / "c.yml"))


@pytest.mark.slow
def test_train_on_ff_and_test_on_celeb_df_from_the_json_files(bench, tmp_path):
    """The user's case: one dataset file pointed at the JSON folder trains on FF++ c23 and tests
    on Celeb-DF-v2 (its test split), frame and video level."""
    from trainer.config import load_config
    from trainer.evaluation_report import run_test
    from trainer.train import run
    cfg, _ = bench
    tf = [{"name": "Resize", "params": {"height": 64, "width": 64}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    ds = {"train_cfg": {**cfg, "dataset": "FaceForensics++", "split": "train", "frame_num": 4,
                        "num_steps": 2, "log_steps": 1, "val_steps": 2, "transforms": tf},
          "val_cfg": {**cfg, "dataset": "FaceForensics++", "split": "test", "frame_num": 2,
                      "transforms": tf},
          "cdf_cfg": {**cfg, "dataset": "Celeb-DF-v2", "split": "test", "frame_num": 3,
                      "transforms": tf}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce", "pretrained": False},
        "config": {"id": "dfb", "ckpt_fold": str(tmp_path / "runs"), "metric": "AUC"},
        "data": {"name": "DeepfakeBench", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "train_batch_size": 4, "val_branch": "val_cfg", "test_branch": "cdf_cfg"}}))
    conf = load_config(str(tmp_path / "c.yml"))
    result = run(conf)
    assert result["best_checkpoint"]
    metrics, _, _, n, _ = run_test(conf, result["best_checkpoint"], "cpu", str(tmp_path / "t"))
    assert n == 2 * 2 * 3 and 0 <= metrics["AUC"] <= 1 and "video_AUC" in metrics


def test_reproduce_lists_the_table_and_picks_the_recipe(tmp_path, capsys):
    import tools.reproduce as rp
    assert rp.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "deepfakebench: DeepfakeBench's table" in out and "recipes: paper, deepfakebench" in out
    args = ["--table", "deepfakebench", "--data-root", f"deepfakebench={tmp_path}", "--dry-run",
            "--out", str(tmp_path / "o")]
    assert rp.main(args + ["--recipe", "deepfakebench"]) == 0
    out = capsys.readouterr().out
    assert "config/deepfakebench/deepfakebench_recipe.yml" in out
    assert f"train_cfg.dataset_json_folder={tmp_path / 'dataset_json'}" in out
    assert rp.main(args) == 0
    assert "config/deepfakebench/paper_recipe.yml" in capsys.readouterr().out


@pytest.mark.slow
def test_reproduce_scores_each_test_set_found_beside_deepfakebench_s_row(bench, tmp_path, capsys):
    import torch

    import tools.reproduce as rp
    from model import InputSpec, Recce
    cfg, _ = bench
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    torch.manual_seed(0)
    torch.save({"model": Recce().state_dict(), "config": {"model": {"name": "Recce"}},
                "input_spec": InputSpec((48, 48)).to_dict()}, ckpts / "deepfakebench.bin")
    out = tmp_path / "reproduction"
    assert rp.main(["--table", "deepfakebench", "--data-root", f"deepfakebench={cfg['root']}",
                    "--checkpoints", str(ckpts), "--out", str(out), "--bootstrap", "50",
                    "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "row cdf_v1: not found, skipped" in printed and "row ffpp_c40: not found" in printed
    text = (out / "deepfakebench.md").read_text()
    rows = {line.split(" | ")[0].strip("| ") for line in text.splitlines() if line.startswith("| ")}
    assert {"ffpp_c23", "cdf_v2"} <= rows and "cdf_v1" not in rows
    assert "| ffpp_c23 | DeepfakeBench test_ffpp_c23 | clean | frame | AUC | 96.21 [1] |" in text
    assert "a different training recipe" in text  # DeepfakeBench's row is labelled as its own
    # another checkpoint into the same --out: other work, never answered from the old rows
    torch.save({"model": Recce().state_dict(), "config": {"model": {"name": "Recce"}},
                "input_spec": InputSpec((40, 40)).to_dict()}, ckpts / "deepfakebench.bin")
    capsys.readouterr()
    assert rp.main(["--table", "deepfakebench", "--data-root", f"deepfakebench={cfg['root']}",
                    "--checkpoints", str(ckpts), "--out", str(out), "--bootstrap", "50",
                    "--device", "cpu"]) == 2
    assert "holds rows of other work (checkpoints:" in capsys.readouterr().err
    assert (out / "deepfakebench.md").read_text() == text


def test_its_lmdb_store_reads_the_same_frames(bench, tmp_path, monkeypatch):
    """DeepfakeBench's LMDB store (<lmdb_dir>/<dataset>_lmdb, FaceForensics++_lmdb for the FF++
    family), keyed as its code keys it: the JSON path, a leading ./datasets\\ removed."""
    lmdb = pytest.importorskip("lmdb")
    import torch

    from dataset.deepfakebench import frame_path, lmdb_key
    cfg, _ = bench
    store = tmp_path / "lmdb"
    store.mkdir()
    for dataset in ("Celeb-DF-v2", "FaceForensics++"):
        data = json.load(open(os.path.join(cfg["dataset_json_folder"], f"{dataset}.json")))
        env = lmdb.open(str(store / f"{dataset}_lmdb"), map_size=1 << 28)
        with env.begin(write=True) as txn:
            for by_split in data[dataset].values():
                for split in by_split.values():
                    videos = split.get("c23", split) if dataset == "FaceForensics++" else split
                    for info in videos.values():
                        for f in info["frames"]:
                            with open(frame_path(f, cfg["root"]), "rb") as fh:
                                txn.put(lmdb_key(f).encode(), fh.read())
        env.close()
    assert lmdb_key("./datasets\\CDF\\0.png") == "CDF\\0.png"  # its rule, exactly
    assert lmdb_key("./datasets/FF/0.png") == "./datasets/FF/0.png"
    files = build_dataset("DeepfakeBench", {**cfg, "dataset": "Celeb-DF-v2", "split": "test"})
    stored = build_dataset("DeepfakeBench", {"dataset_json_folder": cfg["dataset_json_folder"],
                                             "lmdb_dir": str(store), "dataset": "Celeb-DF-v2",
                                             "split": "test"})
    assert len(stored) == len(files) and stored.items[0].path.startswith("lmdb:")
    assert all(torch.equal(stored[i]["image"], files[i]["image"]) for i in range(len(files)))
    ff = build_dataset("DeepfakeBench", {"dataset_json_folder": cfg["dataset_json_folder"],
                                         "lmdb_dir": str(store), "dataset": "FaceForensics++",
                                         "split": "train", "frame_num": 2})
    assert ff[0]["image"].shape[0] == 3  # forward-slash paths keep their ./datasets/ key
    with pytest.raises(UserError, match="no LMDB store .*empty.*Celeb-DF-v2_lmdb"):
        build_dataset("DeepfakeBench", {"dataset_json_folder": cfg["dataset_json_folder"],
                                        "lmdb_dir": str(tmp_path / "empty"),
                                        "dataset": "Celeb-DF-v2", "split": "test"})
    monkeypatch.setitem(sys.modules, "lmdb", None)  # not installed: one line
    with pytest.raises(UserError, match="needs the lmdb package: pip install lmdb"):
        build_dataset("DeepfakeBench", {"dataset_json_folder": cfg["dataset_json_folder"],
                                        "lmdb_dir": str(store), "dataset": "Celeb-DF-v2",
                                        "split": "test"})


def _png(path):
    import cv2
    import numpy as np
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))


# --------------------------------------------------------------------- video AUC: two groupings
# FF++ test split as DeepfakeBench's JSON lists it: three real videos; Deepfakes and
# NeuralTextures share the folder names 000_001 and 001_000; FaceSwap's 002 shares its name with a
# real video. Probability of each frame (fixed here, the model is not what is tested):
PROBS = {("original", "000"): [0.2, 0.4], ("original", "001"): [0.7],
         ("FaceSwap", "002"): [0.95], ("original", "002"): [0.1],
         ("Deepfakes", "000_001"): [0.9], ("NeuralTextures", "000_001"): [0.35],
         ("Deepfakes", "001_000"): [0.8], ("NeuralTextures", "001_000"): [0.5]}
LABEL_OF = {"original": "FF-real", "Deepfakes": "FF-DF", "NeuralTextures": "FF-NT",
            "FaceSwap": "FF-FS"}


@pytest.fixture()
def shared_names(tmp_path):
    root = tmp_path / "datasets"
    data = {}
    for (method, video), probs in PROBS.items():
        frames = []
        for n in range(len(probs)):
            _png(root / "FF" / method / "c23" / "frames" / video / f"{n:03d}.png")
            frames.append(f"./datasets/FF/{method}/c23/frames/{video}/{n:03d}.png")
        label = LABEL_OF[method]
        data.setdefault(label, {"test": {"c23": {}}})["test"]["c23"][video] = {
            "label": label, "frames": frames}
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "FaceForensics++.json").write_text(json.dumps({"FaceForensics++": data}))
    ds = {"test_cfg": {"dataset_json_folder": str(tmp_path / "j"), "root": str(root),
                       "dataset": "FaceForensics++", "split": "test"}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce"}, "data": {"name": "DeepfakeBench", "num_workers": 0,
                                             "file": str(tmp_path / "ds.yml")}}))
    return tmp_path


def _fixed_scores(monkeypatch):
    """test.py without a network: the checkpoint is a stand-in, each frame's probability is
    PROBS's (by its method and folder)."""
    import numpy as np

    import trainer.evaluation_report as report
    from model import InputSpec

    class Stand:
        spec = InputSpec((16, 16))

    def evaluate(model, loader, device, amp, bad):
        items = loader.dataset.items
        probs = []
        for it in items:
            parts = it.path.replace(os.sep, "/").split("/")
            probs.append(PROBS[(parts[-5], parts[-2])][int(parts[-1][:3])])
        p = np.asarray(probs)
        return {"index": np.arange(len(items)), "label": np.array([it.label for it in items]),
                "prob": p, "logit": np.log(p / (1 - p)), "loss": np.zeros(len(items)),
                "video": [it.video for it in items]}
    monkeypatch.setattr(report, "load_detector", lambda *a, **k: Stand())
    monkeypatch.setattr(report, "evaluate", evaluate)


def test_video_auc_deepfakebench_merges_same_named_folders(shared_names, monkeypatch, capsys):
    """By hand. Project videos: reals 0.3, 0.7, 0.1; fakes 0.95, 0.9, 0.35, 0.8, 0.5: fake above
    real in 3 + 3 + 2 + 3 + 2 = 13 of 15 pairs. DeepfakeBench's (folder names): 000 0.3 and 001
    0.7 real; 002 (0.95, 0.1) = 0.525 with label int(1 / 2) = 0, real; 000_001 (0.9, 0.35) = 0.625
    and 001_000 (0.8, 0.5) = 0.65 fake, each above 0.3 and 0.525, below 0.7: 4 of 6 pairs."""
    import test as test_py
    _fixed_scores(monkeypatch)
    cfg = str(shared_names / "c.yml")
    out = {}
    for rule in ("project", "deepfakebench"):
        argv = ["--config", cfg, "--ckpt", "stand-in.bin", "--device", "cpu", "--out",
                str(shared_names / rule)]
        assert test_py.main(argv + ([] if rule == "project" else ["--video_auc", rule])) == 0
        out[rule] = json.loads((shared_names / rule / "metrics.json").read_text())
    printed = capsys.readouterr().out
    assert printed.count("DeepfakeBench's videos") == 1
    assert out["project"]["video_AUC"] == pytest.approx(13 / 15)
    assert out["deepfakebench"]["video_AUC"] == pytest.approx(4 / 6)
    assert out["project"]["AUC"] == out["deepfakebench"]["AUC"]
    assert (out["project"]["video_grouping"], out["deepfakebench"]["video_grouping"]) == (
        "project", "deepfakebench")
    with pytest.raises(SystemExit):  # argparse refuses another grouping
        test_py.main(["--config", cfg, "--video_auc", "folders"])


def test_reproduce_deepfakebench_table_uses_its_grouping_and_averages(shared_names, monkeypatch):
    """tools/reproduce.py's video rows recomputed from scores.csv with the table's grouping
    (DeepfakeBench's for --table deepfakebench), and its published averages beside ours."""
    import argparse

    import test as test_py
    import tools.reproduce as rp
    _fixed_scores(monkeypatch)
    scored = shared_names / "scored"
    assert test_py.main(["--config", str(shared_names / "c.yml"), "--ckpt", "s.bin", "--device",
                         "cpu", "--out", str(scored)]) == 0
    tables = rp.load_tables()
    ns = argparse.Namespace(opt=[], protocol=None, runs=str(shared_names / "runs"),
                            checkpoints=str(shared_names), dry_run=True, gpus=1,
                            out=str(shared_names / "o"), device=None, trust=False,
                            recipe="deepfakebench", video_auc=None)
    plan = rp.Plan("deepfakebench", tables, ns, {})
    assert plan.video_auc == "deepfakebench"
    assert "--video_auc" in plan.test_command(plan.rows[0], "c.bin", "o")
    published, sources = rp.load_published()
    row = plan.rows[0]
    res = rp.row_results(plan, row, str(scored / "scores.csv"), "c.bin", published, 20)
    ours = {(r["level"], r["metric"]): float(r["ours"]) for r in res}
    assert ours[("video", "AUC")] == pytest.approx(100 * 4 / 6, abs=0.005)
    ns.video_auc = "project"
    project = rp.Plan("deepfakebench", tables, ns, {})
    assert "--video_auc" not in project.test_command(row, "c.bin", "o")
    res_p = rp.row_results(project, row, str(scored / "scores.csv"), "c.bin", published, 20)
    assert {(r["level"], r["metric"]): float(r["ours"]) for r in res_p}[("video", "AUC")] == \
        pytest.approx(100 * 13 / 15, abs=0.005)
    # the averages: published in-domain 94.22 (Top3 1), cross-domain 76.49 (Top3 2); ours only
    # with every row of one scored
    text = rp.write_results(plan, res, sources, 20)
    assert "DeepfakeBench's videos (its training/metrics/utils.py)" in text
    line = next(x for x in text.splitlines() if x.startswith("| in-domain"))
    assert "| 94.22 [1] | 1 | - | 1 of 6 |" in line
    assert "| 76.49 [1] | 2 | - | 0 of 8 |" in next(
        x for x in text.splitlines() if x.startswith("| cross-domain"))
    rows = [dict(r, row=name) for name in tables["deepfakebench"]["averages"][0]["rows"]
            for r in res]
    full = rp.write_results(plan, rows, sources, 20)
    mean = ours[("frame", "AUC")]
    assert f"| {mean:.2f} | 6 of 6 |" in full


# ------------------------------------------------------------------------- frame order, path rule
def test_frames_are_sorted_by_number_before_either_sampling(tmp_path):
    """Its loader sorts a video's frames by int(file name up to the first dot) before taking
    frame_num of them; the JSON here lists them out of order (10 before 9 before 100: numbers,
    not text), one video with backslashes."""
    order = [10, 2, 0, 7, 1, 3, 11, 5, 4, 9, 6, 8]
    root = tmp_path / "datasets"
    videos = {}
    for v, sep in (("000", "/"), ("001", "\\")):
        for n in order:
            _png(root / "FF" / v / f"{n:03d}.png")
        videos[v] = {"label": "FF-DF", "frames": [
            sep.join([".", "datasets", "FF", v, f"{n:03d}.png"]) for n in order]}
    ff = {"FF-DF": {"FF-DF": {"test": {"c23": videos}}}}
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "FF-DF.json").write_text(json.dumps(ff))
    base = {"dataset_json_folder": str(tmp_path / "j"), "root": str(root), "dataset": "FF-DF",
            "split": "test", "frame_num": 3}
    picked = lambda how: [os.path.basename(it.path) for it in build_dataset(  # noqa: E731
        "DeepfakeBench", {**base, "frame_sampling": how}).items if it.video == "FF-DF_001"]
    # sorted 0..11; even: step 12 // 3 = 4 -> 0, 4, 8; first: 0, 1, 2
    assert picked("even") == ["000.png", "004.png", "008.png"]
    assert picked("first") == ["000.png", "001.png", "002.png"]
    unsorted_even = [f"{order[i]:03d}.png" for i in (0, 4, 8)]  # what the JSON's order gave
    assert picked("even") != unsorted_even
    assert sort_frames(["a/100.png", "a/9.png", "a/10.face.png"]) == [
        "a/9.png", "a/10.face.png", "a/100.png"]
    assert sort_frames(["a/1.png", "a/01.jpg", "a/0.png"]) == ["a/0.png", "a/1.png", "a/01.jpg"]
    # the separator is the first path's (as its loader decides it): a name it cannot read is one
    # line naming the frame
    with pytest.raises(UserError, match="'a\\\\\\\\x/2.png': DeepfakeBench orders"):
        sort_frames(["a\\1.png", "a\\x/2.png"], "video 000")
    with pytest.raises(UserError, match="video 000: frame 'a/face.png'.*'face.png' has none"):
        sort_frames(["a/face.png"], "video 000")


def test_paths_without_a_dot_are_read_under_rgb_dir(tmp_path):
    root = tmp_path / "datasets"
    for v in ("000", "001"):
        _png(root / "rgb" / "CDF" / v / "0.png")
        _png(tmp_path / "elsewhere" / "CDF" / v / "0.png")
    cdf = {"Celeb-DF-v2": {
        "CelebDFv2_real": {"test": {"000": {"label": "CelebDFv2_real",
                                            "frames": ["CDF\\000\\0.png"]}}},
        "CelebDFv2_fake": {"test": {"001": {"label": "CelebDFv2_fake",
                                            "frames": ["CDF/001/0.png"]}}}}}
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "Celeb-DF-v2.json").write_text(json.dumps(cdf))
    base = {"dataset_json_folder": str(tmp_path / "j"), "root": str(root),
            "dataset": "Celeb-DF-v2", "split": "test"}
    items = build_dataset("DeepfakeBench", base).items
    assert sorted(it.path for it in items) == [str(root / "rgb" / "CDF" / v / "0.png")
                                               for v in ("000", "001")]
    moved = build_dataset("DeepfakeBench", {**base, "rgb_dir": str(tmp_path / "elsewhere")})
    assert all(it.path.startswith(str(tmp_path / "elsewhere")) for it in moved.items)
    with pytest.raises(UserError, match="none of the frames it names .* rgb_dir .*nowhere"):
        build_dataset("DeepfakeBench", {**base, "rgb_dir": str(tmp_path / "nowhere")})

# --------------------------------------------------------------------- its recipe and its loop
def test_recipe_is_recce_yaml_s(monkeypatch):
    """--recipe deepfakebench against the values of its recce.yaml (lr 0.0002, betas 0.9 /
    0.999, eps 1e-8, weight_decay 0.0005, lr_scheduler null, train_batchSize 32, resolution 256,
    frame_num 32, manualSeed 1024, use_data_augmentation false, loss_func cross_entropy), its
    train.py (range(start_epoch, nEpochs + 1): 11 passes for nEpochs 10) and its fp32 training."""
    from conftest import ROOT
    from trainer.config import branch, load_config
    from trainer.deepfakebench import TEST_DATASETS, passes
    monkeypatch.chdir(ROOT)
    cfg = load_config(os.path.join(ROOT, "config", "deepfakebench", "deepfakebench_recipe.yml"))
    c, train = cfg["config"], branch(cfg, "train")
    assert c["amp"] == "none"
    assert c["optimizer"] == {"name": "adam", "lr": 0.0002, "betas": [0.9, 0.999], "eps": 1e-8,
                              "weight_decay": 0.0005}
    assert c["scheduler"] is None and c["seed"] == 1024 and cfg["loss"]["kind"] == "cross_entropy"
    assert (cfg["loss"]["lambda_1"], cfg["loss"]["lambda_2"], cfg["loss"]["flood_level"]) == (0, 0, 0)
    # its checkpoint choice: the mean AUC over recce.yaml's test_dataset list, on those branches
    assert c["hooks"] == [{"name": "deepfakebench_selection", "branches": [
        "test_ffpp_c23", "test_ff_f2f", "test_ff_df", "test_ff_fs", "test_ff_nt"]}]
    assert {b["dataset"] for k, b in cfg["dataset"].items() if k in c["hooks"][0]["branches"]} \
        == set(TEST_DATASETS) and train["val_steps"] * 2 == 3600 * 32 // 32  # half a pass
    assert cfg["model"]["num_classes"] == 2 and cfg["model"]["pretrained"] is True
    assert cfg["data"]["train_batch_size"] == 32 and train["frame_num"] == 32
    assert [t["name"] for t in train["transforms"]] == ["Resize", "Normalize"]  # no augmentation
    assert train["transforms"][0]["params"] == {"height": 256, "width": 256, "interpolation": 2}
    assert train["transforms"][1]["params"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    per_pass = 3600 * 32 // 32  # 3,600 training videos x frame_num 32 / batch 32
    assert passes(10, 0) == 11 and train["num_steps"] == 11 * per_pass
    text = open(os.path.join(ROOT, "config", "deepfakebench", "deepfakebench_recipe.yml")).read()
    assert "never read by RecceDetector" in text  # its encoder is timm's, not that file


def test_its_evaluation_moments_average_and_selection():
    from trainer.deepfakebench import (TEST_DATASETS, BestAverage, average_test_auc,
                                       evaluation_iterations, evaluation_steps, test_set_auc)
    # 3,600 batches a pass: once at the end of epoch 0, then at 1,800 and 3,600 of each epoch
    steps = evaluation_steps(3600)
    assert len(steps) == 21 and steps[0] == (0, 3599, 3600) and steps[-1] == (10, 3599, 39600)
    assert [s for _, _, s in steps[1:]] == list(range(5400, 39601, 1800))
    # an odd count, by hand: N = 5, test_step 2 after epoch 0; the counter is e * 5 + i
    assert evaluation_iterations(0, 5) == [4]            # (i + 1) % 5 == 0
    assert evaluation_iterations(1, 5) == [0, 2, 4]      # (5 + i + 1) % 2 == 0
    assert evaluation_iterations(2, 5) == [1, 3]         # (10 + i + 1) % 2 == 0
    with pytest.raises(UserError, match="test_step would be 0"):
        evaluation_iterations(1, 1)
    # the average over its test_dataset list, and the first strictly best moment kept
    assert TEST_DATASETS == ("FaceForensics++", "FF-F2F", "FF-DF", "FF-FS", "FF-NT")
    aucs = {"FaceForensics++": 0.9, "FF-F2F": 0.8, "FF-DF": 1.0, "FF-FS": 0.7, "FF-NT": 0.6,
            "Celeb-DF-v2": 0.1}
    assert average_test_auc(aucs) == pytest.approx(4.0 / 5)
    with pytest.raises(UserError, match="no AUC for FF-NT"):
        average_test_auc({k: v for k, v in aucs.items() if k != "FF-NT"})
    best = BestAverage()
    offers = [(0.7, "a"), (0.8, "b"), (0.8, "c"), (float("nan"), "d"), (0.75, "e")]
    assert [best.offer(v, m) for v, m in offers] == [True, True, False, False, False]
    assert best.moment == "b" and best.best == 0.8
    assert test_set_auc([0, 2, 1, 0], [0.1, 0.9, 0.8, 0.2]) == 1.0  # label 2 counts as fake


def test_reproduce_says_the_passes_and_precision_of_each_recipe(tmp_path):
    """The data check prints each training run's length in passes over the data it finds and its
    precision: DeepfakeBench's recipe 11 passes of 3,600 steps in fp32 (here 1 step a pass)."""
    import argparse

    import tools.reproduce as rp
    root = tmp_path / "DeepfakeBench"
    data = {}
    for label in ("FF-real", "FF-DF"):
        for split in ("train", "val", "test"):
            videos = {}
            for v in ("000", "001"):
                frames = []
                for n in range(8):  # 2 labels x 2 videos x 8 frames = 32 a split: 1 batch
                    _png(root / label / split / v / f"{n}.png")
                    frames.append(f"./datasets/{label}/{split}/{v}/{n}.png")
                videos[v] = {"label": label, "frames": frames}
            data.setdefault(label, {})[split] = {"c23": videos}
    (root / "dataset_json").mkdir()
    (root / "dataset_json" / "FaceForensics++.json").write_text(
        json.dumps({"FaceForensics++": data}))
    lines = {}
    for recipe in ("deepfakebench", "paper"):
        ns = argparse.Namespace(opt=[], protocol=None, runs=str(tmp_path / "runs"),
                                checkpoints=None, dry_run=False, gpus=1, out=str(tmp_path / "o"),
                                device=None, trust=False, recipe=recipe, video_auc=None)
        plan = rp.Plan("deepfakebench", rp.load_tables(), ns,
                       rp.parse_data_roots([f"deepfakebench={root}"]))
        lines[recipe] = next(x for x in rp.check_data(plan) if "train_cfg" in x)
    assert "1 iterations per epoch" in lines["deepfakebench"]
    assert "39,600 steps = 39600.00 passes here, fp32" in lines["deepfakebench"]
    assert "36,000 steps = 36000.00 passes here, fp16" in lines["paper"]


@pytest.mark.slow
def test_deepfakebench_selection_chooses_on_its_test_sets_at_its_moments(bench, tmp_path):
    """The hook of --recipe deepfakebench: 8 training frames in batches of 2 are 4 batches a
    pass; over 2 passes DeepfakeBench evaluates after steps 4 (end of the first pass), 6 and 8
    (middle and end of the second): validations at those steps choose by the mean test AUC, the
    one at step 2 chooses nothing, and a mean that is not strictly higher keeps the earlier."""
    from trainer.config import load_config
    from trainer.train import Trainer
    cfg, _ = bench
    tf = [{"name": "Resize", "params": {"height": 64, "width": 64}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    ds = {"train_cfg": {**cfg, "dataset": "FaceForensics++", "split": "train", "frame_num": 2,
                        "num_steps": 8, "log_steps": 2, "val_steps": 2, "transforms": tf},
          "val_cfg": {**cfg, "dataset": "FaceForensics++", "split": "test", "frame_num": 1,
                      "transforms": tf},
          "t_ff": {**cfg, "dataset": "FaceForensics++", "split": "test", "frame_num": 2,
                   "transforms": tf},
          "t_cdf": {**cfg, "dataset": "Celeb-DF-v2", "split": "test", "frame_num": 2,
                    "transforms": tf}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    hook = {"name": "deepfakebench_selection", "branches": ["t_ff", "t_cdf"]}
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce", "pretrained": False},
        "config": {"id": "dfb", "ckpt_fold": str(tmp_path / "runs"), "metric": "AUC",
                   "hooks": [hook], "keep_best": None},
        "data": {"name": "DeepfakeBench", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "train_batch_size": 2, "val_branch": "val_cfg", "test_branch": "t_cdf"}}))
    trainer = Trainer(load_config(str(tmp_path / "c.yml")))
    assert len(trainer.train_loader) == 4
    trainer.fit()
    trainer.close()
    choice = trainer.hooks[0]
    assert choice.moments == {4, 6, 8}
    log = (tmp_path / "runs" / "Recce" / "dfb" / "train_rank0.log").read_text()
    assert "checkpoint choice: DeepfakeBench's, on test data: the mean frame AUC over t_ff, t_cdf" \
        in log and "8 steps = 2.00 passes of 4 batches, fp32" in log
    means = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        r"step (\d+) test AUC \(DeepfakeBench's choice, on test data\): .* mean ([0-9.]+)", log)}
    assert set(means) == {4, 6, 8}
    kept, best = [], -1.0
    for step in (4, 6, 8):  # by hand: the first strictly higher mean
        if means[step] > best:
            best = means[step]
            kept.append(step)
    saved = sorted(int(f[len("best_model_"):-4]) for f in os.listdir(
        tmp_path / "runs" / "Recce" / "dfb") if f.startswith("best_model_"))
    assert saved == kept and trainer.best.best_step == kept[-1] == choice.best.moment
    assert trainer.best.best_metric == pytest.approx(means[kept[-1]], abs=1e-4)
    # a moment that is no validation step is refused before any training
    ds["train_cfg"]["val_steps"] = 3
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text((tmp_path / "c.yml").read_text().replace("id: dfb", "id: dfb2"))
    again = Trainer(load_config(str(tmp_path / "c.yml")))
    with pytest.raises(UserError, match=r"evaluates after step\(s\) 4, which are not validation "
                                        r"steps: set train_cfg.val_steps to 2"):
        again.fit()
    again.close()
