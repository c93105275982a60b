"""Self-blended images (dataset/self_blended.py): the generator, the landmark cache, the pairing in
a batch, workers, frames without landmarks, the trainer on real faces alone, tools/self_blended.py
and the loader benchmark."""
import logging
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from dataset import build_dataset, collate
from dataset import self_blended as sb
from errors import UserError
from helpers import ROOT

SIDE = 48


def _face(seed):
    """A textured picture with a brighter oval 'face' in the middle."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 120, (SIDE, SIDE, 3), np.uint8)
    cv2.ellipse(img, (SIDE // 2, SIDE // 2 + 2), (14, 18), 0, 0, 360,
                tuple(int(v) for v in rng.integers(150, 230, 3)), -1)
    return cv2.GaussianBlur(img, (3, 3), 0)


POINTS = sb.template_landmarks(SIDE)


def _tree(root, reals=6, fakes=4, cached=None, missing=()):
    """An ImageList tree (real/v<k>/<n>.png, fake/...) and its landmark cache: the reals in
    ``cached`` (default: all) get the template's points, those in ``missing`` are recorded as
    faceless."""
    found = {}
    for i in range(reals):
        rel = f"real/v{i // 2}/{i}.png"
        os.makedirs(root / os.path.dirname(rel), exist_ok=True)
        cv2.imwrite(str(root / rel), _face(i))
        if (cached is None or i in cached) and i not in missing:
            found[rel] = POINTS + i % 3
    for i in range(fakes):
        os.makedirs(root / "fake" / "f", exist_ok=True)
        cv2.imwrite(str(root / "fake" / "f" / f"{i}.png"), _face(100 + i))
    sb.write_cache(str(root / sb.DEFAULT_CACHE), found,
                   {f"real/v{i // 2}/{i}.png" for i in missing}, {"predictor": "test"})
    return root


def _branch(root, transforms=(), **extra):
    return {"root": str(root), "self_blended": True, "transforms": list(transforms), **extra}


# ------------------------------------------------------------------------------------ generator
def test_the_generator_is_deterministic_under_a_seed():
    img = _face(0)
    a = sb.generate(img, POINTS, sb.generator(7, 0, 3))
    b = sb.generate(img, POINTS, sb.generator(7, 0, 3))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    others = [sb.generate(img, POINTS, sb.generator(*key))[1] for key in
              ((7, 0, 4), (7, 1, 3), (8, 0, 3))]  # another index, epoch, seed: another blend
    assert all(not np.array_equal(a[1], o) for o in others)
    for crop in sb.CROPS:  # the landmark crop too, and the input is left as it was
        before = img.copy()
        c = sb.generate(img, POINTS, sb.generator(1, 2, 3), crop)
        d = sb.generate(img, POINTS, sb.generator(1, 2, 3), crop)
        assert all(np.array_equal(x, y) for x, y in zip(c, d)) and np.array_equal(img, before)


def test_a_blend_differs_from_its_real_only_inside_the_mask():
    img = _face(1)
    changed = 0
    for seed in range(40):
        real, fake, mask = sb.generate(img, POINTS, np.random.default_rng(seed))
        assert real.shape == fake.shape == img.shape and mask.shape == img.shape[:2]
        assert real.dtype == fake.dtype == np.uint8 and 0 < mask.max() <= 1
        differs = (real != fake).any(axis=2)
        assert not (differs & (mask == 0)).any()  # outside the support: the very same pixels
        changed += differs.sum() > 0.1 * differs.size
        assert mask.max() in {np.float32(r) for r in sb.SBI.ratios}  # the peak: a blend ratio
    assert changed >= 30  # and the blend is visible: most draws change a tenth of the picture
    for seed in range(10):  # the landmark crop: real, fake and mask cut alike
        real, fake, mask = sb.generate(img, POINTS, np.random.default_rng(seed), "landmarks")
        assert real.shape == fake.shape and mask.shape == real.shape[:2]
        assert not ((real != fake).any(axis=2) & (mask == 0)).any()


def test_the_mask_covers_the_landmark_hull():
    img = _face(2)
    hull = sb.hull_mask(img.shape, POINTS).astype(bool)
    inside = cv2.pointPolygonTest(cv2.convexHull(POINTS), (SIDE / 2, SIDE / 2), False)
    assert inside > 0 and hull.sum() > 0.3 * hull.size
    assert all(hull[int(round(y)), int(round(x))] for x, y in POINTS)
    still = sb.BlendSettings(shift=(0, 0), scale=(1, 1), elastic_alpha=0)
    for seed in range(30):  # not moved: the blurred mask reaches every pixel of the hull
        _, _, mask = sb.self_blend(img, POINTS, np.random.default_rng(seed), still)
        assert (mask[hull] > 0).all()
        assert (mask[hull] == mask.max()).mean() > 0.5  # at full strength over most of it
    for seed in range(30):  # moved and deformed as SBI does: still most of the hull
        _, _, mask = sb.self_blend(img, POINTS, np.random.default_rng(seed))
        assert (mask[hull] > 0).mean() > 0.85
    # 81 points: the hull of all of them, or (a quarter of the draws) of the first 68
    forehead = np.concatenate([POINTS, POINTS[:13] * [1, 0.05]])  # 13 points near the top
    tops = {sb.self_blend(img, forehead, np.random.default_rng(s), still)[2][3].max() > 0
            for s in range(40)}
    assert tops == {True, False}
    with pytest.raises(sb.BlendError):
        sb.self_blend(img, np.full((68, 2), -50.0, np.float32), np.random.default_rng(0))


# ---------------------------------------------------------------------------------- data source
def test_labels_and_pairing_in_a_batch(tmp_path):
    root = _tree(tmp_path / "d")
    flip = [{"name": "HorizontalFlip", "params": {"p": 0.5}}]
    ds = build_dataset("ImageList", _branch(root, flip), seed=5)
    assert len(ds) == 6 and ds.frames_per_batch(8) == 4  # the reals only; 8 images = 4 pairs
    with pytest.raises(UserError, match="even number"):
        ds.frames_per_batch(7)
    assert {it.method for it in ds.items[1::2]} == {"self_blended"}
    batch = collate([ds[i] for i in range(4)])
    assert batch["label"].tolist() == [0, 1] * 4
    assert batch["index"].tolist() == list(range(8))
    assert batch["video"][0::2] == [ds.items[2 * i].video for i in range(4)]
    assert batch["video"][1::2] == [v + "#self_blended" for v in batch["video"][0::2]]
    flips = []
    for i in range(4):  # each pair: the frame's own blend, flipped alike (one draw for both)
        img = cv2.cvtColor(cv2.imread(ds.items[2 * i].path), cv2.COLOR_BGR2RGB)
        real, fake, _ = sb.generate(img, ds.points[i], sb.generator(5, 0, i))
        got = [(batch["image"][2 * i + k].permute(1, 2, 0) * 255).round().byte().numpy()
               for k in (0, 1)]
        flipped = not np.array_equal(got[0], real)
        flips.append(flipped)
        want = [x[:, ::-1] if flipped else x for x in (real, fake)]
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert set(flips) == {True, False}  # both cases seen (seed 5)
    # the trainer's evaluation keeps every image: indices are the items' positions
    assert [ds.items[i].label for i in batch["index"].tolist()] == batch["label"].tolist()


def test_a_loader_with_workers_gives_the_same_batches(tmp_path):
    root = _tree(tmp_path / "d", reals=8)
    tf = [{"name": "HorizontalFlip", "params": {"p": 0.5}},
          {"name": "RandomBrightnessContrast", "params": {"p": 0.5}}]
    ds = build_dataset("ImageList", _branch(root, tf), seed=3)

    def batches(workers):
        loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=workers,
                            collate_fn=collate, generator=torch.Generator().manual_seed(0))
        return list(loader)
    alone, pooled = batches(0), batches(2)
    assert len(alone) == len(pooled) == 3
    for a, b in zip(alone, pooled):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["index"].tolist() == b["index"].tolist()


def test_frames_without_landmarks_are_skipped_and_counted(tmp_path, caplog):
    root = _tree(tmp_path / "d", reals=6, cached={0, 1, 2, 3}, missing={3})
    with caplog.at_level(logging.WARNING, logger="recce"):
        ds = build_dataset("ImageList", _branch(root))
    assert len(ds) == 3 and ds.skipped == 3
    assert ds.counts == {"cache": 3, "beside": 0, "no_face": 1, "unprepared": 2, "unreadable": 0}
    assert "3 of 6 real frames have no landmarks" in caplog.text
    assert all(s for i in range(len(ds)) for s in ds[i])  # the rest gives pairs, no crash
    # landmarks that make no mask: that sample is a bad image, skipped by collate and reported
    found, missing, meta = sb.read_cache(str(root / sb.DEFAULT_CACHE))
    found["real/v0/0.png"] = np.full((68, 2), -90.0, np.float32)
    sb.write_cache(str(root / sb.DEFAULT_CACHE), found, missing, meta)
    ds = build_dataset("ImageList", _branch(root))
    batch = collate([ds[i] for i in range(len(ds))])
    assert len(batch["bad"]) == 1 and "cannot self-blend" in batch["bad"][0]
    assert batch["label"].tolist() == [0, 1, 0, 1]
    # none at all: one line saying how to make them
    (root / sb.DEFAULT_CACHE).unlink()
    with pytest.raises(UserError, match="tools/self_blended.py prepare"):
        build_dataset("ImageList", _branch(root))
    # a file of another kind where the cache should be: refused, never read as landmarks
    (root / sb.DEFAULT_CACHE).write_bytes(b"not a cache")
    with pytest.raises(UserError, match="not a landmark cache"):
        build_dataset("ImageList", _branch(root))


def test_deepfakebench_landmark_files_beside_the_frames_are_read(tmp_path):
    """DeepfakeBench's layout (and tools/extract_faces.py --crop deepfakebench): frames/<v>/NNN.png
    with landmarks/<v>/NNN.npy, 81 points with a leading axis as SBI stores them, or 68."""
    for v, shape in (("000", (1, 81, 2)), ("001", (68, 2))):
        for f in range(2):
            os.makedirs(tmp_path / "d" / "real" / "frames" / v, exist_ok=True)
            os.makedirs(tmp_path / "d" / "real" / "landmarks" / v, exist_ok=True)
            cv2.imwrite(str(tmp_path / "d" / "real" / "frames" / v / f"{f:03d}.png"), _face(f))
            pts = np.concatenate([POINTS, POINTS[:13]])[:shape[-2]].reshape(shape)
            np.save(tmp_path / "d" / "real" / "landmarks" / v / f"{f:03d}.npy", pts)
    np.save(tmp_path / "d" / "real" / "landmarks" / "001" / "001.npy", np.zeros((5, 2)))
    os.makedirs(tmp_path / "d" / "fake")
    assert sb.beside("x/frames/v/000.png") == "x/landmarks/v/000.npy"
    assert sb.beside("x/v/000.png") is None
    ds = build_dataset("ImageList", _branch(tmp_path / "d"))
    assert ds.counts["beside"] == 3 and ds.counts["unreadable"] == 1 and len(ds) == 3
    assert sorted(len(p) for p in ds.points) == [68, 81, 81]


def test_branch_keys_are_checked_and_perturbation_is_refused(tmp_path):
    from trainer.config import load_config
    root = _tree(tmp_path / "d")
    with pytest.raises(UserError, match="self_blended_crop"):
        build_dataset("ImageList", _branch(root, self_blended_crop="box"))
    with pytest.raises(UserError, match="distortions"):
        build_dataset("ImageList", _branch(root), perturb=[("GB", 1)])
    os.replace(root / sb.DEFAULT_CACHE, tmp_path / "elsewhere.npz")  # a cache named by the key
    ds = build_dataset("ImageList", _branch(root, self_blended_landmarks=str(
        tmp_path / "elsewhere.npz")))
    assert len(ds) == 6
    bad = {"train_cfg": {**_branch(root), "self_blended_crop": "box", "num_steps": 1,
                         "log_steps": 1, "val_steps": 1}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(bad))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({"model": {"name": "Recce"}, "data": {
        "name": "ImageList", "file": str(tmp_path / "ds.yml")}}))
    with pytest.raises(UserError, match="train_cfg.self_blended_crop"):
        load_config(str(tmp_path / "c.yml"))


# ------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_training_on_real_faces_alone(tmp_path):
    """Each step sees train_batch_size images, half of them blends; validation scores every real
    frame and every blend (the trainer's loader takes half as many frames)."""
    from helpers import write_config
    from trainer.config import load_config
    from trainer.train import Trainer
    root = _tree(tmp_path / "d", reals=8)
    path = write_config(tmp_path, root, steps=2, val_steps=2, batch=4,
                        branch_extra={"self_blended": True})
    ds_file = yaml.safe_load(open(tmp_path / "ds.yml"))
    ds_file["val_cfg"]["self_blended"] = True
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds_file))
    trainer = Trainer(load_config(path))
    assert trainer.train_loader.batch_size == 2 and trainer.val_loader.batch_size == 2
    seen = []
    step = trainer.train_step
    trainer.train_step = lambda b: (seen.append(b["label"].tolist()), step(b))[1]
    result = trainer.fit()
    trainer.close()
    assert seen == [[0, 1, 0, 1], [0, 1, 0, 1]]
    assert result["history"][-1][0] == 2 and os.path.isfile(result["best_checkpoint"])
    log = (tmp_path / "runs" / "Recce" / "t" / "train_rank0.log").read_text()
    assert "8 real frames, each with its self-blended image (4 fake frames" in log


