"""Reproducing the paper: protocols, held-out validation, paper configs, FF++ c0, WildDeepfake
archives, DFDC labels, the bootstrap interval and tools/reproduce.py end to end on the demo."""
import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time

import cv2
import numpy as np
import pytest
import yaml

from dataset import build_dataset
from deepfakebench_cases import fixed_scores, png
from errors import UserError
from helpers import ROOT, forked_runner
from trainer.config import load_config
from trainer.data import holdout_of
from trainer.metrics import bootstrap_interval

NORM = [{"name": "Resize", "params": {"height": 16, "width": 16}},
        {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]


def _img(path, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (20, 20, 3), np.uint8))


# ------------------------------------------------------------------------ protocol and holdout
def _configs(tmp_path, data=None, config=None, branches=("train_cfg", "val_cfg", "test_cfg")):
    ds = {b: {"root": str(tmp_path / "d"), "split": "train" if b != "test_cfg" else "test",
              "transforms": NORM} for b in branches}
    ds.setdefault("train_cfg", {}).update(log_steps=1, val_steps=1, num_steps=1)
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    cfg = {"model": {"name": "Recce", "pretrained": False}, "config": config or {},
           "data": {"name": "CelebDF", "file": str(tmp_path / "ds.yml"), **(data or {})}}
    (tmp_path / "c.yml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "c.yml")


def test_protocol_picks_the_selection_branch(tmp_path):
    assert load_config(_configs(tmp_path, config={"protocol": "original"}))["data"][
        "val_branch"] == "test_cfg"
    assert load_config(_configs(tmp_path, config={"protocol": "clean"}))["data"][
        "val_branch"] == "val_cfg"
    # no protocol: data.val_branch as given (existing configs keep working)
    assert load_config(_configs(tmp_path, data={"val_branch": "val_cfg"}))["data"][
        "val_branch"] == "val_cfg"
    with pytest.raises(UserError, match="contradicts"):
        load_config(_configs(tmp_path, config={"protocol": "original"},
                             data={"val_branch": "val_cfg"}))
    with pytest.raises(UserError, match="must not be the test branch"):
        load_config(_configs(tmp_path, config={"protocol": "clean"},
                             data={"val_branch": "test_cfg"}))
    with pytest.raises(UserError, match="has no branch 'val_cfg'"):
        load_config(_configs(tmp_path, config={"protocol": "clean"},
                             branches=("train_cfg", "test_cfg")))
    with pytest.raises(UserError, match="config.protocol"):
        load_config(_configs(tmp_path, config={"protocol": "paper"}))


def test_holdout_splits_videos_and_training_leaves_them_out(tmp_path):
    root = tmp_path / "img"
    for v in range(40):
        for f in range(2):
            _img(root / ("real" if v % 2 else "fake") / f"v{v}" / f"{f}.png", v)
    base = {"root": str(root), "transforms": NORM}
    everything = build_dataset("ImageList", base)
    held = build_dataset("ImageList", {**base, "holdout": 0.25})
    rest = build_dataset("ImageList", base, exclude_holdout=0.25)

    def videos(ds):
        return {it.video for it in ds.items}

    assert videos(held) and videos(rest)
    assert videos(held) & videos(rest) == set()
    assert videos(held) | videos(rest) == videos(everything)
    assert len(held) + len(rest) == len(everything)  # whole videos on one side
    assert 2 <= len(videos(held)) <= 18  # about a quarter of 40
    # the same videos on every call and seed
    assert videos(build_dataset("ImageList", {**base, "holdout": 0.25}, seed=7)) == videos(held)
    # training excludes them only when validation holds out of the same split
    train = {"root": "r", "split": "train"}
    assert holdout_of(train, {"root": "r", "split": "train", "holdout": 0.1}) == 0.1
    assert holdout_of(train, {"root": "r", "split": "test", "holdout": 0.1}) == 0.0
    assert holdout_of(train, {"root": "other", "split": "train", "holdout": 0.1}) == 0.0
    assert holdout_of(train, {"root": "r", "split": "val"}) == 0.0


# ---------------------------------------------------------------------------------- paper configs
PAPER = os.path.join(ROOT, "config", "paper")


def test_every_paper_setting_has_a_config_that_loads(monkeypatch):
    monkeypatch.chdir(ROOT)
    names = sorted(f for f in os.listdir(PAPER) if f.endswith(".yml")
                   and f not in ("tables.yml", "published.yml"))
    expected = {"ffpp_c23", "ffpp_c40", "celeb_df", "wilddeepfake", "dfdc"} | {
        f"ffpp_{c}_{m}" for c in ("c23", "c40")
        for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")} | {
        "sbi_recce", "sbi_xception"}  # trained on real faces alone (self-blended images)
    assert {n[:-4] for n in names} == expected
    ids = set()
    for name in names:
        for protocol in ("original", "clean"):
            cfg = load_config(os.path.join(PAPER, name), [f"config.protocol={protocol}"])
            c, train = cfg["config"], cfg["dataset"]["train_cfg"]
            assert cfg["model"]["pretrained"] is True and c["optimizer"]["lr"] == 0.0002
            assert c["scheduler"]["name"] == "StepLR"
            size = train["transforms"][0]["params"]["height"]
            if name.startswith("wilddeepfake"):
                assert (size, c["scheduler"]["step_size"], c["scheduler"]["gamma"],
                        train["num_steps"], train["val_steps"]) == (224, 3000, 0.9, 40000, 200)
            else:
                assert size == 299 and c["scheduler"]["gamma"] == 0.5
            cfg["config"]["id"] not in ids or pytest.fail(f"{name}: run id collides")
        ids.add(cfg["config"]["id"])
        text = open(os.path.join(PAPER, name)).read()
        # x0.5 every 10 epochs of the official training split's videos (360 pairs: 720 originals
        # and 720 per method) at the 20 frames per video the configs assume
        if name.startswith("ffpp"):
            videos = 3600 if name.count("_") == 1 else 1440
            assert c["scheduler"]["step_size"] == 10 * math.ceil(videos * 20 / 32)
            assert "3,600 videos" in text or "1,440 videos" in text
            assert "7,200" not in text and "1,440 original" not in text  # the old miscount
            assert f"{c['scheduler']['step_size']:,}" in text  # the computation is in the comment
            assert train["num_steps"] == 90000
    assert load_config(os.path.join(PAPER, "ffpp_c23.yml"))["config"]["scheduler"][
        "step_size"] == 22500  # = the original's FF++ template
    assert load_config(os.path.join(PAPER, "celeb_df.yml"))["dataset"]["train_cfg"][
        "num_steps"] == 92000
    assert load_config(os.path.join(PAPER, "celeb_df.yml"))["config"]["scheduler"][
        "step_size"] == 10 * math.ceil(2 * 712 * 20 / 32)  # balanced: 712 training reals
    assert load_config(os.path.join(PAPER, "dfdc.yml"))["dataset"]["train_cfg"][
        "num_steps"] == 100000


def test_reproduce_reads_the_raw_probabilities_of_scores_csv(tmp_path):
    """The metrics of a table are test.py's, computed from the raw scores: of a calibrated
    checkpoint's scores.csv, raw_probability; of a file written before that column,
    fake_probability (then the raw one)."""
    import experiments.reproduce as rp
    from trainer.evaluation_report import SCORE_COLUMNS
    now, before = tmp_path / "now.csv", tmp_path / "before.csv"
    with open(now, "w", newline="") as fh:
        w = csv.DictWriter(fh, SCORE_COLUMNS)
        w.writeheader()
        w.writerow({"path": "a.png", "label": 1, "logit": 0.4, "fake_probability": 0.55,
                    "raw_probability": 0.598687660112452, "video": "v", "method": "m"})
    with open(before, "w", newline="") as fh:
        fh.write("path,label,logit,fake_probability,video,method\n"
                 "a.png,1,0.4,0.598687660112452,v,m\n")
    for path in (now, before):
        assert rp.read_scores(str(path)) == ([1], [0.598687660112452], ["v"], ["a.png"])


def test_published_numbers_name_known_tables_rows_and_sources():
    from experiments.reproduce import load_published, load_tables
    tables = load_tables()
    published, sources = load_published()
    assert published[("ffpp", "ffpp_c23", "frame", "AUC")] == (99.32, "paper_via_peerj")
    assert "Not read in the paper" in sources["paper_via_peerj"]  # attribution as found
    import yaml

    from helpers import ROOT as root
    data = yaml.safe_load(open(os.path.join(root, "config", "paper", "published.yml")))
    for n in data["numbers"]:  # each says where it was read and whether its level is stated
        assert n["read_in"] in ("paper", "third_party") and isinstance(n["level_stated"], bool)
        if n["source"] in ("deepfakebench", "effort"):
            assert "not the paper's" in sources[n["source"]]  # other recipes, said as such
    from experiments.reproduce import load_not_found
    not_found = load_not_found()
    assert set(not_found) <= set(tables) and "cross_manipulation_c23" in not_found
    assert published[("cross_c40", "celeb_df", "frame", "EER")] == (35.75, "authors_model")
    for table, row, level, metric in published:
        assert row in {r["name"] for r in tables[table]["rows"]}
        assert level in ("frame", "video") and metric in ("AUC", "ACC", "EER")


def test_published_averages_recompute_from_their_rows():
    """DeepfakeBench's README row "Recce": Avg. 0.9422 (within) and 0.7649 (cross), Top3 1 and 2;
    each average is the mean of the row's published columns, to its 4 published decimals."""
    from experiments.reproduce import load_averages, load_published, load_tables
    tables = load_tables()
    published, _ = load_published()
    averages = load_averages()
    assert {k: (a["value"], a["top3"]) for k, a in averages.items()} == {
        ("deepfakebench", "in_domain"): (94.22, 1), ("deepfakebench", "cross_domain"): (76.49, 2)}
    for (table, name), a in averages.items():
        group = next(g for g in tables[table]["averages"] if g["name"] == name)
        assert set(group["rows"]) <= {r["name"] for r in tables[table]["rows"]}
        values = [published[(table, r, a["level"], a["metric"])][0] for r in group["rows"]]
        assert abs(sum(values) / len(values) - a["value"]) <= 0.005 + 1e-9, name


def test_cross_manipulation_tables_are_four_by_four_with_ffpp_methods_on_the_diagonal():
    from experiments.reproduce import load_tables
    tables = load_tables()
    methods = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
    diagonal = {(r["model"], r["file"]) for r in tables["ffpp_methods"]["rows"]}
    for c in ("c23", "c40"):
        rows = tables[f"cross_manipulation_{c}"]["rows"]
        pairs = {(r["model"], os.path.basename(r["file"])) for r in rows}
        assert pairs == {(f"ffpp_{c}_{a}", f"ffpp_{c}_{b}.yml") for a in methods for b in methods}
        assert {(r["model"], r["file"]) for r in rows
                if r["model"].endswith(os.path.basename(r["file"])[:-4][len("ffpp_c23_"):])} \
            <= diagonal


# -------------------------------------------------------------------------------- FF++ c0 = raw
def test_ffpp_c0_reads_the_raw_folders(tmp_path):
    from dataset.faceforensics import build_faceforensics
    os.makedirs(tmp_path / "splits")
    for split, pair in (("train", ["000", "001"]), ("val", ["002", "003"]),
                        ("test", ["004", "005"])):
        (tmp_path / "splits" / f"{split}.json").write_text(json.dumps([pair]))
        for v in pair:
            _img(tmp_path / f"original_sequences/youtube/raw/images/{v}/0000.png")
        for v in (f"{pair[0]}_{pair[1]}", f"{pair[1]}_{pair[0]}"):
            _img(tmp_path / f"manipulated_sequences/Deepfakes/raw/images/{v}/0000.png")
    counts, missing = build_faceforensics(str(tmp_path), str(tmp_path / "splits"), "c0",
                                          ["Deepfakes"])
    assert counts["train"] == (2, 2) and missing == []
    assert (tmp_path / "train_c0.pickle").is_file()
    ds = build_dataset("FaceForensics", {"root": str(tmp_path), "split": "test",
                                         "compression": "c0", "transforms": NORM})
    assert len(ds) == 4 and all("/raw/images/" in it.path for it in ds.items)
    # an index named after the folder is read too
    os.rename(tmp_path / "val_c0.pickle", tmp_path / "val_raw.pickle")
    assert len(build_dataset("FaceForensics", {"root": str(tmp_path), "split": "val",
                                               "compression": "c0", "transforms": NORM})) == 4


# ------------------------------------------------------------------------ WildDeepfake archives
def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_wilddeepfake_archives_unpack_to_the_loader_layout(tmp_path):
    from tools.build_index import main
    png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
    dist = tmp_path / "deepfake_in_the_wild"
    for kind in ("real", "fake"):
        for split in ("train", "test"):
            folder = dist / (f"{kind}_{split}" if kind == "real" else f"{kind} {split}")
            folder.mkdir(parents=True)
            _tar(folder / "0.tar.gz", [("0/1.png", png), ("0/2.png", png), ("1/7.png", png),
                                       ("../../evil.png", png), ("/tmp/abs.png", png),
                                       ("link.png", None), ("notes.txt", b"x")])
    root = tmp_path / "wdf"
    # a folder the tool did not make, where one archive would go: left alone, reported
    (root / "test" / "fake" / "0").mkdir(parents=True)
    (root / "test" / "fake" / "0" / "mine.txt").write_text("keep")
    assert main(["wilddeepfake", "--root", str(root), "--archives", str(dist)]) == 1  # reported
    assert (root / "test" / "fake" / "0" / "mine.txt").read_text() == "keep"
    assert sorted(os.listdir(root / "test" / "fake" / "0")) == ["mine.txt"]
    assert not (tmp_path / "evil.png").exists() and not (root / "evil.png").exists()
    assert sorted(os.listdir(root / "train" / "real" / "0")) == [".unpacked", "0", "1"]
    ds = build_dataset("WildDeepfake", {"root": str(root), "split": "train", "transforms": NORM})
    assert len(ds) == 6 and sorted(set(ds.labels)) == [0, 1]
    assert {it.video for it in ds.items} == {"real/0/0", "real/0/1", "fake/0/0", "fake/0/1"}
    # a second run skips what is unpacked
    stamp = os.path.getmtime(root / "train" / "real" / "0" / "0" / "1.png")
    assert main(["wilddeepfake", "--root", str(root), "--archives", str(dist)]) == 1
    assert os.path.getmtime(root / "train" / "real" / "0" / "0" / "1.png") == stamp


def test_an_archive_counts_as_unpacked_only_when_read_to_its_end(tmp_path, capsys):
    """A gzip stream with a byte flipped, a truncated archive and a zip named .tar.gz are
    reported (exit 1), stay marked .unpacking and are never indexed; archives that share a stem
    (5.tar and 5.tar.gz, 1.part1 and 1.part2) each get their own folder."""
    import zipfile

    from tools.build_index import main
    png = cv2.imencode(".png", np.full((20, 20, 3), 7, np.uint8))[1].tobytes()
    members = [(f"s/{i}.png", png + bytes([i])) for i in range(40)]
    dist = tmp_path / "dist"
    for kind in ("real", "fake"):
        for split in ("train", "test"):
            (dist / f"{kind}_{split}").mkdir(parents=True)
            _tar(dist / f"{kind}_{split}" / "0.tar.gz", [("a/1.png", png)])
    folder = dist / "real_train"
    _tar(folder / "good.tar.gz", members)
    data = bytearray((folder / "good.tar.gz").read_bytes())
    data[len(data) - 6] ^= 0xFF  # the stored CRC: only reading to the end sees it
    (folder / "crc.tar.gz").write_bytes(bytes(data))
    (folder / "cut.tar.gz").write_bytes((folder / "good.tar.gz").read_bytes()[:len(data) // 2])
    with zipfile.ZipFile(folder / "zip.tar.gz", "w") as z:
        z.writestr("s/1.png", png)
    with tarfile.open(folder / "5.tar", "w") as tar:
        info = tarfile.TarInfo("s/9.png")
        info.size = len(png)
        tar.addfile(info, io.BytesIO(png))
    _tar(folder / "5.tar.gz", [("s/1.png", png)])
    _tar(folder / "1.part1.tar.gz", [("s/1.png", png)])
    _tar(folder / "1.part2.tar.gz", [("t/1.png", png)])
    root = tmp_path / "wdf"
    capsys.readouterr()
    assert main(["wilddeepfake", "--root", str(root), "--archives", str(dist)]) == 1
    err = capsys.readouterr().err
    for bad in ("crc", "cut", "zip"):
        assert f"{bad}.tar.gz" in err and (root / "train" / "real" / bad / ".unpacking").exists()
        assert not (root / "train" / "real" / bad / ".unpacked").exists()
    made = sorted(os.listdir(root / "train" / "real"))
    assert {"5.tar", "5.tar.gz", "1.part1", "1.part2", "good", "0"} <= set(made)
    ds = build_dataset("WildDeepfake", {"root": str(root), "split": "train", "transforms": NORM})
    videos = {it.video for it in ds.items}
    assert not any(v.split("/")[1] in ("crc", "cut", "zip") for v in videos)
    assert {"real/5.tar/s", "real/5.tar.gz/s", "real/1.part1/s", "real/1.part2/t"} <= videos


def _snapshot(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, dirs, files in os.walk(folder) for f in dirs + files)


def test_an_archive_member_named_like_the_tools_marker_is_one_line(tmp_path, capsys):
    """Members under .unpacked/ or .unpacking/ would take the marker's place: not extracted, one
    problem line for the archive, the rest unpacked and indexed."""
    from tools.build_index import main
    png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
    dist = tmp_path / "dist"
    for kind in ("real", "fake"):
        for split in ("train", "test"):
            (dist / f"{kind}_{split}").mkdir(parents=True)
            _tar(dist / f"{kind}_{split}" / "0.tar.gz", [("s/1.png", png)])
    _tar(dist / "real_train" / "0.tar.gz", [("s/1.png", png), (".unpacked/2.png", png),
                                            (".unpacking/3.png", png), (".unpacked", png)])
    root = tmp_path / "wdf"
    capsys.readouterr()
    assert main(["wilddeepfake", "--root", str(root), "--archives", str(dist)]) == 1
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "real_train/0.tar.gz: 2 member(s) under .unpacked/" in err
    assert "Traceback" not in err
    target = root / "train" / "real" / "0"
    assert sorted(os.listdir(target)) == [".unpacked", "s"] and (target / ".unpacked").is_file()
    assert os.listdir(target / "s") == ["1.png"]
    assert main(["wilddeepfake", "--root", str(root), "--archives", str(dist)]) == 0  # done


def test_wilddeepfake_root_that_is_a_file_is_one_line_and_makes_nothing(tmp_path, capsys):
    from tools.build_index import main
    png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
    dist = tmp_path / "dist"
    (dist / "real_train").mkdir(parents=True)
    _tar(dist / "real_train" / "0.tar.gz", [("s/1.png", png)])
    (tmp_path / "notes.txt").write_text("the user's")
    before = _snapshot(tmp_path)
    for root, text in [(tmp_path / "notes.txt", "--root {}: is a file, expected a folder"),
                       (tmp_path / "notes.txt" / "wdf", "is a file, not a folder to make it in")]:
        capsys.readouterr()
        assert main(["wilddeepfake", "--root", str(root), "--archives", str(dist)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --root ") and err.count("\n") == 1
        assert text.format(root) in err
    assert _snapshot(tmp_path) == before
    assert (tmp_path / "notes.txt").read_text() == "the user's"


def test_a_failing_dfdc_run_leaves_no_new_folder(tmp_path, capsys):
    """A mistyped --root with --test_metadata; a root without training parts: one line, and no
    labels.csv (nor folder) written."""
    from tools.build_index import main
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"a.mp4": {"label": "FAKE"}}))
    (tmp_path / "dfdc").mkdir()
    before = _snapshot(tmp_path)
    for root, text in [(tmp_path / "dfcd", "dataset root not found: {}"),
                       (tmp_path / "dfdc", "no dfdc_train_part_* folder in {}")]:
        capsys.readouterr()
        assert main(["dfdc", "--root", str(root), "--test_metadata", str(meta)]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {text.format(root)}" + ("" if "not found" not in text else
                                                        " (expected DFDC's dfdc_train_part_* "
                                                        "folders and test/)") + "\n"
        assert _snapshot(tmp_path) == before
    # the layout right: the labels are written
    part = tmp_path / "dfdc" / "dfdc_train_part_0"
    part.mkdir()
    (part / "metadata.json").write_text(json.dumps({"b.mp4": {"label": "REAL"}}))
    assert main(["dfdc", "--root", str(tmp_path / "dfdc"), "--test_metadata", str(meta)]) == 0
    assert "test videos: 1" in capsys.readouterr().out
    assert (tmp_path / "dfdc" / "test" / "labels.csv").is_file()


def test_dfdc_test_labels_from_metadata(tmp_path):
    from dataset.dfdc import labels_from_metadata, read_test_labels
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"b.mp4": {"label": "FAKE"}, "a.mp4": {"label": "REAL"}}))
    with pytest.raises(UserError, match="dataset root not found"):  # never a new root
        labels_from_metadata(str(meta), str(tmp_path / "dfdc"))
    assert not (tmp_path / "dfdc").exists()
    (tmp_path / "dfdc").mkdir()
    path, n = labels_from_metadata(str(meta), str(tmp_path / "dfdc"))
    assert n == 2 and read_test_labels(path) == [("a", 0), ("b", 1)]
    assert labels_from_metadata(str(meta), str(tmp_path / "dfdc"))[1] == 2  # same: kept
    with open(path, "w") as fh:
        fh.write("a.mp4,1\n")
    with pytest.raises(UserError, match="not replaced"):
        labels_from_metadata(str(meta), str(tmp_path / "dfdc"))
    assert open(path).read() == "a.mp4,1\n"


