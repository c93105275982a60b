"""dataset/base.py: reading images (every format as 8-bit RGB, EXIF orientation, a pixel budget
checked before decoding, no noise of OpenCV's own), bad images skipped and counted or an error,
augmentation by seed, epoch and index, and the uint8 hand-over normalised in the main process."""
import os
import subprocess
import sys
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataset import BadImageLog, build_dataset, collate, read_rgb
from errors import UserError
from helpers import NORM, ROOT, image_list_tree, noise_image


def test_pixel_budget_refuses_huge_images_before_decoding(tmp_path):
    from dataset.base import BadImageError
    big = np.zeros((2000, 1500, 3), np.uint8)  # compresses to a few kB
    cv2.imwrite(str(tmp_path / "big.png"), big)
    assert os.path.getsize(tmp_path / "big.png") < 50_000
    with pytest.raises(BadImageError, match="2000 pixels, more than the limit of 1000000"):
        read_rgb(str(tmp_path / "big.png"), max_pixels=1_000_000)
    assert read_rgb(str(tmp_path / "big.png")).shape == (2000, 1500, 3)
    for kind in ("real", "fake"):
        (tmp_path / "d" / kind).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "d" / kind / "big.png"), big)
    ds = build_dataset("ImageList", {"root": str(tmp_path / "d"), "max_pixels": 1_000_000,
                                     "transforms": []})
    assert "max_pixels" in ds[0]["reason"]


@pytest.mark.slow
def test_opencv_prints_nothing_of_its_own_for_a_truncated_file(tmp_path):
    ok, buf = cv2.imencode(".png", np.full((64, 64, 3), 7, np.uint8))
    (tmp_path / "t.png").write_bytes(buf.tobytes()[:200])
    proc = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, sys.argv[1]); from dataset import read_rgb\n"
        "try:\n    read_rgb(sys.argv[2])\nexcept Exception as e:\n    print(e)"),
        str(ROOT), str(tmp_path / "t.png")], capture_output=True, text=True, timeout=120)
    assert "cannot decode image" in proc.stdout
    assert proc.stderr.strip() == ""


def test_random_crop_larger_than_the_image_is_a_bad_image(tmp_path, demo_root):
    root = image_list_tree(demo_root, tmp_path / "d", videos=1, frames=1)
    ds = build_dataset("ImageList", {"root": root, "transforms": [
        {"name": "RandomCrop", "params": {"height": 500, "width": 500}}]})
    sample = ds[0]
    assert "bad" in sample and "cannot transform image" in sample["reason"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_as_cv2_imread_does(tmp_path, orientation):
    from PIL import Image

    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)  # a red block in one corner, a green one in another
    rgb[20:, 35:] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(rgb).save(path, quality=100, exif=exif)
    expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # what the original saw
    got = read_rgb(str(path))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 2
    if orientation in (5, 6, 7, 8):
        assert got.shape[:2] == (50, 30)


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
    noise_image(tmp_path / "real" / "v" / "good.png")
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
    noise_image(tmp_path / "real" / "v" / "0.png")
    noise_image(tmp_path / "fake" / "v" / "0.png")
    aug = [{"name": "RandomCrop", "params": {"height": 10, "width": 10}}] + NORM
    ds = build_dataset("ImageList", {"root": str(tmp_path), "transforms": aug}, seed=3)
    first = [ds[i]["image"] for i in range(2)]
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    assert torch.equal(next(iter(loader))["image"], torch.stack(first))
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["image"], first[0])


def test_worker_error_reaches_the_user_as_one_line(tmp_path):
    from errors import one_line
    (tmp_path / "real" / "v").mkdir(parents=True)
    (tmp_path / "real" / "v" / "broken.png").write_bytes(b"junk")
    noise_image(tmp_path / "fake" / "v" / "0.png")
    ds = build_dataset("ImageList", {"root": str(tmp_path), "transforms": NORM,
                                     "on_bad_image": "error"})
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate)
    batches = iter(loader)
    try:
        next(batches)
        pytest.fail("no error")
    except UserError as e:
        line = one_line(e)
        e.__traceback__ = None  # which holds the iterator in a cycle, freed only by a later
    del batches                 # collection, whose shutdown of the workers waits 5 s
    assert line.startswith("cannot decode image ") and line.endswith("broken.png")


@pytest.mark.slow
def test_uint8_hand_over_normalised_in_the_main_process_equals_the_workers_float(demo_root):
    """The trainer's loaders hand uint8 over (4x less to move); to_input normalises as
    albumentations' Normalize would have in the worker, bit for bit."""
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