# --------------------------------------------------------------------------- tool and benchmark
@pytest.mark.slow
def test_prepare_writes_the_cache_once_and_records_faceless_frames(tmp_path):
    pytest.importorskip("dlib")
    from faces.landmarks import stand_in_path
    if stand_in_path() is None:
        pytest.skip("no shape predictor (pip install face-recognition-models)")
    import matplotlib.cbook

    from tools.self_blended import main
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    root = tmp_path / "d"
    os.makedirs(root / "real" / "v")
    os.makedirs(root / "fake")
    cv2.imwrite(str(root / "real" / "v" / "0.png"), cv2.resize(hopper[40:360, 90:410], (160, 160)))
    cv2.imwrite(str(root / "real" / "v" / "1.png"), np.full((160, 160, 3), 128, np.uint8))
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"train_cfg": _branch(root)}))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce"}, "data": {"name": "ImageList", "file": str(tmp_path / "ds.yml"),
                                             "train_branch": "train_cfg"}}))
    assert main(["prepare", "--config", str(tmp_path / "c.yml")]) == 0
    found, missing, meta = sb.read_cache(str(root / sb.DEFAULT_CACHE))
    assert list(found) == ["real/v/0.png"] and missing == {"real/v/1.png"}
    assert found["real/v/0.png"].shape == (68, 2) and meta["predictor"]["file"].endswith(".dat")
    stamp = os.stat(root / sb.DEFAULT_CACHE).st_mtime_ns
    assert main(["prepare", "--config", str(tmp_path / "c.yml")]) == 0  # nothing left to do
    assert os.stat(root / sb.DEFAULT_CACHE).st_mtime_ns == stamp
    ds = build_dataset("ImageList", _branch(root))
    assert len(ds) == 1 and ds.counts["no_face"] == 1
    (root / sb.DEFAULT_CACHE).write_text("a file of somebody else's")  # never replaced
    assert main(["prepare", "--config", str(tmp_path / "c.yml"), "--redo"]) == 2
    assert (root / sb.DEFAULT_CACHE).read_text() == "a file of somebody else's"
    (root / sb.DEFAULT_CACHE).unlink()
    assert main(["prepare", "--config", str(tmp_path / "c.yml")]) == 0
    assert main(["figure", "--config", str(tmp_path / "c.yml"), "--out",
                 str(tmp_path / "f.png"), "--pairs", "1"]) == 0
    assert cv2.imread(str(tmp_path / "f.png")) is not None


