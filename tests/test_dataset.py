import json
import os
import pickle
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataset import BadImageLog, build_dataset, collate, read_rgb
from dataset.faceforensics import build_faceforensics
from dataset.wild_deepfake import build_wilddeepfake
from dataset.index import load_pickle_index
from dataset.transforms import build_transforms
from errors import UserError

NORM = [{"name": "Resize", "params": {"height": 16, "width": 16}},
        {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]


def _img(path, value=128, size=20):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(value)
    cv2.imwrite(str(path), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _ff_tree(root):
    """Three FF++ splits of one pair each, two frames per video, through the index builder."""
    splits = {"train": [["000", "001"]], "val": [["002", "003"]], "test": [["004", "005"]]}
    os.makedirs(root / "splits")
    for split, pairs in splits.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
        for a, b in pairs:
            for v in (a, b):
                for f in range(2):
                    _img(root / f"original_sequences/youtube/c23/images/{v}/{f:04d}.png")
            for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"):
                for v in (f"{a}_{b}", f"{b}_{a}"):
                    for f in range(2):
                        _img(root / f"manipulated_sequences/{m}/c23/images/{v}/{f:04d}.png")
    return build_faceforensics(str(root), str(root / "splits"), "c23")


def test_faceforensics_layout_methods_and_video_ids(tmp_path):
    counts, missing = _ff_tree(tmp_path)
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


def test_sampling_depends_on_seed_only(tmp_path):
    """Celeb-DF's balance draws 4 of 12 fakes: the seed decides which, nothing else does."""
    for v in range(2):
        for f in range(2):
            _img(tmp_path / f"Celeb-real/images/r{v}/{f}.png")
    for v in range(4):
        for f in range(3):
            _img(tmp_path / f"Celeb-synthesis/images/s{v}/{f}.png")
    (tmp_path / "List_of_testing_videos.txt").write_text("1 Celeb-real/none.mp4\n")
    cfg = {"root": str(tmp_path), "split": "train", "balance": True, "transforms": NORM}
    a = build_dataset("CelebDF", cfg, seed=5).items
    np.random.seed(123)
    import random
    random.seed(7)
    torch.manual_seed(9)
    assert a == build_dataset("CelebDF", cfg, seed=5).items
    assert len(a) == 8 and sum(it.label for it in a) == 4
    others = [build_dataset("CelebDF", cfg, seed=s).items for s in (6, 7, 8)]
    assert any(o != a for o in others)


def test_celeb_df_layout_test_list_and_balance(tmp_path):
    for folder, n in (("YouTube-real", 1), ("Celeb-real", 2), ("Celeb-synthesis", 4)):
        for v in range(n):
            for f in range(2):
                _img(tmp_path / folder / "images" / f"id{v}" / f"{f:04d}.png")
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id0.mp4\n0 Celeb-synthesis/id0.mp4\n0 Celeb-synthesis/id1.mp4\n")
    test = build_dataset("CelebDF", {"root": str(tmp_path), "split": "test", "transforms": NORM})
    assert sorted(test.labels) == [0, 0, 1, 1, 1, 1]  # labels by folder, not by the list's column
    train = build_dataset("CelebDF", {"root": str(tmp_path), "split": "train", "balance": True,
                                      "transforms": NORM})
    assert sorted(train.labels) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {it.video for it in test.items} == {"Celeb-real/id0", "Celeb-synthesis/id0",
                                               "Celeb-synthesis/id1"}


def test_wilddeepfake_layout_and_num_image(tmp_path):
    for kind in ("real", "fake"):
        for v in range(3):
            for f in range(3):
                _img(tmp_path / "train" / kind / str(v) / f"{f}.png")
    (tmp_path / "test").mkdir()
    for kind in ("real", "fake"):
        (tmp_path / "test" / kind).mkdir()
    counts = build_wilddeepfake(str(tmp_path))
    assert counts["train/real"] == 9
    ds = build_dataset("WildDeepfake", {"root": str(tmp_path), "split": "train",
                                        "num_image_train": 9, "transforms": NORM})
    assert sorted(ds.labels) == [0] * 3 + [1] * 6
    assert ds.items[0].video == "real/" + os.path.basename(os.path.dirname(ds.items[0].path))


def test_dfdc_layout(tmp_path):
    part = tmp_path / "dfdc_train_part_0"
    (part).mkdir()
    (part / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "REAL"},
                                                    "b.mp4": {"label": "FAKE"}}))
    for v in ("a", "b"):
        _img(part / "images" / v / "0.png")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "labels.csv").write_text("filename,label\nc.mp4,1\n")
    _img(tmp_path / "test" / "images" / "c" / "0.png")
    _img(tmp_path / "test" / "images" / "c" / "1.png")
    train = build_dataset("DFDC", {"root": str(tmp_path), "split": "train", "transforms": NORM})
    assert [(it.label, it.video) for it in train.items] == [(0, "a"), (1, "b")]
    test = build_dataset("DFDC", {"root": str(tmp_path), "split": "test", "transforms": NORM})
    assert test.labels == [1, 1]


