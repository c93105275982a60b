"""The DeeperForensics distortions, each checked by a property, not a stored image; determinism;
test.py --perturb and tools/robustness.py on the demo."""
import csv
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

from dataset.perturb import LEVELS, block_positions, distort, parse_spec, perturbation_rng
from errors import UserError


def _face(size=96):
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        bgr = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(cv2.resize(bgr[40:360, 90:410], (size, size)), cv2.COLOR_BGR2RGB)


def _rng():
    return np.random.default_rng(0)


# Hand computations of the published operations (DeeperForensics-1.0, perturbation/
# distortions.py), in plain numpy: OpenCV's float YCrCb formulas, its Gaussian kernel, its
# half-pixel bilinear resize. The project's outputs must match them within one grey level.
SHAPES = [(5, 7), (72, 72), (33, 20)]  # non-square, the 72 px case, odd sides


def noise_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)


def _hand_ycbcr(rgb):
    """published: cv2 float BGR2YCrCb on 0..255 values (chroma offset 0.5), reordered to Y Cb
    Cr, Y*219+16 and C*224+16 over 255."""
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = (r - y) * 0.713 + 0.5
    cb = (b - y) * 0.564 + 0.5
    return np.stack([(y * 219 + 16) / 255, (cb * 224 + 16) / 255, (cr * 224 + 16) / 255], -1)


def _hand_rgb(ycc):
    y = (ycc[..., 0] * 255 - 16) / 219
    cb = (ycc[..., 1] * 255 - 16) / 224 - 0.5
    cr = (ycc[..., 2] * 255 - 16) / 224 - 0.5
    return np.stack([y + 1.403 * cr, y - 0.714 * cr - 0.344 * cb, y + 1.773 * cb], -1)


def _close(out, expected, tol=1):
    assert out.dtype == np.uint8 and out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= tol


@pytest.mark.parametrize("shape", SHAPES)
def test_cs_is_the_published_operation(shape):
    img = noise_image(shape)
    for level, p in enumerate(LEVELS["CS"], 1):
        ycc = _hand_ycbcr(img)
        ycc[..., 1:] = 0.5 + (ycc[..., 1:] - 0.5) * p  # toward 0.5 (neutral is 128/255 there)
        expected = np.trunc(_hand_rgb(ycc))  # astype(uint8): truncation, not rounding
        inside = (expected >= 0) & (expected <= 255)
        out = distort(img, "CS", level, _rng())
        assert np.abs(out.astype(int)[inside] - expected[inside]).max() <= 1
    # a grey pixel at level 5: chroma pulled to 0.5 where neutral is 128/255, then truncated:
    # R = B = 100 - 0.003 -> 99, G = 100 + 0.002 -> 100, the published green cast
    grey = np.full((4, 6, 3), 100, np.uint8)
    assert (distort(grey, "CS", 5, _rng()) == np.array([99, 100, 99], np.uint8)).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_cc_multiplies_and_truncates(shape):
    img = noise_image(shape)
    for level, p in enumerate(LEVELS["CC"], 1):
        _close(distort(img, "CC", level, _rng()), np.floor(img * np.float32(p)), tol=0)


