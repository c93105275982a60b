import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT

pytest.importorskip("dlib")

from faces.crop import crop_box  # noqa: E402
from faces.video import frame_indices  # noqa: E402
from errors import UserError  # noqa: E402
from faces.extract import extract  # noqa: E402

CANVAS = (560, 720)  # height, width
FRAMES = 8


def _hopper_rgb():
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        bgr = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(cv2.resize(bgr, (256, 300)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A video of a real face photograph moving across the frame, plus a broken one."""
    import dlib
    folder = tmp_path_factory.mktemp("videos")
    face = _hopper_rgb()
    rects = dlib.get_frontal_face_detector()(face, 1)
    assert len(rects) == 1
    r = rects[0]
    box = (r.left(), r.top(), r.right(), r.bottom())
    path = str(folder / "hopper.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (CANVAS[1], CANVAS[0]))
    offsets = []
    for f in range(FRAMES):
        canvas = np.full(CANVAS + (3,), 90, np.uint8)
        oy, ox = 40 + 20 * f, 30 + 50 * f
        canvas[oy:oy + face.shape[0], ox:ox + face.shape[1]] = face
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        offsets.append((ox, oy))
    writer.release()
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return folder, box, offsets


def _decoded_frames(path):
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_extract_with_dlib_crops_contain_the_face(videos, tmp_path):
    folder, box, offsets = videos
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


def test_interrupted_video_is_redone(videos, tmp_path):
    folder, _, _ = videos
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
    assert sorted(os.listdir(out / "hopper")) == [".done", ".manifest.jsonl", "0000.png", "0004.png"]


def test_nothing_of_the_users_is_deleted(videos, tmp_path):
    """Sentinel files: a user's folder named like a video, '.'/'..' lines of a list file, --out
    itself and its parent all survive; a clash of video names is refused before any work."""
    folder, _, _ = videos
    base = tmp_path / "data"
    out = base / "faces"
    (out / "hopper").mkdir(parents=True)
    sentinels = [base / "keep.txt", out / "keep.txt", out / "hopper" / "mine.txt",
                 out / "hopper" / "0000.png"]
    for p in sentinels:
        p.write_text("user data")
    listing = tmp_path / "list.txt"
    listing.write_text(f".\n..\n{out}\n{folder / 'hopper.avi'}\n")
    proc = subprocess.run([sys.executable, "tools/extract_faces.py", "--input", str(listing),
                           "--out", str(out), "--workers", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # failed videos reported, nothing removed
    assert all(p.read_text() == "user data" for p in sentinels)
    assert "was not made by extract_faces" in proc.stderr
    assert not (out / "hopper" / ".done").exists()
    (folder / "hopper.mp4").write_bytes(b"")
    try:
        clash = subprocess.run([sys.executable, "tools/extract_faces.py", "--input", str(folder),
                                "--out", str(tmp_path / "o2")], cwd=ROOT, capture_output=True,
                               text=True, timeout=300)
    finally:
        (folder / "hopper.mp4").unlink()
    assert clash.returncode == 2 and "share the output folder 'hopper'" in clash.stderr
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("args,text", [
    (["--size", "-1"], "--size: expected a size in pixels from 1 to 2048, got -1"),
    (["--size", "4096"], "--size: expected a size in pixels from 1 to 2048, got 4096"),
    (["--frames", "0"], "--frames: expected a number of frames from 1 to 10000000, got 0"),
    (["--frames", "-3"], "--frames: expected a number of frames from 1 to 10000000, got -3"),
    (["--margin", "0"], "--margin: expected a number above 0 and at most 10"),
    (["--margin", "nan"], "--margin: expected a number above 0 and at most 10"),
    (["--margin", "1e6"], "--margin: expected a number above 0 and at most 10"),
    (["--every", "0"], "--every: expected a number of frames from 1 to 10000000, got 0")])
def test_bad_options_are_one_line(tmp_path, capsys, args, text):
    """The bounds of inference.py's flags and the API's keywords (checks.py), one line each."""
    from tools.extract_faces import main
    assert main(["--input", str(tmp_path), "--out", str(tmp_path / "o")] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {text}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    from tools.extract_faces import main
    (tmp_path / "f").write_text("x")
    assert main(["--input", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_library_errors_name_the_flag_they_came_from(tmp_path, capsys):
    """faces.video and faces.manifest speak of their arguments (source, manifest); the command
    line names its own flags instead."""
    from tools.extract_faces import main
    assert main(["--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --input {tmp_path / 'nope'}: no such folder or list file\n"
    assert main(["--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --input {tmp_path}: no videos (.mp4")
    assert main(["--from_manifest", str(tmp_path / "m.jsonl"), "--input", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    manifest = tmp_path / "m.jsonl"
    assert capsys.readouterr().err == f"error: --from_manifest {manifest}: no such file\n"
    assert main(["--input", str(tmp_path), "--out", str(tmp_path / "o"), "--detector", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: --detector: unknown face detector 'x'")


def test_a_folder_of_videos_holds_files_only(tmp_path):
    """Extraction's --input and inference.py's --video read a folder the same way: video files by
    extension in any case, sorted; a subfolder named like a video is not one."""
    from faces.video import list_videos
    for name in ("b.MP4", "a.avi", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "c.mp4").mkdir()
    expected = [str(tmp_path / "a.avi"), str(tmp_path / "b.MP4")]
    assert list_videos(str(tmp_path)) == expected == list_videos(str(tmp_path), list_file=True)
    assert list_videos(expected[1]) == [expected[1]]  # --video: a file is the video
    listed = tmp_path / "list.txt"
    listed.write_text(f"{expected[1]}\n\n{expected[0]}\n")
    assert list_videos(str(listed), list_file=True) == expected  # --input: a file lists videos
    with pytest.raises(UserError, match=r"^source \S+nope: no such folder or list file$"):
        list_videos(str(tmp_path / "nope"), list_file=True)
    with pytest.raises(UserError, match=r"^source \S+nope: no such file or folder$"):
        list_videos(str(tmp_path / "nope"))
    (tmp_path / "a.mp4").write_bytes(b"")
    assert len(list_videos(str(tmp_path))) == 3
    with pytest.raises(UserError, match="a.avi and .*a.mp4 would share the output folder 'a'"):
        list_videos(str(tmp_path), distinct_ids=True)


def test_frame_sampling_and_crop_geometry():
    assert frame_indices(100, 5) == [0, 25, 50, 74, 99]
    assert frame_indices(10, every=3) == [0, 3, 6, 9]
    assert frame_indices(3, 32) == [0, 1, 2]
    assert crop_box((10, 10, 30, 50), 100, 100, 1.3) == (0, 4, 46, 56)  # clipped at the left edge


@pytest.mark.slow
def test_cli_summary_and_missing_weights(videos, tmp_path):
    folder, _, _ = videos
    proc = subprocess.run([sys.executable, "tools/extract_faces.py", "--input", str(folder),
                           "--out", str(tmp_path / "o"), "--frames", "2", "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1  # one video failed
    assert "videos: 1 done, 0 already done, 1 failed; frames written: 2" in proc.stdout
    proc = subprocess.run([sys.executable, "tools/extract_faces.py", "--input", str(folder),
                           "--out", str(tmp_path / "o"), "--detector", "retinaface"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "RetinaFace weights not found" in proc.stderr


def test_jpg_format_writes_jpeg_crops_the_loaders_read(videos, tmp_path):
    from dataset import build_dataset
    folder, _, _ = videos
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


def test_manifest_round_trip_gives_identical_crops(videos, tmp_path, monkeypatch, caplog):
    """extract_faces writes a manifest; --from_manifest re-crops the same PNGs from another copy
    of the video without a detector, and names what it cannot reproduce."""
    import json
    import shutil

    import tools.extract_faces as ef
    folder, _, _ = videos
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
    assert (meta["detector"], meta["margin"], meta["size"], meta["format"]) == ("dlib", 1.3, 64, "png")
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


def test_manifest_never_overwrites_a_users_file_nor_mixes_settings(videos, tmp_path):
    folder, _, _ = videos
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
