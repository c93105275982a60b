"""faces/extract.py: crops of the face in every chosen frame, an interrupted or finished video,
the manifest and its re-crops, JPEG crops, DeepfakeBench's tree and its aligned re-crops, frames
per label; nothing of the user's is overwritten."""
import json
import os

import cv2
import numpy as np
import pytest

from crop_cases import astronaut_frames, astronaut_video
from errors import UserError
from faces.landmarks import stand_in_path
from faces.rules import dfb_frame_indices
from faces.video import frame_indices

pytest.importorskip("dlib")

from faces.extract import extract

FRAMES = 8


def _decoded_frames(path):
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_extract_with_dlib_crops_contain_the_face(moving_face_videos, tmp_path):
    folder, box, offsets = moving_face_videos
    out = tmp_path / "faces"
    summary = extract([str(folder / "hopper.avi"), str(folder / "broken.mp4")], str(out),
                      {"name": "dlib"}, frames=4, progress=False)
    assert summary["done"] == 1 and summary["failed"] == 1 and summary["frames"] == 4
    written = sorted(os.listdir(out / "hopper"))
    assert written == [".done", ".manifest.jsonl"] + [f"{i:04d}.png"
                                                      for i in frame_indices(FRAMES, 4)]
    decoded = _decoded_frames(str(folder / "hopper.avi"))
    for name in written[2:]:
        index = int(name[:4])
        crop = cv2.cvtColor(cv2.imread(str(out / "hopper" / name)), cv2.COLOR_BGR2RGB)
        frame = decoded[index]
        res = cv2.matchTemplate(frame, crop, cv2.TM_SQDIFF)
        _, _, (cx, cy), _ = cv2.minMaxLoc(res)
        ch, cw = crop.shape[:2]
        ox, oy = offsets[index]
        fx1, fy1, fx2, fy2 = box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy
        ix = max(0, min(fx2, cx + cw) - max(fx1, cx))
        iy = max(0, min(fy2, cy + ch) - max(fy1, cy))
        face_area = (fx2 - fx1) * (fy2 - fy1)
        assert ix * iy >= 0.9 * face_area, name
        assert face_area >= 0.25 * cw * ch, name
    # a second run skips the finished video; the broken one is counted again
    again = extract([str(folder / "hopper.avi"), str(folder / "broken.mp4")], str(out),
                    {"name": "dlib"}, frames=4, progress=False)
    assert again["skipped"] == 1 and again["done"] == 0 and again["failed"] == 1


def test_interrupted_video_is_redone(moving_face_videos, tmp_path):
    folder, _, _ = moving_face_videos
    out = tmp_path / "faces"
    (out / "hopper").mkdir(parents=True)
    (out / "hopper" / ".extracting").write_text("")  # this tool's folder, interrupted
    (out / "hopper" / "0000.png").write_bytes(b"half-written")  # no .done marker
    (out / "hopper" / "0008.png").write_bytes(b"a frame of the interrupted run")
    summary = extract([str(folder / "hopper.avi")], str(out), {"name": "dlib"}, every=4,
                      size=64, progress=False)
    assert summary["done"] == 1
    img = cv2.imread(str(out / "hopper" / "0000.png"))
    assert img is not None and img.shape == (64, 64, 3)
    assert sorted(os.listdir(out / "hopper")) == [".done", ".manifest.jsonl", "0000.png",
                                                   "0004.png"]


def test_jpg_format_writes_jpeg_crops_the_loaders_read(moving_face_videos, tmp_path):
    from dataset import build_dataset
    folder, _, _ = moving_face_videos
    out = tmp_path / "faces"
    summary = extract([str(folder / "hopper.avi")], str(out), {"name": "dlib"}, every=4, size=64,
                      progress=False, fmt="jpg", quality=90)
    assert summary["done"] == 1
    files = sorted(f for f in os.listdir(out / "hopper") if not f.startswith("."))
    assert files == ["0000.jpg", "0004.jpg"]
    assert (out / "hopper" / "0000.jpg").read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    (tmp_path / "il" / "real").mkdir(parents=True)
    os.symlink(out / "hopper", tmp_path / "il" / "real" / "hopper")
    (tmp_path / "il" / "fake").mkdir()
    ds = build_dataset("ImageList", {"root": str(tmp_path / "il"), "transforms": []})
    assert len(ds) == 2 and ds[0]["image"].shape == (3, 64, 64)