def test_generic_loader_csv_jsonl_and_folders(tmp_path):
    _img(tmp_path / "imgs" / "r.png")
    _img(tmp_path / "imgs" / "f.png")
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
    _img(tmp_path / "folders" / "real" / "v" / "0.png")
    _img(tmp_path / "folders" / "fake" / "w" / "0.png")
    ds = build_dataset("ImageList", {"root": str(tmp_path / "folders"), "transforms": NORM})
    assert ds.labels == [0, 1]
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["label"].tolist() == [0, 1]


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


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_index_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "train_c23.pickle"
    payload = [("a.png", 0), _Evil(marker)]
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(UserError, match="train_c23.pickle"):
        load_pickle_index(str(path))
    assert not marker.exists()


def test_plain_pickle_and_torch_save_indexes_read(tmp_path):
    entries = [("x/0.png", 0), ("y/0.png", 1)]
    torch.save(entries, tmp_path / "a.pickle")
    with open(tmp_path / "b.pickle", "wb") as fh:
        pickle.dump(entries, fh)
    torch.save(entries, tmp_path / "c.pickle", _use_new_zipfile_serialization=False)
    for name in ("a", "b", "c"):
        assert [tuple(e) for e in load_pickle_index(str(tmp_path / f"{name}.pickle"))] == entries


def test_transforms_any_albumentations_name_and_errors():
    t = build_transforms([{"name": "GaussianBlur", "params": {"blur_limit": 3}}] + NORM)
    out = t(image=np.zeros((20, 20, 3), np.uint8))["image"]
    assert out.shape == (3, 16, 16)
    with pytest.raises(UserError, match=r"transforms\[0\]: unknown albumentations transform 'Resise'"):
        build_transforms([{"name": "Resise", "params": {}}])
    with pytest.raises(UserError, match=r"transforms\[1\] \(Resize\).*always_apply"):
        build_transforms([NORM[1], {"name": "Resize",
                                    "params": {"height": 2, "width": 2, "always_apply": True}}])
    with pytest.raises(UserError, match="GaussNoise.*var_limit"):
        build_transforms([{"name": "GaussNoise", "params": {"var_limit": [10, 50]}}])
    with pytest.raises(UserError, match="Resize.*height"):
        build_transforms([{"name": "Resize", "params": {"height": "big", "width": 2}}])


@pytest.mark.parametrize("kind", ["gray", "rgba", "palette", "16bit", "cmyk"])
def test_image_formats_become_8bit_rgb(tmp_path, kind):
    from PIL import Image
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = str(tmp_path / f"img.{'jpg' if kind == 'cmyk' else 'png'}")
    if kind == "gray":
        Image.fromarray(rgb[..., 0]).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, np.full((8, 8), 255, np.uint8)]), "RGBA").save(path)
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(path)
    elif kind == "16bit":
        cv2.imwrite(path, (rgb[..., ::-1].astype(np.uint16) * 257))
    else:
        Image.fromarray(rgb).convert("CMYK").save(path, quality=100)
    img = read_rgb(path)
    assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    if kind != "gray":
        assert img[..., 0].mean() > 150 and img[..., 2].mean() < 60  # still red, in RGB order


def test_bad_images_skip_and_count_or_error(tmp_path):
    _img(tmp_path / "real" / "v" / "good.png")
    (tmp_path / "fake" / "w").mkdir(parents=True)
    (tmp_path / "fake" / "w" / "broken.png").write_bytes(b"not an image at all")
    ds = build_dataset("ImageList", {"root": str(tmp_path), "transforms": NORM})
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape[0] == 1 and batch["bad"][0].endswith("broken.png")
    bad = BadImageLog()
    bad.add(batch["bad"])
    bad.add(batch["bad"])
    assert bad.take_count() == 2 and len(bad.seen) == 1
    strict = build_dataset("ImageList", {"root": str(tmp_path), "transforms": NORM,
                                         "on_bad_image": "error"})
    with pytest.raises(UserError, match="broken.png"):
        strict[1]


