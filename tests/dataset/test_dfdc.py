"""dataset/dfdc.py: the DFDC layout, its training metadata and its test labels."""
import json

from dataset import build_dataset
from helpers import NORM, noise_image


def test_dfdc_layout(tmp_path):
    part = tmp_path / "dfdc_train_part_0"
    (part).mkdir()
    (part / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "REAL"},
                                                    "b.mp4": {"label": "FAKE"}}))
    for v in ("a", "b"):
        noise_image(part / "images" / v / "0.png")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "labels.csv").write_text("filename,label\nc.mp4,1\n")
    noise_image(tmp_path / "test" / "images" / "c" / "0.png")
    noise_image(tmp_path / "test" / "images" / "c" / "1.png")
    train = build_dataset("DFDC", {"root": str(tmp_path), "split": "train", "transforms": NORM})
    assert [(it.label, it.video) for it in train.items] == [(0, "a"), (1, "b")]
    test = build_dataset("DFDC", {"root": str(tmp_path), "split": "test", "transforms": NORM})
    assert test.labels == [1, 1]