def test_bw_counts_blocks_by_the_published_rule():
    img = np.full((600, 520, 3), 7, np.uint8)  # min side 520: 520 // 256 = 2
    for level, n in enumerate(LEVELS["BW"], 1):
        positions = block_positions(600, 520, level, _rng())
        assert len(positions) == 2 * n
        assert all(0 <= y <= 600 - 9 and 0 <= x <= 520 - 9 for y, x in positions)
        out = distort(img, "BW", level, _rng())
        for y, x in positions:
            assert (out[y:y + 8, x:x + 8] == 128).all()
        assert ((out == 7) | (out == 128)).all()
    for shape in ((72, 72), (255, 900)):  # under 256 on a side: no block at all
        small = np.full(shape + (3,), 7, np.uint8)
        assert (distort(small, "BW", 5, _rng()) == small).all()
        assert (distort(small, "BWF", 5, _rng()) == small).all()  # BWF: BW's earlier name
    assert len(block_positions(299, 299, 5, _rng())) == 80  # 299 // 256 = 1
    crop = np.full((299, 299, 3), 7, np.uint8)  # the project's variant scales the count
    assert len(block_positions(299, 299, 1, _rng(), scaled=True)) == round(299 / 256 * 16)
    assert (distort(crop, "BWS", 1, _rng()) == 128).all(-1).sum() >= 64
    # uniform places: every admissible corner is reachable, none beyond
    ys = [y for _ in range(40) for y, _ in block_positions(266, 266, 5, np.random.default_rng(_))]
    assert min(ys) == 0 and max(ys) == 266 - 9


@pytest.mark.parametrize("shape", SHAPES)
def test_gnc_is_the_published_operation_for_given_noise(shape):
    from dataset.perturb import gaussian_noise_color
    img = noise_image(shape, 1)
    noise = np.random.default_rng(7).standard_normal(img.shape)
    for p in LEVELS["GNC"]:
        ycc = _hand_ycbcr(img) / 255  # YCbCr from RGB here: noise channels Y, Cb, Cr
        expected = np.clip(_hand_rgb((ycc + np.sqrt(p) * noise) * 255), 0, 255).astype(np.uint8)
        _close(gaussian_noise_color(img, p, noise), expected)
    # clipped after the conversion back, not before: a bright image keeps its noise above 255
    white = np.full((64, 64, 3), 250, np.uint8)
    out = distort(white, "GNC", 5, _rng())
    assert (out == 255).mean() > 0.2 and out.std() > 10


