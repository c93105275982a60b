"""The DeeperForensics distortions, each checked by a property, not a stored image; determinism;
test.py --perturb and tools/robustness.py on the demo."""
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

from dataset.perturb import (LEVELS, block_positions, distort, parse_spec, perturbation_rng,
                             rgb_to_ycbcr)
from errors import UserError


def _face(size=96):
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        bgr = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(cv2.resize(bgr[40:360, 90:410], (size, size)), cv2.COLOR_BGR2RGB)


def _rng():
    return np.random.default_rng(0)


def test_cs_lowers_chroma_variance_in_proportion():
    img = _face()
    base = rgb_to_ycbcr(img)[..., 1:].var()
    for level, factor in enumerate(LEVELS["CS"], 1):
        out = rgb_to_ycbcr(distort(img, "CS", level, _rng()))
        assert out[..., 1:].var() == pytest.approx(base * factor ** 2, abs=2e-5 + 0.05 * base * factor ** 2)
        assert abs(out[..., 0].mean() - rgb_to_ycbcr(img)[..., 0].mean()) < 0.01  # luma kept


def test_cc_scales_every_pixel_by_its_factor():
    img = _face()
    for level, factor in enumerate(LEVELS["CC"], 1):
        out = distort(img, "CC", level, _rng())
        assert np.abs(out.astype(float) - img * factor).max() <= 0.5 + 1e-9
        assert out.std() == pytest.approx(img.std() * factor, rel=0.01)


def test_bw_greys_the_stated_number_of_blocks():
    img = np.full((300, 300, 3), 7, np.uint8)
    for level in (1, 5):
        positions = block_positions(300, 300, level, _rng())
        assert len(positions) == round(300 / 256 * LEVELS["BW"][level - 1])
        out = distort(img, "BW", level, _rng())
        for y, x in positions:
            assert (out[y:y + 8, x:x + 8] == 128).all()
        grey = (out == 128).all(-1).sum()
        assert 64 <= grey <= 64 * len(positions) and ((out == 7) | (out == 128)).all()
    small = np.full((96, 96, 3), 7, np.uint8)  # a face crop: the published rule draws nothing
    assert (distort(small, "BWF", 5, _rng()) == small).all()
    assert (distort(small, "BW", 1, _rng()) == 128).all(-1).sum() >= 64


def test_gnc_noise_variance_matches():
    img = np.full((200, 200, 3), 128, np.uint8)
    for level in (2, 4):
        var = LEVELS["GNC"][level - 1]
        diff = rgb_to_ycbcr(distort(img, "GNC", level, _rng()))[..., 0] - rgb_to_ycbcr(img)[..., 0]
        assert diff.var() == pytest.approx(var, rel=0.15)


def test_gb_lowers_high_frequency_energy_monotonically():
    img = _face()
    energy = [np.abs(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F)).mean()]
    for level in range(1, 6):
        energy.append(np.abs(cv2.Laplacian(distort(img, "GB", level, _rng()).astype(np.float32),
                                           cv2.CV_32F)).mean())
    assert all(a > b for a, b in zip(energy, energy[1:]))


def test_pixelation_is_a_down_and_up_resize():
    img = _face(90)
    out = distort(img, "JPEG", 2, _rng())  # level 2: a factor of 3
    down = cv2.resize(img, (30, 30), interpolation=cv2.INTER_AREA)
    assert (out == np.repeat(np.repeat(down, 3, 0), 3, 1)).all()  # each block one value


@pytest.mark.parametrize("kind", ["JQ", "VC"])
def test_compression_decodes_and_differs_more_at_higher_levels(kind):
    img = _face()
    errors = [np.abs(distort(img, kind, lv, _rng()).astype(float) - img).mean() for lv in (1, 3, 5)]
    assert errors[0] > 0 and errors[0] < errors[1] < errors[2]


