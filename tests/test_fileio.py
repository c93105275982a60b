"""fileio.py: every write is whole or not at all, with ordinary permissions; a temporary file is
only ever our own; locks and the record of a resumable run's work."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from errors import UserError
from helpers import ROOT, intact, sentinels


def test_atomic_outputs_have_ordinary_permissions(tmp_path):
    from fileio import atomic_write_text
    old = os.umask(0o022)
    try:
        atomic_write_text(str(tmp_path / "a.txt"), "x")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "a.txt").st_mode & 0o777) == 0o644
    assert os.listdir(tmp_path) == ["a.txt"]


def test_path_writers_remove_only_their_own_temporary_file(tmp_path):
    """ONNX, torch.export, ffmpeg and OpenCV write to a path: the temporary file beside the
    target is made exclusively, so the clean-up can only remove that file (earlier releases
    named it by the process id and removed whatever had that name)."""
    from fileio import publish, temporary_beside
    out = tmp_path / "model.onnx"
    out.write_text("the previous export")
    pid = os.getpid()
    user = sentinels(tmp_path / f".model.onnx.tmp{pid}", tmp_path / f"model_tmp{pid}.avi",
                      tmp_path / f"one.tmp{pid}_annotated.mp4", tmp_path / "notes.tmp")
    with pytest.raises(RuntimeError):
        with temporary_beside(str(out)) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and os.path.getsize(tmp) == 0
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("the export failed its check")
    with pytest.raises(RuntimeError):  # a writer that never wrote
        with temporary_beside(str(out), suffix=".mp4") as tmp:
            raise RuntimeError("ffmpeg could not start")
    assert out.read_text() == "the previous export" and intact(user)
    assert sorted(os.listdir(tmp_path)) == sorted([out.name] + [os.path.basename(p) for p in user])
    old = os.umask(0o022)
    try:
        with temporary_beside(str(out), suffix=".mp4") as tmp:
            assert tmp.endswith(".mp4")  # the extension the writer goes by
            with open(tmp, "w") as fh:
                fh.write("new")
            publish(tmp, str(out))
    finally:
        os.umask(old)
    assert out.read_text() == "new" and (os.stat(out).st_mode & 0o777) == 0o644
    assert intact(user) and len(os.listdir(tmp_path)) == 1 + len(user)


def test_pictures_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from fileio import atomic_write_image
    out = tmp_path / "one_annotated.png"
    picture = np.zeros((8, 12, 3), np.uint8)
    picture[:, 6:] = (10, 200, 30)
    atomic_write_image(str(out), picture)
    assert np.array_equal(cv2.imread(str(out)), picture) and os.listdir(tmp_path) == [out.name]

    def interrupted(fh, *a, **k):
        fh.write(b"\x89PNG half")
        raise KeyboardInterrupt
    import fileio
    real = fileio.atomic_write
    monkeypatch.setattr(fileio, "atomic_write",
                        lambda path, write, mode="w": real(path, interrupted, mode))
    with pytest.raises(KeyboardInterrupt):
        atomic_write_image(str(out), picture[:, ::-1])
    assert np.array_equal(cv2.imread(str(out)), picture) and os.listdir(tmp_path) == [out.name]


def test_figures_are_written_whole_or_not_at_all_and_closed(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fileio import atomic_write_figure
    out = tmp_path / "roc.png"
    out.write_bytes(b"the previous figure")
    fig = plt.figure()
    monkeypatch.setattr(fig, "savefig", lambda fh, **k: (fh.write(b"half"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        atomic_write_figure(str(out), fig)
    assert out.read_bytes() == b"the previous figure" and os.listdir(tmp_path) == [out.name]
    assert not plt.fignum_exists(fig.number)  # closed all the same
    fig = plt.figure()
    atomic_write_figure(str(out), fig)
    assert out.read_bytes().startswith(b"\x89PNG") and not plt.fignum_exists(fig.number)


def test_same_work_resumes_only_identical_work(tmp_path):
    from fileio import same_work
    key_path = tmp_path / "k.json"
    same_work(str(key_path), {"checkpoint": {"path": "/a", "size": 1}, "opts": ["x"]}, False, "out")
    same_work(str(key_path), {"checkpoint": {"path": "/a", "size": 1}, "opts": ["x"]}, True, "out")
    with pytest.raises(UserError, match=r"out holds rows of other work \(opts: \['x'\] there"):
        same_work(str(key_path), {"checkpoint": {"path": "/a", "size": 1}, "opts": ["y"]}, True,
                  "out")
    key_path.write_text("{broken")
    with pytest.raises(UserError, match="is not a key this project wrote"):
        same_work(str(key_path), {}, True, "out")
    with pytest.raises(UserError, match="without a record of the work"):
        same_work(str(tmp_path / "none.json"), {}, True, "out")
    assert not (tmp_path / "none.json").exists()


def test_two_runs_into_one_crops_folder_are_refused(tmp_path):
    from fileio import FolderLock
    lock = FolderLock(str(tmp_path))
    other = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, sys.argv[1]); from fileio import FolderLock;"
        "FolderLock(sys.argv[2])"), str(ROOT), str(tmp_path)], capture_output=True, text=True)
    assert other.returncode != 0 and "is in use by another run" in other.stderr
    lock.release()