def _write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (frames[0].shape[1], frames[0].shape[0]))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def test_manifest_round_trip_gives_identical_crops(moving_face_videos, tmp_path, monkeypatch,
                                                   caplog):
    """extract_faces writes a manifest; --from_manifest re-crops the same PNGs from another copy
    of the video without a detector, and names what it cannot reproduce."""
    import shutil

    import tools.extract_faces as ef
    folder, _, _ = moving_face_videos
    first = tmp_path / "a"
    extract([str(folder / "hopper.avi")], str(first), {"name": "dlib"}, frames=4, size=64,
            progress=False)
    lines = [json.loads(line) for line in open(first / "manifest.jsonl")]
    assert sorted(r["frame"] for r in lines) == frame_indices(FRAMES, 4)
    for r in lines:
        assert r["video"] == "hopper" and r["frames_total"] == FRAMES and len(r["box"]) == 4
        assert r["file"] == f"hopper/{r['frame']:04d}.png" and r["score"] > 0
        x1, y1, x2, y2 = r["crop"]
        assert abs((x2 - x1) - (y2 - y1)) <= 1 and x2 > x1  # the square (rounded to pixels)
    meta = json.load(open(first / "manifest_meta.json"))
    assert (meta["detector"], meta["margin"], meta["size"], meta["format"]) == \
        ("dlib", 1.3, 64, "png")
    assert meta["opencv_version"] == cv2.__version__ and meta["frames"] == "4 evenly spaced"

    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(folder / "hopper.avi", mine / "hopper.avi")
    import faces.extract as fe
    for name in ("_init_worker", "_init_detector"):  # no detector is built to re-crop
        monkeypatch.setattr(fe, name, lambda *a: (_ for _ in ()).throw(AssertionError))
    second = tmp_path / "b"
    assert ef.main(["--from_manifest", str(first / "manifest.jsonl"), "--input", str(mine),
                    "--out", str(second), "--workers", "1"]) == 0
    for r in lines:
        assert (second / r["file"]).read_bytes() == (first / r["file"]).read_bytes()
    assert (second / "manifest.jsonl").read_text() == (first / "manifest.jsonl").read_text()

    # a copy with another frame count, and a missing video: reported, nothing written for them
    other = tmp_path / "other"
    other.mkdir()
    _write_video(other / "hopper.avi", _decoded_frames(str(folder / "hopper.avi"))[:6])
    assert ef.main(["--from_manifest", str(first / "manifest.jsonl"), "--input", str(other),
                    "--out", str(tmp_path / "c"), "--workers", "1"]) == 1
    assert "frame count differs: 6 here, 8 in the manifest" in caplog.text
    assert not (tmp_path / "c" / "hopper").exists()
    (tmp_path / "none").mkdir()
    assert ef.main(["--from_manifest", str(first / "manifest.jsonl"), "--input",
                    str(tmp_path / "none"), "--out", str(tmp_path / "d"), "--workers", "1"]) == 1
    assert "video missing from the source videos" in caplog.text
    # a line that would write outside its video's folder is refused, naming the line
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(dict(lines[0], file="hopper/../../evil.png")) + "\n")
    assert ef.main(["--from_manifest", str(bad), "--input", str(mine), "--out",
                    str(tmp_path / "e")]) == 2
    assert not (tmp_path / "e").exists() and not (tmp_path / "evil.png").exists()