# ------------------------------------------------------------------------------------- bootstrap
@pytest.mark.slow
def test_bootstrap_interval_matches_a_hand_computed_case():
    """One real video (0.2) and two fake ones (0.9, 0.1), one frame each. Drawing the two fakes
    with replacement: {A, A} (p 1/4) -> AUC 1, {A, B} (p 1/2) -> 0.5, {B, B} (p 1/4) -> 0.
    The 95 % interval is therefore [0, 1] and the mean of the resamples 0.5."""
    labels, probs, videos = [0, 1, 1], [0.2, 0.9, 0.1], ["r", "A", "B"]
    value, low, high = bootstrap_interval(labels, probs, videos, "AUC", "frame", resamples=1000)
    assert value == 0.5 and (low, high) == (0.0, 1.0)
    # videos, not frames, are drawn: the same case with 50 frames per video has the same
    # interval (a frame bootstrap would make it far narrower)
    many = [np.repeat(a, 50).tolist() for a in (labels, probs, videos)]
    assert bootstrap_interval(*many, "AUC", "frame", resamples=1000)[1:] == (0.0, 1.0)
    # ACC at video level, two real videos (one right, one wrong) and one right fake:
    # reals drawn {right,right} 1/4 -> 1, mixed 1/2 -> 2/3, {wrong,wrong} 1/4 -> 1/3
    value, low, high = bootstrap_interval([0, 0, 1], [0.1, 0.8, 0.9], ["a", "b", "c"], "ACC",
                                          "video", 1000)
    assert value == pytest.approx(2 / 3) and low == pytest.approx(1 / 3) and high == 1.0


