"""dataset/common.py: what the layouts share: reading their lists and metadata (one line naming
the file, the line and the entry), and folders of images (symlinks followed, loops not)."""
import os
import pickle

import pytest
import torch

from dataset import build_dataset
from dataset.wild_deepfake import build_wilddeepfake
from errors import UserError
from helpers import TF, image_list_tree


def test_bad_ff_pickle_dfdc_metadata_and_celeb_df_list(tmp_path):
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


def test_symlinked_folders_followed_and_loops_not(tmp_path, demo_root):
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