def test_manifest_never_overwrites_a_users_file_nor_mixes_settings(moving_face_videos, tmp_path):
    folder, _, _ = moving_face_videos
    out = tmp_path / "faces"
    out.mkdir()
    (out / "manifest.jsonl").write_text("my notes\n")
    with pytest.raises(Exception, match="did not write"):
        extract([str(folder / "hopper.avi")], str(out), {"name": "dlib"}, frames=2,
                progress=False)
    assert (out / "manifest.jsonl").read_text() == "my notes\n"
    assert not (out / "hopper").exists()
    good = tmp_path / "good"
    extract([str(folder / "hopper.avi")], str(good), {"name": "dlib"}, frames=2, progress=False)
    with pytest.raises(Exception, match="margin"):
        extract([str(folder / "hopper.avi")], str(good), {"name": "dlib"}, frames=2, margin=1.5,
                progress=False)


# -- DeepfakeBench's tree -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dfb_tree(tmp_path_factory):
    """Two videos extracted with --crop deepfakebench into a DeepfakeBench-shaped tree."""
    if stand_in_path() is None:
        pytest.skip("pip install face-recognition-models")
    root = tmp_path_factory.mktemp("dfb")
    videos = root / "FaceForensics++" / "original_sequences" / "youtube" / "c23" / "videos"
    videos.mkdir(parents=True)
    frames = astronaut_frames()
    paths = [astronaut_video(videos / "000.avi", frames, 12),
             astronaut_video(videos / "001.avi", frames[::-1], 9)]
    out = videos.parent
    summary = extract(paths, str(out), {"name": "dlib"}, frames=8, workers=1, progress=False,
                      rule="deepfakebench")
    return root, out, paths, summary


@pytest.mark.slow
def test_deepfakebench_tree_and_markers_outside_frame_folders(dfb_tree):
    root, out, paths, summary = dfb_tree
    assert summary["done"] == 2 and summary["failed"] == 0 and summary["frames"] > 0
    for vid, total in (("000", 12), ("001", 9)):
        names = sorted(os.listdir(out / "frames" / vid))
        wanted = [f"{i:03d}.png" for i in dfb_frame_indices(total, 8)]
        assert set(names) <= set(wanted) and names  # frames dropped only where no face is found
        marks = sorted(os.listdir(out / "landmarks" / vid))
        assert marks == [n.replace(".png", ".npy") for n in names]
        points = np.load(out / "landmarks" / vid / marks[0], allow_pickle=False)
        assert points.shape == (68, 2) and points.dtype.kind == "i"
        assert cv2.imread(str(out / "frames" / vid / names[0])).shape == (256, 256, 3)
        assert os.path.isfile(out / ".extract" / vid / ".done")
    meta = json.loads((out / "manifest_meta.json").read_text())
    assert meta["crop_rule"] == "deepfakebench" and meta["layout"] == "deepfakebench"
    assert meta["landmarks"]["file"] == "shape_predictor_68_face_landmarks.dat"
    assert len(meta["landmarks"]["sha256"]) == 64
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(r["file"].startswith(f"frames/{r['video']}/") and len(r["warp"]) == 2
               and r["crop"] is None for r in lines)


def test_deepfakebench_rearrange_and_loader_read_the_tree(dfb_tree, tmp_path):
    """DeepfakeBench's rearrange.py takes every file of a video's frame folder for a frame, and
    its loader orders them by int(name up to the first dot): every name parses; the project's
    DeepfakeBench reader reads the JSON so made."""
    from dataset import build_dataset
    from dataset.face_crop import face_crop_of
    root, out, _, _ = dfb_tree
    videos = {}
    for entry in os.scandir(out / "frames"):  # rearrange.py's listing
        if entry.is_dir():
            files = [os.path.join(entry.path, f.name) for f in os.scandir(entry.path)]
            assert all(int(os.path.basename(f).split(".")[0]) >= 0 for f in files)
            rel = ["./datasets/" + os.path.relpath(f, root).replace(os.sep, "/") for f in files]
            videos[entry.name] = {"label": "FF-real", "frames": rel}
    assert set(videos) == {"000", "001"}
    data = {"FaceForensics++": {"FF-real": {"train": {"c23": videos}}}}
    folder = tmp_path / "json"
    folder.mkdir()
    (folder / "FaceForensics++.json").write_text(json.dumps(data))
    ds = build_dataset("DeepfakeBench", {"dataset_json_folder": str(folder), "root": str(root),
                                         "dataset": "FaceForensics++", "split": "train",
                                         "frame_num": 32, "transforms": []})
    assert len(ds) == sum(len(v["frames"]) for v in videos.values())
    assert ds[0]["image"].shape[-2:] == (256, 256)
    assert face_crop_of(ds.items, "DeepfakeBench") == "deepfakebench"