def test_the_loader_benchmark_measures_both_sources():
    from benchmarks.loader import loader_rates
    r = loader_rates(size=32, batch=4, batches=2, workers=(0,), crop_side=48, repeats=1)
    assert [(row["workers"], row["source"]) for row in r["rows"]] == [(0, "without"),
                                                                      (0, "self_blended")]
    assert all(row["images_per_s"] > 0 for row in r["rows"]) and r["generator_ms_per_pair"] > 0


# --------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["demo_sbi.yml", "paper/sbi_recce.yml",
                                  "paper/sbi_xception.yml"])
def test_the_self_blended_configs_load_with_real_frames_alone(name, monkeypatch):
    from trainer.config import load_config
    monkeypatch.chdir(ROOT)
    cfg = load_config(os.path.join(ROOT, "config", name))
    train, val = cfg["dataset"]["train_cfg"], cfg["dataset"][cfg["data"]["val_branch"]]
    assert train["self_blended"] and val["self_blended"]  # no fake before the test
    assert not cfg["dataset"]["test_cfg"].get("self_blended")
    assert cfg["data"]["train_batch_size"] % 2 == 0


@pytest.mark.slow
def test_the_paper_config_trains_recce_on_the_real_faces_of_ffpp(demo_root, tmp_path):
    """config/paper/sbi_recce.yml as it is (its 299 px, SBI's augmentations, RECCE's loss), on an
    FF++ layout whose landmarks were prepared: a step sees real frames and their blends only."""
    from trainer.config import load_config
    from trainer.train import Trainer
    ff = os.path.join(demo_root, "faceforensics")
    reals = build_dataset("FaceForensics", {"root": ff, "split": "train", "transforms": []})
    cache = str(tmp_path / "landmarks.npz")
    sb.write_cache(cache, {sb.frame_key(it.path, ff): sb.template_landmarks(72)
                           for it in reals.items if it.label == 0}, set(), {"predictor": "t"})
    roots = [f"{b}.root={ff}" for b in ("train_cfg", "val_cfg", "test_cfg")]
    roots.append(f"train_cfg.self_blended_landmarks={cache}")
    cfg = load_config(os.path.join(ROOT, "config", "paper", "sbi_recce.yml"),
                      ["model.pretrained=false", "config.debug=true", "data.num_workers=0",
                       "data.train_batch_size=4"], roots + ["train_cfg.num_steps=1"])
    trainer = Trainer(cfg)
    seen = []
    step = trainer.train_step
    trainer.train_step = lambda b: (seen.append((b["label"].tolist(), tuple(b["image"].shape))),
                                    step(b))[1]
    trainer.fit()
    trainer.close()
    assert seen == [([0, 1, 0, 1], (4, 3, 299, 299))]
    assert len(trainer.train_set) == 840 and {it.method for it in trainer.train_set.items} == {
        "original", "self_blended"}
