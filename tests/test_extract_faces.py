"""tools/extract_faces.py: its command line (bad options and flags are one line, nothing of the
user's is deleted, the summary, Ctrl-C stops its workers) over videos of a real face."""
import json
import os
import signal
import subprocess
import time

import pytest

from crop_cases import astronaut_frames, astronaut_video
from helpers import cli, popen

pytest.importorskip("dlib")


def test_nothing_of_the_users_is_deleted(moving_face_videos, tmp_path):
    """Sentinel files: a user's folder named like a video, '.'/'..' lines of a list file, --out
    itself and its parent all survive; a clash of video names is refused before any work."""
    folder, _, _ = moving_face_videos
    base = tmp_path / "data"
    out = base / "faces"
    (out / "hopper").mkdir(parents=True)
    sentinels = [base / "keep.txt", out / "keep.txt", out / "hopper" / "mine.txt",
                 out / "hopper" / "0000.png"]
    for p in sentinels:
        p.write_text("user data")
    listing = tmp_path / "list.txt"
    listing.write_text(f".\n..\n{out}\n{folder / 'hopper.avi'}\n")
    proc = cli(["tools/extract_faces.py", "--input", str(listing), "--out", str(out), "--workers",
                "1"], timeout=300)
    assert proc.returncode == 1, proc.stderr  # failed videos reported, nothing removed
    assert all(p.read_text() == "user data" for p in sentinels)
    assert "was not made by extract_faces" in proc.stderr
    assert not (out / "hopper" / ".done").exists()
    (folder / "hopper.mp4").write_bytes(b"")
    try:
        clash = cli(["tools/extract_faces.py", "--input", str(folder), "--out",
                     str(tmp_path / "o2")], timeout=300)
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


@pytest.mark.slow
def test_cli_summary_and_missing_weights(moving_face_videos, tmp_path):
    folder, _, _ = moving_face_videos
    proc = cli(["tools/extract_faces.py", "--input", str(folder), "--out", str(tmp_path / "o"),
                "--frames", "2", "--workers", "2"], timeout=300)
    assert proc.returncode == 1  # one video failed
    assert "videos: 1 done, 0 already done, 1 failed; frames written: 2" in proc.stdout
    proc = cli(["tools/extract_faces.py", "--input", str(folder), "--out", str(tmp_path / "o"),
                "--detector", "retinaface"], timeout=300)
    assert proc.returncode == 2 and "RetinaFace weights not found" in proc.stderr


def test_extract_faces_flags(tmp_path, capsys):
    from tools.extract_faces import main
    videos = tmp_path / "real"
    videos.mkdir()
    astronaut_video(videos / "a.avi", astronaut_frames()[:2], 6)
    out = tmp_path / "out"
    assert main(["--input", str(videos), "--out", str(out), "--frames_real", "3",
                 "--workers", "1"]) == 0
    assert len([n for n in os.listdir(out / "a") if n.endswith(".png")]) == 3
    meta = json.loads((out / "manifest_meta.json").read_text())
    assert meta["crop_rule"] == "box" and meta["frames"].startswith("real 3.0")
    capsys.readouterr()
    for argv, said in ((["--landmarks", "x.dat"], "--landmarks: the box crop rule does not align"),
                       (["--crop", "deepfakebench", "--detector", "retinaface"],
                        "--detector retinaface: the deepfakebench crop rule detects faces with "
                        "dlib"),
                       (["--frames_fake", "0"], "--frames_fake 0.0: expected a number of frames"),
                       (["--frames_real", "5", "--every", "2"], "--frames_real and --every")):
        code = main(["--input", str(videos), "--out", str(tmp_path / "o2")] + argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and said in err[0], (argv, err)


@pytest.mark.slow
def test_ctrl_c_in_extract_faces_is_one_line_and_stops_its_workers(tmp_path):
    pytest.importorskip("dlib")
    from helpers import hopper_video
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(16):
        hopper_video(videos / f"v{i}.avi", frames=10)
    proc = popen(["tools/extract_faces.py", "--input", str(videos), "--out", str(tmp_path / "out"),
                  "--workers", "2", "--frames", "10"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            (tmp_path / "out").glob("*/.extracting")):
        time.sleep(0.05)  # a worker is at work
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-500:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted:")
    left = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True)
    assert str(proc.pid) not in left.stdout