def _hand_gaussian_blur(img, k):
    sigma = k / 6
    x = np.arange(k) - (k - 1) / 2
    kern = np.exp(-x ** 2 / (2 * sigma ** 2))
    kern /= kern.sum()
    pad = k // 2
    f = np.pad(img.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    rows = sum(kern[i] * f[i:i + img.shape[0]] for i in range(k))
    return np.rint(sum(kern[i] * rows[:, i:i + img.shape[1]] for i in range(k)))


@pytest.mark.parametrize("shape", [(72, 72), (33, 20)])
def test_gb_is_opencv_s_gaussian_with_sigma_a_sixth_of_the_kernel(shape):
    img = noise_image(shape)
    for level, k in enumerate(LEVELS["GB"], 1):
        if k > min(shape):
            continue
        # OpenCV blurs uint8 with a fixed-point kernel: within 2 of the exact float blur
        _close(distort(img, "GB", level, _rng()), _hand_gaussian_blur(img, k), tol=2)


def _hand_bilinear(img, out_h, out_w):
    """OpenCV's INTER_LINEAR: half-pixel centres, source clamped to the image."""
    h, w = img.shape[:2]

    def axis(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0
    y0, y1, fy = axis(out_h, h)
    x0, x1, fx = axis(out_w, w)
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - fx)[None, :, None] + f[y0][:, x1] * fx[None, :, None]
    bot = f[y1][:, x0] * (1 - fx)[None, :, None] + f[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


@pytest.mark.parametrize("shape", [(72, 72), (33, 20), (12, 10)])
def test_jpeg_is_a_bilinear_resize_down_and_back_up(shape):
    img = noise_image(shape)
    h, w = shape
    for level, n in enumerate(LEVELS["JPEG"], 1):
        small = np.rint(_hand_bilinear(img, h // n, w // n))
        expected = np.rint(_hand_bilinear(small.astype(np.uint8), h, w))
        _close(distort(img, "JPEG", level, _rng()), expected, tol=2)  # 1 per resize
    blocky = distort(noise_image((90, 90)), "JPEGB", 2, _rng())  # the project's variant: blocks
    assert (blocky == np.repeat(np.repeat(blocky[::3, ::3], 3, 0), 3, 1)).all()


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
    assert parse_spec("bwf:2") == ("BW", 2)
    for bad in ("GB", "GB:6", "XX:1"):
        with pytest.raises(UserError, match=f"^perturbation {bad}: "):
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
def test_test_py_perturb_and_the_robustness_grid(tmp_path, demo_root, capsys, make_checkpoint):
    import test as test_py
    from tools.robustness import main as robustness
    ckpt = make_checkpoint(tmp_path / "m.bin")
    tf = [{"name": "Resize", "params": {"height": 32, "width": 32}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"test_cfg": {
        "root": os.path.join(demo_root, "faceforensics"), "split": "test", "method": "Deepfakes",
        "transforms": tf}}))  # one method against as many real videos: a quick test set
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce"},
        "data": {"name": "FaceForensics", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "test_batch_size": 128}}))
    cfg = ["--config", str(tmp_path / "c.yml"), "--ckpt", str(ckpt), "--device", "cpu"]
    assert test_py.main(cfg + ["--perturb", "GB:5", "--out", str(tmp_path / "gb")]) == 0
    assert "perturbed: GB:5" in capsys.readouterr().out
    assert test_py.main(cfg + ["--perturb", "GB:9"]) == 2
    assert "error: --perturb GB:9: the level must be 1 to 5, e.g. GB:3\n" in capsys.readouterr().err
    out = tmp_path / "rob"
    assert robustness(cfg + ["--types", "GB", "CC", "--levels", "1", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| GB |" in text and "| CC |" in text
    assert sorted(f for f in os.listdir(out) if f.startswith("robustness")) == [
        "robustness.csv", "robustness.md", "robustness.png", "robustness_key.json"]
    rows = open(out / "robustness.csv").read().splitlines()
    assert rows[0] == "type,level,frame_AUC,video_AUC,frame_ACC,images" and len(rows) == 6
    assert robustness(cfg + ["--types", "GB", "CC", "--levels", "1", "5", "--out", str(out)]) == 0
    assert "GB:1" not in capsys.readouterr().out  # resumed: nothing run again
    # the same --out with another checkpoint (or test set) is other work: never answered from
    # the old rows
    before = open(out / "robustness.csv").read()
    other = make_checkpoint(tmp_path / "other.bin", seed=1)
    cfg2 = cfg[:2] + ["--ckpt", other] + cfg[4:]
    assert robustness(cfg2 + ["--types", "GB", "--levels", "1", "--out", str(out)]) == 2
    assert "holds rows of other work (checkpoint:" in capsys.readouterr().err
    assert open(out / "robustness.csv").read() == before
    (out / "robustness_key.json").unlink()  # rows whose work is unknown are not taken either
    assert robustness(cfg + ["--types", "GB", "--levels", "1", "--out", str(out)]) == 2
    assert "without a record of the work" in capsys.readouterr().err


def _color_video(path, frames=3, value=(200, 120, 60)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(frames):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    return str(path)


def test_distort_video_follows_the_published_pipeline(tmp_path):
    """Every frame distorted, written as XVID, converted by ffmpeg (the strictly aligned path); VC
    re-encodes the file at its CRF; the frame count is kept."""
    from dataset.perturb import distort_video
    src = _color_video(tmp_path / "in.avi")
    dst = str(tmp_path / "cc.mp4")
    assert distort_video(src, dst, "CC", 5, _rng()) == 3
    cap = cv2.VideoCapture(dst)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    ok, frame = cap.read()
    ok2, source = cv2.VideoCapture(src).read()
    expected = np.floor(source.astype(np.float32) * 0.35)  # CC level 5 on the decoded frame
    assert ok and ok2 and np.abs(frame.mean(axis=(0, 1)) - expected.mean(axis=(0, 1))).max() < 6
    assert frame.mean() < 0.5 * source.mean()  # through an XVID and an H.264 encode
    assert distort_video(src, str(tmp_path / "vc.mp4"), "VC", 1, _rng()) == 3
    assert sorted(os.listdir(tmp_path)) == ["cc.mp4", "in.avi", "vc.mp4"]  # no temporary left
    with pytest.raises(UserError, match="cannot open the video"):
        distort_video(str(tmp_path / "none.mp4"), str(tmp_path / "x.mp4"), "GB", 1, _rng())


@pytest.mark.slow
def test_robustness_frames_protocol_distorts_videos_then_crops(tmp_path, make_checkpoint):
    pytest.importorskip("dlib")
    from helpers import hopper_video
    from tools.robustness import main as robustness
    videos = tmp_path / "videos"
    videos.mkdir()
    rows = ["path,label"]
    for i in range(2):
        hopper_video(videos / f"real{i}.avi", frames=4)
        rows.append(f"videos/real{i}.avi,0")
    for i in range(2):  # a "fake": the same face, colours shifted
        path = hopper_video(videos / f"fake{i}.avi", frames=4)
        cap, frames = cv2.VideoCapture(path), []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (400, 300))
        for f in frames:
            writer.write(np.clip(f.astype(int) + [0, 30, -30], 0, 255).astype(np.uint8))
        writer.release()
        rows.append(f"videos/fake{i}.avi,1")
    (tmp_path / "test_videos.csv").write_text("\n".join(rows) + "\n")
    ckpt = make_checkpoint(tmp_path / "m.bin", config={"model": {"name": "Recce"}}, spec=48)
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"test_cfg": {"root": str(tmp_path)}}))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce"},
        "data": {"name": "ImageList", "file": str(tmp_path / "ds.yml"), "num_workers": 0}}))
    out = tmp_path / "rob"
    args = ["--config", str(tmp_path / "c.yml"), "--ckpt", str(ckpt), "--device", "cpu",
            "--protocol", "frames", "--videos", str(tmp_path / "test_videos.csv"), "--frames", "3",
            "--types", "GB", "VC", "--levels", "1", "--out", str(out)]
    assert robustness(args) == 0
    with open(out / "robustness.csv") as fh:
        got = list(csv.DictReader(fh))
    assert [(r["type"], r["level"]) for r in got] == [("clean", "0"), ("GB", "1"), ("VC", "1")]
    assert all(int(r["images"]) == 12 for r in got)  # 4 videos x 3 frames, cropped alike
    work = out / "frames"
    assert sorted(os.listdir(work / "GB_1" / "videos")) == [
        "fake0.mp4", "fake1.mp4", "real0.mp4", "real1.mp4"]
    clean = sorted(p.relative_to(work / "clean") for p in (work / "clean").rglob("*.png"))
    assert clean == sorted(p.relative_to(work / "VC_1" / "crops")
                           for p in (work / "VC_1" / "crops").rglob("*.png"))
    stamp = os.path.getmtime(work / "GB_1" / "videos" / "real0.mp4")
    assert robustness(args) == 0  # resumed: every row is done, no video distorted again
    assert os.path.getmtime(work / "GB_1" / "videos" / "real0.mp4") == stamp


def test_a_failed_video_distortion_keeps_files_named_like_its_temporary(tmp_path, monkeypatch):
    import dataset.perturb as perturb
    from helpers import intact, sentinels
    src = _color_video(tmp_path / "in.avi")
    user = sentinels(tmp_path / f"cc_tmp{os.getpid()}.avi")

    def broken(*args):
        raise RuntimeError("a distortion failed")
    monkeypatch.setattr(perturb, "distort", broken)
    with pytest.raises(RuntimeError):
        perturb.distort_video(src, str(tmp_path / "cc.mp4"), "CC", 5, _rng())
    assert intact(user)
    assert sorted(os.listdir(tmp_path)) == sorted(["in.avi", os.path.basename(user[0])])
