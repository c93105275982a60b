"""dataset/faceforensics.py: the FaceForensics++ layout, its methods and videos, a missing root,
index or split."""
import pytest
import torch

from dataset import build_dataset
from errors import UserError
from helpers import NORM, ff_tree


def test_faceforensics_layout_methods_and_video_ids(tmp_path):
    counts, missing = ff_tree(tmp_path)
    assert counts["train"] == (4, 16) and missing == []
    ds = build_dataset("FaceForensics", {"root": str(tmp_path), "split": "train",
                                         "compression": "c23", "transforms": NORM}, seed=1)
    assert len(ds) == 20 and sorted(set(ds.labels)) == [0, 1]
    assert {it.method for it in ds.items} == {"original", "Deepfakes", "Face2Face", "FaceSwap",
                                              "NeuralTextures"}
    assert len({it.video for it in ds.items}) == 10
    one = build_dataset("FaceForensics", {"root": str(tmp_path), "split": "train",
                                          "method": "FaceSwap", "compression": "c23",
                                          "transforms": NORM}, seed=1)
    assert sorted(one.labels) == [0] * 4 + [1] * 4
    assert {it.method for it in one.items} == {"original", "FaceSwap"}
    sample = one[0]
    assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.float32
    with pytest.raises(UserError, match="method: 'DeepFake'"):
        build_dataset("FaceForensics", {"root": str(tmp_path), "split": "train",
                                        "method": "DeepFake", "transforms": NORM})


def test_missing_root_index_and_empty_split(tmp_path):
    with pytest.raises(UserError, match="dataset root not found: .*nowhere"):
        build_dataset("FaceForensics", {"root": str(tmp_path / "nowhere"), "split": "train"})
    tmp_path.joinpath("ff").mkdir()
    with pytest.raises(UserError, match="index file not found: .*train_c23.pickle"):
        build_dataset("FaceForensics", {"root": str(tmp_path / "ff"), "split": "train"})
    torch.save([], tmp_path / "ff" / "train_c23.pickle")
    with pytest.raises(UserError, match="no images"):
        build_dataset("FaceForensics", {"root": str(tmp_path / "ff"), "split": "train"})
    with pytest.raises(UserError, match="unknown dataset 'FF'"):
        build_dataset("FF", {"root": "x"})
