"""dataset/wild_deepfake.py: the WildDeepfake layout and its image count."""
import os

from dataset import build_dataset
from dataset.wild_deepfake import build_wilddeepfake
from helpers import NORM, noise_image


def test_wilddeepfake_layout_and_num_image(tmp_path):
    for kind in ("real", "fake"):
        for v in range(3):
            for f in range(3):
                noise_image(tmp_path / "train" / kind / str(v) / f"{f}.png")
    (tmp_path / "test").mkdir()
    for kind in ("real", "fake"):
        (tmp_path / "test" / kind).mkdir()
    counts = build_wilddeepfake(str(tmp_path))
    assert counts["train/real"] == 9
    ds = build_dataset("WildDeepfake", {"root": str(tmp_path), "split": "train",
                                        "num_image_train": 9, "transforms": NORM})
    assert sorted(ds.labels) == [0] * 3 + [1] * 6
    assert ds.items[0].video == "real/" + os.path.basename(os.path.dirname(ds.items[0].path))
