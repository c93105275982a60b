"""dataset/image_list.py: the generic layout: a CSV or JSON-lines index, or real/ and fake/
folders."""
import pytest
from torch.utils.data import DataLoader

from dataset import build_dataset, collate
from errors import UserError
from helpers import NORM, noise_image


def test_generic_loader_csv_jsonl_and_folders(tmp_path):
    noise_image(tmp_path / "imgs" / "r.png")
    noise_image(tmp_path / "imgs" / "f.png")
    (tmp_path / "index.csv").write_text("path,label,video\nimgs/r.png,0,v1\nimgs/f.png,1,\n")
    ds = build_dataset("ImageList", {"index": str(tmp_path / "index.csv"), "transforms": NORM})
    assert ds.labels == [0, 1] and ds.items[0].video == "v1"
    assert ds.items[1].video.endswith("imgs")  # missing video: the parent folder
    (tmp_path / "index.jsonl").write_text('{"path": "imgs/r.png", "label": 0, "method": "x"}\n')
    ds = build_dataset("ImageList", {"index": str(tmp_path / "index.jsonl"), "transforms": NORM})
    assert ds.items[0].method == "x"
    (tmp_path / "bad.csv").write_text("path,label\nimgs/r.png,real\n")
    with pytest.raises(UserError, match="bad.csv:2 has label 'real'"):
        build_dataset("ImageList", {"index": str(tmp_path / "bad.csv"), "transforms": NORM})
    noise_image(tmp_path / "folders" / "real" / "v" / "0.png")
    noise_image(tmp_path / "folders" / "fake" / "w" / "0.png")
    ds = build_dataset("ImageList", {"root": str(tmp_path / "folders"), "transforms": NORM})
    assert ds.labels == [0, 1]
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["label"].tolist() == [0, 1]