# ------------------------------------------------------------------------ tools/reproduce.py
def test_reproduce_names_missing_data_before_running_anything(tmp_path, capsys):
    from tools.reproduce import main  # the command line
    assert main(["--table", "ffpp", "--out", str(tmp_path / "o")]) == 2
    assert "--data-root ffpp=DIR" in capsys.readouterr().err
    (tmp_path / "FaceForensics++").mkdir()
    (tmp_path / "Celeb-DF-v2").mkdir()
    assert main(["--table", "cross_c40", "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "o"), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "nothing was run" in err and "train_c40.pickle" in err
    assert "List_of_testing_videos.txt" in err and str(tmp_path / "WildDeepfake") in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


def test_reproduce_list_and_dry_run(capsys):
    from tools.reproduce import main  # the command line
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "ffpp", "ffpp_methods", "within", "cross_c23", "cross_c40"):
        assert f"\n{name}: " in "\n" + out
    assert main(["--table", "cross_c23", "--dry-run", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("torch.distributed.run --nproc_per_node=2") == 1  # one model, trained once
    assert out.count("test.py") == 5 and "data.test_branch=test_299_cfg" in out


def test_a_table_added_to_the_tables_file_is_listed_and_planned(tmp_path, monkeypatch, capsys):
    """What reproduce knows is data: a table naming a new model config (as a new paper setting's
    config/paper/<name>.yml) is listed and planned from the tables file alone."""
    import argparse
    import shutil

    import experiments.reproduce as rp
    from tools.reproduce import main
    config = tmp_path / "new_setting.yml"
    shutil.copy(os.path.join(PAPER, "ffpp_c23.yml"), config)
    tables_file = tmp_path / "tables.yml"
    tables_file.write_text(yaml.safe_dump({"new": {
        "title": "A new setting", "models": {"new": {"config": str(config)}},
        "rows": [{"name": "new_on_ffpp", "model": "new", "data": "FaceForensics",
                  "file": "config/paper/dataset/ffpp_c23.yml", "branch": "test_cfg"}]}}))
    monkeypatch.setattr(rp, "TABLES_FILE", str(tables_file))
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("new: A new setting") and "rows: new_on_ffpp" in listed
    ns = argparse.Namespace(opt=[], protocol=None, runs=str(tmp_path / "runs"), checkpoints=None,
                            dry_run=True, gpus=1, out=str(tmp_path / "o"), device=None,
                            trust=False, recipe="paper", video_auc=None)
    plan = rp.Plan("new", rp.load_tables(), ns, rp.parse_data_roots([f"ffpp={tmp_path}"]))
    assert str(config) in plan.train_command("new")
    assert f"test_cfg.root={tmp_path}" in plan.test_command(plan.rows[0], "c.bin", "o")


@pytest.mark.slow
def test_reproduce_demo_table_end_to_end(tmp_path, demo_root, monkeypatch, capsys):
    """Two rows (within the FF++-layout demo, across to the Celeb-DF-layout demo) through
    train.py and test.py; a second run reruns nothing."""
    import experiments.reproduce as rp
    from tools.reproduce import main  # the command line
    published = tmp_path / "published.yml"
    published.write_text(yaml.safe_dump({
        "sources": {"made_up_for_the_test": "a number the test made up"},
        "numbers": [{"table": "demo", "row": "within", "level": "frame", "metric": "AUC",
                     "value": 50.0, "source": "made_up_for_the_test"}]}))
    monkeypatch.setattr(rp, "PUBLISHED_FILE", str(published))
    monkeypatch.setattr(rp, "run_child", forked_runner(rp.run_child))
    out, runs = tmp_path / "reproduction", tmp_path / "runs"
    args = ["--table", "demo", "--data-root", f"demo={demo_root}", "--out", str(out), "--runs",
            str(runs), "--bootstrap", "100", "--opt", "train_cfg.num_steps=2",
            "--opt", "train_cfg.val_steps=2", "--opt", "data.train_batch_size=4",
            "--opt", "data.num_workers=0", "--opt", "config.scheduler.T_max=2"]
    assert main(args) == 0
    with open(out / "demo.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12  # 2 rows x frame/video x AUC/ACC/EER
    assert {r["row"] for r in rows} == {"within", "cross_celeb_df"}
    assert {r["protocol"] for r in rows} == {"clean"}  # the demo validates on its val split
    for r in rows:
        assert float(r["ci_low"]) <= float(r["ours"]) + 1e-9 <= float(r["ci_high"]) + 2e-9
    auc = next(r for r in rows if (r["row"], r["level"], r["metric"]) == ("within", "frame", "AUC"))
    assert float(auc["difference"]) == pytest.approx(float(auc["ours"]) - 50.0, abs=0.011)
    scores = out / "demo" / "clean" / "cross_celeb_df" / "scores.csv"
    with open(scores, newline="") as fh:
        scored = list(csv.DictReader(fh))
    assert int(auc["frames"]) > 0 and len(scored) == int(next(
        r for r in rows if r["row"] == "cross_celeb_df")["frames"])
    md = (out / "demo.md").read_text()
    assert "not recorded" in md and "a number the test made up" in md and "95 %" in md
    stamp = os.path.getmtime(next(runs.glob("Recce/*/latest_model.bin")))
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("done, kept") == 2 and "$ " not in printed
    assert os.path.getmtime(next(runs.glob("Recce/*/latest_model.bin"))) == stamp
    # rows scored again (table removed) would find the run finished: no retraining; a run
    # asked for more steps would be resumed
    import argparse
    ns = argparse.Namespace(opt=args[args.index("--opt") + 1::2], protocol=None, runs=str(runs),
                            checkpoints=None, dry_run=False, gpus=1, out=str(out), device=None,
                            trust=False, recipe="paper")
    roots = rp.parse_data_roots([f"demo={demo_root}"])
    assert rp.Plan("demo", rp.load_tables(), ns, roots).trained("demo") == (True, True)
    ns.opt = ns.opt + ["train_cfg.num_steps=3"]
    plan = rp.Plan("demo", rp.load_tables(), ns, roots)
    assert plan.trained("demo") == (False, True)
    assert "config.resume=true" in plan.train_command("demo", resume=True)[-1]


def test_training_leaves_out_the_videos_validation_holds_out(tmp_path, demo_root):
    """A config whose val_cfg is `holdout: 0.2` of the training root: the trainer's training set
    and validation set share no video, and together they are the whole split."""
    from helpers import image_list_tree, write_config
    from trainer.train import Trainer
    root = image_list_tree(demo_root, tmp_path / "img", videos=8, frames=1)
    path = write_config(tmp_path, root)
    ds = yaml.safe_load(open(tmp_path / "ds.yml"))
    ds["val_cfg"]["holdout"] = 0.2
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    trainer = Trainer(load_config(path))
    try:
        train = {it.video for it in trainer.train_set.items}
        val = {it.video for it in trainer.val_set.items}
    finally:
        trainer.close()
    everything = {it.video for it in build_dataset("ImageList", {"root": root,
                                                                 "transforms": NORM}).items}
    assert val and train and not train & val and train | val == everything


def test_a_debug_run_needs_no_validation_branch(tmp_path, demo_root):
    """debug: true does not validate, so a data.val_branch the dataset file lacks is no error
    (the holdout lookup must not read it)."""
    from helpers import image_list_tree, write_config
    from trainer.train import Trainer
    root = image_list_tree(demo_root, tmp_path / "img", videos=2, frames=1)
    path = write_config(tmp_path, root, extra={"debug": True}, data={"val_branch": "nowhere"})
    trainer = Trainer(load_config(path))
    try:
        assert trainer.val_set is None and len(trainer.train_set) == 4
    finally:
        trainer.close()


def test_a_stop_reaches_every_child_process_and_waits_for_them(tmp_path):
    """experiments.reproduce.run_child (reproduce.py's runner): SIGTERM to the parent reaches the
    child and the grandchild (torchrun's workers), the parent waits for them to finish saving, then
    exits 143; nothing is left running."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import signal, sys, time, subprocess\n"
        "name = sys.argv[1]\n"
        "def stop(s, f):\n"
        "    time.sleep(1.0)  # saving\n"
        "    open(sys.argv[2] + '/' + name, 'w').write('saved')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "open(sys.argv[2] + '/ready_' + name, 'w').close()\n"
        "if name == 'launcher':\n"
        "    child = subprocess.Popen([sys.executable, sys.argv[0], 'worker', sys.argv[2]])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from errors import run_cli; from experiments.reproduce import run_child;"
        "sys.exit(run_cli(lambda: run_child([sys.executable, sys.argv[2], 'launcher',"
        " sys.argv[3]]), 'interrupted'))"), str(ROOT), str(worker), str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready_worker").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the grandchild has its handler
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 143 and err.strip() == "interrupted"
    assert (tmp_path / "launcher").read_text() == "saved"
    assert (tmp_path / "worker").read_text() == "saved"
    left = subprocess.run(["pgrep", "-f", str(worker)], capture_output=True, text=True)
    assert left.stdout.strip() == ""


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
def test_reproduce_scores_each_test_set_found_beside_deepfakebench_s_row(deepfakebench_json,
                                                                       tmp_path, capsys,
                                                                       make_checkpoint,
                                                                       monkeypatch):
    import experiments.reproduce
    import tools.reproduce as rp
    monkeypatch.setattr(experiments.reproduce, "run_child",
                        forked_runner(experiments.reproduce.run_child))
    cfg, _ = deepfakebench_json
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    recce = {"model": {"name": "Recce"}}
    make_checkpoint(ckpts / "deepfakebench.bin", config=recce, spec=48)
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
    make_checkpoint(ckpts / "deepfakebench.bin", config=recce, spec=40, seed=1)
    capsys.readouterr()
    assert rp.main(["--table", "deepfakebench", "--data-root", f"deepfakebench={cfg['root']}",
                    "--checkpoints", str(ckpts), "--out", str(out), "--bootstrap", "50",
                    "--device", "cpu"]) == 2
    assert "holds rows of other work (checkpoints:" in capsys.readouterr().err
    assert (out / "deepfakebench.md").read_text() == text


@pytest.mark.slow
def test_reproduce_deepfakebench_table_uses_its_grouping_and_averages(shared_names, monkeypatch):
    """tools/reproduce.py's video rows recomputed from scores.csv with the table's grouping
    (DeepfakeBench's for --table deepfakebench), and its published averages beside ours."""
    import argparse

    import experiments.reproduce as rp
    import test as test_py
    fixed_scores(monkeypatch)
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


@pytest.mark.slow
def test_reproduce_says_the_passes_and_precision_of_each_recipe(tmp_path):
    """The data check prints each training run's length in passes over the data it finds and its
    precision: DeepfakeBench's recipe 11 passes of 3,600 steps in fp32 (here 1 step a pass)."""
    import argparse

    import experiments.reproduce as rp
    root = tmp_path / "DeepfakeBench"
    data = {}
    for label in ("FF-real", "FF-DF"):
        for split in ("train", "val", "test"):
            videos = {}
            for v in ("000", "001"):
                frames = []
                for n in range(8):  # 2 labels x 2 videos x 8 frames = 32 a split: 1 batch
                    png(root / label / split / v / f"{n}.png")
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