def test_recrop_reproduces_aligned_crops(dfb_tree, tmp_path):
    from faces.extract import recrop
    root, out, paths, _ = dfb_tree
    again = tmp_path / "again"
    s = recrop(str(out / "manifest.jsonl"), os.path.dirname(paths[0]), str(again),
               progress=False)
    assert s["failed"] == 0 and s["not_reproduced"] == 0
    for vid in ("000", "001"):
        for name in os.listdir(out / "frames" / vid):
            assert (again / "frames" / vid / name).read_bytes() == \
                (out / "frames" / vid / name).read_bytes()


def test_an_interrupted_deepfakebench_video_loses_only_its_own_files(tmp_path):
    """Redoing an interrupted video removes its frame and landmark files, nothing else; a frame
    folder that the tool did not claim is refused, untouched."""
    from faces.extract import _claim
    out = tmp_path / "c23"
    for folder, names in (("frames/v", ["000.png", "013.png", "notes.txt"]),
                          ("landmarks/v", ["000.npy", "keep.txt"]), (".extract/v", [".extracting"]),
                          ("frames/w", ["000.png"])):
        (out / folder).mkdir(parents=True)
        for name in names:
            (out / folder / name).write_text("sentinel")
    assert _claim(str(out), "v", "deepfakebench") is None
    assert sorted(os.listdir(out / "frames" / "v")) == ["notes.txt"]
    assert sorted(os.listdir(out / "landmarks" / "v")) == ["keep.txt"]
    problem = _claim(str(out), "w", "deepfakebench")
    assert "was not made by extract_faces" in problem
    assert (out / "frames" / "w" / "000.png").read_text() == "sentinel"
    assert not (out / ".extract" / "w").exists()


def test_frames_per_label_balance_the_authors_way(tmp_path):
    """12.5 frames per fake video and 50 per real one: 2,880 fakes and 720 reals give 36,000
    frames of each, as the original authors trained."""
    from faces.extract import frames_for, label_of, per_label_frames
    assert [frames_for(12.5, i) for i in range(4)] == [12, 13, 12, 13]
    ff = tmp_path / "FF"
    reals = [str(ff / "original_sequences" / "youtube" / "c23" / "videos" / f"{i:03d}.mp4")
             for i in range(720)]
    fakes = [str(ff / "manipulated_sequences" / m / "c23" / "videos" / f"{i:03d}_{i + 1:03d}.mp4")
             for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures") for i in range(720)]
    counts = per_label_frames(reals + fakes, 20, frames_real=50, frames_fake=12.5)
    assert sum(counts[:720]) == 36000 and sum(counts[720:]) == 36000
    assert label_of(str(tmp_path / "Celeb-DF-v2" / "Celeb-synthesis" / "id0_id1_0000.mp4")) \
        == "fake"
    assert label_of(str(tmp_path / "Celeb-DF-v2" / "YouTube-real" / "00000.mp4")) == "real"
    with pytest.raises(UserError, match="cannot tell whether .*clip.mp4 is real or fake"):
        per_label_frames([str(tmp_path / "mine" / "clip.mp4")], 20, frames_real=50)
