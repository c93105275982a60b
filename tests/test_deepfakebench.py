"""The DeepfakeBench layout on dataset JSON files built here in DeepfakeBench's published structure
(``{dataset: {label: {split: {video: {"label", "frames"}}}}}``, a compression level for the FF++
family), with frames copied from the demo data."""
import json
import logging
import os
import shutil
import sys

import pytest
import yaml

from dataset import build_dataset
from dataset.deepfakebench import DEFAULT_LABELS, frame_path, sample_frames
from errors import UserError


def test_frame_sampling_is_deepfakebench_s():
    frames = [f"{i:03d}.png" for i in range(10)]
    # v1: step = total // frame_num from the first frame, the first frame_num of those
    assert sample_frames(frames, 3) == ["000.png", "003.png", "006.png"]
    assert sample_frames(frames, 4) == ["000.png", "002.png", "004.png", "006.png"]
    assert sample_frames(frames, 6) == frames[:6]  # step 1
    assert sample_frames(frames, 3, "first") == frames[:3]
    assert sample_frames(frames, 10) == frames and sample_frames(frames, 32) == frames


def test_frame_paths_under_root():
    assert frame_path("./datasets/FF/a/000.png", "/data") == os.path.join("/data", "FF", "a",
                                                                          "000.png")
    assert frame_path(".\\datasets\\FF\\a\\000.png", "/data") == os.path.join("/data", "FF", "a",
                                                                              "000.png")
    assert frame_path("/abs/000.png", "/data") == "/abs/000.png"
    assert frame_path("FF/000.png", "/data") == os.path.join("/data", "FF", "000.png")


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
    with pytest.raises(UserError, match="none of the frames it names is under root"):
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
    from trainer.testing import run_test
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
