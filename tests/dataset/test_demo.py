"""dataset/demo.py: the demo data built where it is asked for, never into a user's folder, and
the split it makes."""
import os

import pytest
import yaml
from torch.utils.data import DataLoader

from dataset import build_dataset, collate
from errors import UserError
from helpers import NORM, intact, sentinels


def test_mistyped_demo_root_deletes_nothing(tmp_path, monkeypatch):
    import train
    user = sentinels(tmp_path / "ffpp" / "a.txt", tmp_path / "ffpp" / "videos" / "b.mp4")
    branch = {"root": str(tmp_path / "ffpp" / "faceforensicss"), "demo": True, "split": "train"}
    with pytest.raises(UserError, match="refusing to build the demo data into .*ffpp"):
        build_dataset("FaceForensics", branch)
    assert intact(user) and sorted(os.listdir(tmp_path / "ffpp")) == ["a.txt", "videos"]
    # through train.py: one line, exit 2, nothing touched
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"train_cfg": {
        **branch, "num_steps": 1, "log_steps": 1, "val_steps": 1}}))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce", "pretrained": False},
        "data": {"name": "FaceForensics", "file": str(tmp_path / "ds.yml"),
                 "val_branch": "train_cfg"},
        "config": {"ckpt_fold": str(tmp_path / "runs")}}))
    assert train.main(["--config", str(tmp_path / "c.yml")]) == 2
    assert intact(user) and sorted(os.listdir(tmp_path / "ffpp")) == ["a.txt", "videos"]


def test_mistyped_root_beside_complete_demo_is_a_missing_root(demo_root):
    before = sorted(os.listdir(demo_root))
    with pytest.raises(UserError, match="dataset root not found: .*faceforensicss.*celeb_df"):
        build_dataset("FaceForensics", {"root": os.path.join(demo_root, "faceforensicss"),
                                        "demo": True, "split": "train"})
    assert sorted(os.listdir(demo_root)) == before


@pytest.mark.slow
def test_demo_rebuild_replaces_only_its_own_sets(tmp_path):
    from dataset.demo import DONE_MARKER, make_demo_dataset
    out = tmp_path / "demo"
    make_demo_dataset(str(out))
    user = sentinels(out / "notes.txt")
    (out / "faceforensics" / "stale.png").write_text("old demo file")
    make_demo_dataset(str(out), seed=1)
    assert intact(user) and (out / DONE_MARKER).is_file()
    assert not (out / "faceforensics" / "stale.png").exists()
    assert sorted(p for p in os.listdir(tmp_path)) == ["demo"]


@pytest.mark.slow
def test_demo_built_meanwhile_by_another_rank_is_not_swapped(tmp_path, monkeypatch):
    """Two ranks build the demo at once: the one that finishes second keeps the first's data."""
    import dataset.demo as demo
    out = tmp_path / "demo"
    real_make = demo._make_celeb_df

    def other_rank_finishes_first(*args):
        real_make(*args)
        if not out.exists():
            monkeypatch.setattr(demo, "_make_celeb_df", real_make)
            demo.make_demo_dataset(str(out))  # the other rank, done while we were building
            (out / "faceforensics" / "in_use.txt").write_text("read by the other rank")
    monkeypatch.setattr(demo, "_make_celeb_df", other_rank_finishes_first)
    demo.ensure_demo_data(str(out))
    assert (out / "faceforensics" / "in_use.txt").read_text() == "read by the other rank"
    assert demo.demo_ready(str(out)) and sorted(os.listdir(tmp_path)) == ["demo"]


def test_demo_dataset_end_to_end(demo_root):
    ff = os.path.join(demo_root, "faceforensics")
    train = build_dataset("FaceForensics", {"root": ff, "split": "train", "method": "all",
                                            "compression": "c23", "transforms": NORM})
    val = build_dataset("FaceForensics", {"root": ff, "split": "val", "transforms": NORM})
    train_src = {it.video.split("/")[-1].split("_")[0] for it in train.items}
    val_src = {it.video.split("/")[-1].split("_")[0] for it in val.items}
    assert train_src and not (train_src & val_src)  # no source face in two splits
    assert sum(train.labels) == len(train) // 2
    subset = build_dataset("FaceForensics", {"root": ff, "split": "test", "method": "Face2Face",
                                             "transforms": NORM})
    assert {it.method for it in subset.items} == {"original", "Face2Face"}
    loader = DataLoader(train, batch_size=8, shuffle=True, num_workers=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 16, 16) and batch["bad"] == []
    celeb = build_dataset("CelebDF", {"root": os.path.join(demo_root, "celeb_df"), "split": "test",
                                      "transforms": NORM})
    assert set(celeb.labels) == {0, 1}