def test_video_compression_encodes_a_videos_frames_together():
    from dataset.perturb import encode_video
    frames = [np.roll(_face(), s, axis=1) for s in range(6)]
    out = encode_video(frames, 35)
    assert len(out) == 6 and all(o.shape == f.shape for o, f in zip(out, frames))


def test_spec_parsing():
    assert parse_spec("gb:3") == ("GB", 3)
    for bad in ("GB", "GB:6", "XX:1"):
        with pytest.raises(UserError, match="--perturb"):
            parse_spec(bad)


def test_deterministic_per_image_whatever_the_workers(tmp_path, demo_root):
    from torch.utils.data import DataLoader

    from dataset import build_dataset, collate
    ds = build_dataset("FaceForensics", {"root": os.path.join(demo_root, "faceforensics"),
                                         "split": "test", "transforms": []}, seed=3,
                       perturb=[("GNC", 3), ("BW", 2)])
    ds.items = ds.items[:8]
    batches = [torch.cat([b["image"] for b in DataLoader(ds, batch_size=3, num_workers=w,
                                                          collate_fn=collate)])
               for w in (0, 2)]
    assert torch.equal(batches[0], batches[1])
    again = perturbation_rng(3, 5, "GNC", 3).normal(size=4)
    assert (again == perturbation_rng(3, 5, "GNC", 3).normal(size=4)).all()
    assert not (again == perturbation_rng(3, 6, "GNC", 3).normal(size=4)).all()


def test_random_degradation_augmentation_in_a_dataset_yaml(demo_root):
    from dataset import build_dataset
    tf = [{"name": "RandomDegradation", "params": {"types": ["GB", "CC"], "levels": [5], "p": 1.0}}]
    ds = build_dataset("FaceForensics", {"root": os.path.join(demo_root, "faceforensics"),
                                         "split": "val", "transforms": tf})
    clean = build_dataset("FaceForensics", {"root": os.path.join(demo_root, "faceforensics"),
                                            "split": "val", "transforms": []})
    a, b = ds[0]["image"], ds[0]["image"]
    assert torch.equal(a, b) and not torch.equal(a, clean[0]["image"])
    ds.set_epoch(1)
    assert ds[0]["image"].shape == a.shape


@pytest.mark.slow
def test_test_py_perturb_and_the_robustness_grid(tmp_path, demo_root, capsys):
    import test as test_py
    from model import Recce
    from tools.robustness import main as robustness
    ckpt = tmp_path / "m.bin"
    torch.save({"model": Recce().state_dict()}, ckpt)
    tf = [{"name": "Resize", "params": {"height": 32, "width": 32}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"test_cfg": {
        "root": os.path.join(demo_root, "faceforensics"), "split": "test", "transforms": tf}}))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce"},
        "data": {"name": "FaceForensics", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "test_batch_size": 128}}))
    cfg = ["--config", str(tmp_path / "c.yml"), "--ckpt", str(ckpt), "--device", "cpu"]
    assert test_py.main(cfg + ["--perturb", "GB:5", "--out", str(tmp_path / "gb")]) == 0
    assert "perturbed: GB:5" in capsys.readouterr().out
    assert test_py.main(cfg + ["--perturb", "GB:9"]) == 2
    out = tmp_path / "rob"
    assert robustness(cfg + ["--types", "GB", "CC", "--levels", "1", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| GB |" in text and "| CC |" in text
    assert sorted(f for f in os.listdir(out) if f.startswith("robustness")) == [
        "robustness.csv", "robustness.md", "robustness.png"]
    rows = open(out / "robustness.csv").read().splitlines()
    assert rows[0] == "type,level,frame_AUC,video_AUC,frame_ACC,images" and len(rows) == 6
    assert robustness(cfg + ["--types", "GB", "CC", "--levels", "1", "5", "--out", str(out)]) == 0
    assert "GB:1" not in capsys.readouterr().out  # resumed: nothing run again