def test_augmentation_is_deterministic_per_seed_epoch_index(tmp_path):
    _img(tmp_path / "real" / "v" / "0.png")
    _img(tmp_path / "fake" / "v" / "0.png")
    aug = [{"name": "RandomCrop", "params": {"height": 10, "width": 10}}] + NORM
    ds = build_dataset("ImageList", {"root": str(tmp_path), "transforms": aug}, seed=3)
    first = [ds[i]["image"] for i in range(2)]
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    assert torch.equal(next(iter(loader))["image"], torch.stack(first))
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"], first[0])


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


def test_worker_error_reaches_the_user_as_one_line(tmp_path):
    from errors import one_line
    (tmp_path / "real" / "v").mkdir(parents=True)
    (tmp_path / "real" / "v" / "broken.png").write_bytes(b"junk")
    _img(tmp_path / "fake" / "v" / "0.png")
    ds = build_dataset("ImageList", {"root": str(tmp_path), "transforms": NORM,
                                     "on_bad_image": "error"})
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate)
    with pytest.raises(UserError) as info:
        next(iter(loader))
    line = one_line(info.value)
    assert line.startswith("cannot decode image ") and line.endswith("broken.png")


def test_uint8_hand_over_normalised_in_the_main_process_equals_the_workers_float(demo_root):
    """The trainer's loaders hand uint8 over (4x less to move); to_input normalises as
    albumentations' Normalize would have in the worker, bit for bit."""
    from dataset import build_dataset, collate
    from dataset.base import to_input
    branch = {"root": os.path.join(demo_root, "faceforensics"), "split": "val", "transforms": [
        {"name": "Resize", "params": {"height": 40, "width": 40}},
        {"name": "HorizontalFlip", "params": {"p": 0.5}},
        {"name": "Normalize", "params": {"mean": [0.485, 0.456, 0.406],
                                         "std": [0.229, 0.224, 0.225]}}]}
    u8 = build_dataset("FaceForensics", branch, seed=3, defer_normalize=True)
    f32 = build_dataset("FaceForensics", branch, seed=3)
    batch = collate([u8[i] for i in range(4)])
    assert batch["image"].dtype == torch.uint8 and batch["norm"][2] == 255.0
    x = to_input(batch, "cpu")
    ref = torch.stack([f32[i]["image"] for i in range(4)])
    assert x.dtype == torch.float32 and torch.equal(x, ref)  # bit for bit
    # the constants are made once per device, not per batch (on a GPU each would be a blocking copy)
    made = []
    real_tensor = torch.tensor
    with mock.patch("torch.tensor", side_effect=lambda *a, **k: made.append(a) or
                    real_tensor(*a, **k)):
        assert torch.equal(to_input(batch, "cpu"), ref)
    assert made == []
    # a Normalize that is not the last step, or has other parameters, stays in the workers
    other = dict(branch, transforms=branch["transforms"][::-1])
    assert build_dataset("FaceForensics", other, defer_normalize=True).norm is None


def test_workers_persist_across_epochs_and_augment_by_seed_epoch_index(demo_root):
    """The training sampler hands (epoch, index) to the dataset: persistent workers augment epoch
    e exactly as fresh ones (or the main process) would."""
    from dataset import build_dataset
    from trainer.data import build_loader
    branch = {"root": os.path.join(demo_root, "faceforensics"), "split": "val", "transforms": [
        {"name": "Resize", "params": {"height": 24, "width": 24}},
        {"name": "HorizontalFlip", "params": {"p": 0.5}},
        {"name": "RandomBrightnessContrast", "params": {"p": 1.0}}]}
    ds = build_dataset("FaceForensics", branch, seed=5, defer_normalize=True)
    ds.items = ds.items[:12]
    seen = {}
    for workers in (0, 2):
        loader = build_loader(ds, 4, True, workers, 5, 0, 1)
        assert loader.persistent_workers == (workers > 0)
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                for i, img in zip(batch["index"].tolist(), batch["image"]):
                    seen.setdefault((epoch, i), []).append(img)
    assert len(seen) == 24 and all(len(v) == 2 and torch.equal(*v) for v in seen.values())
    assert any(not torch.equal(seen[(0, i)][0], seen[(1, i)][0]) for i in range(12))
