"""dataset/deepfakebench.py: the DeepfakeBench layout on dataset JSON files built here in
DeepfakeBench's published structure (``{dataset: {label: {split: {video: {"label",
"frames"}}}}}``, a compression level for the FF++ family), with frames copied from the demo
data; its frame order and paths, its LMDB store, and training and testing on it."""
import json
import logging
import os
import shutil
import sys

import pytest
import yaml

from dataset import build_dataset
from dataset.deepfakebench import DEFAULT_LABELS, frame_path, sample_frames, sort_frames
from deepfakebench_cases import png
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


def test_reads_the_published_structure(deepfakebench_json):
    cfg, n_frames = deepfakebench_json
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


def test_label_dict_is_deepfakebench_s_and_overridable(deepfakebench_json):
    cfg, _ = deepfakebench_json
    assert DEFAULT_LABELS["FF-real"] == 0 and DEFAULT_LABELS["CelebDFv2_fake"] == 1
    flipped = build_dataset("DeepfakeBench", {**cfg, "dataset": "Celeb-DF-v2", "split": "test",
                                              "label_dict": {"CelebDFv2_real": 1}}).items
    assert {it.label for it in flipped} == {1}


def test_bad_inputs_are_one_line(deepfakebench_json, tmp_path, caplog):
    cfg, _ = deepfakebench_json
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
    (tmp_path / "datasets" / "dataset_json" / "Odd.json").write_text(
        json.dumps({"Odd": data["Celeb-DF-v2"]}))
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
def test_a_json_value_of_the_wrong_type_is_one_line(deepfakebench_json, tmp_path, field, value,
                                                    text):
    cfg, _ = deepfakebench_json
    data = json.load(open(os.path.join(cfg["dataset_json_folder"], "Celeb-DF-v2.json")))
    data["Celeb-DF-v2"]["CelebDFv2_fake"]["test"]["001"][field] = value
    (tmp_path / "datasets" / "dataset_json" / "Typed.json").write_text(
        json.dumps({"Typed": data["Celeb-DF-v2"]}))
    with pytest.raises(UserError) as info:
        build_dataset("DeepfakeBench", {**cfg, "split": "test", "dataset": "Typed"})
    assert str(info.value) == (f"{os.path.join(cfg['dataset_json_folder'], 'Typed.json')}: "
                               f"Typed/CelebDFv2_fake/test: video '001': {text}")


def test_config_validation_knows_the_branch_keys(deepfakebench_json, tmp_path):
    from trainer.config import load_config
    cfg, _ = deepfakebench_json
    ds = {"train_cfg": {**cfg, "dataset": "FaceForensics++", "split": "train", "num_steps": 1,
                        "log_steps": 1, "val_steps": 1, "label_dict": {"FF-real": "zero"}}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({"model": {"name": "Recce"}, "data": {
        "name": "DeepfakeBench", "file": str(tmp_path / "ds.yml")}}))
    with pytest.raises(UserError, match="train_cfg.label_dict: expected a mapping of label names"):
        load_config(str(tmp_path / "c.yml"))


@pytest.mark.slow
def test_train_on_ff_and_test_on_celeb_df_from_the_json_files(deepfakebench_json, tmp_path):
    """The user's case: one dataset file pointed at the JSON folder trains on FF++ c23 and tests
    on Celeb-DF-v2 (its test split), frame and video level."""
    from trainer.config import load_config
    from trainer.evaluation_report import run_test
    from trainer.train import run
    cfg, _ = deepfakebench_json
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


def test_its_lmdb_store_reads_the_same_frames(deepfakebench_json, tmp_path, monkeypatch):
    """DeepfakeBench's LMDB store (<lmdb_dir>/<dataset>_lmdb, FaceForensics++_lmdb for the FF++
    family), keyed as its code keys it: the JSON path, a leading ./datasets\\ removed."""
    lmdb = pytest.importorskip("lmdb")
    import torch

    from dataset.deepfakebench import frame_path, lmdb_key
    cfg, _ = deepfakebench_json
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
            png(root / "FF" / v / f"{n:03d}.png")
        videos[v] = {"label": "FF-DF", "frames": [
            sep.join([".", "datasets", "FF", v, f"{n:03d}.png"]) for n in order]}
    ff = {"FF-DF": {"FF-DF": {"test": {"c23": videos}}}}
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "FF-DF.json").write_text(json.dumps(ff))
    base = {"dataset_json_folder": str(tmp_path / "j"), "root": str(root), "dataset": "FF-DF",
            "split": "test", "frame_num": 3}

    def picked(how):
        items = build_dataset("DeepfakeBench", {**base, "frame_sampling": how}).items
        return [os.path.basename(it.path) for it in items if it.video == "FF-DF_001"]

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
        png(root / "rgb" / "CDF" / v / "0.png")
        png(tmp_path / "elsewhere" / "CDF" / v / "0.png")
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
