"""Nothing of the user's is ever lost, and nothing hangs (sentinel files, interrupts, bad data)."""
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from errors import UserError
from helpers import image_list_tree, write_config
from trainer.config import load_config


def _sentinels(*paths):
    for p in paths:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as fh:
            fh.write("user data")
    return paths


def _intact(paths):
    return all(open(p).read() == "user data" for p in paths)


# ---------------------------------------------------------------- the demo builder
def test_mistyped_demo_root_deletes_nothing(tmp_path, monkeypatch):
    from dataset import build_dataset
    import train
    user = _sentinels(tmp_path / "ffpp" / "a.txt", tmp_path / "ffpp" / "videos" / "b.mp4")
    branch = {"root": str(tmp_path / "ffpp" / "faceforensicss"), "demo": True, "split": "train"}
    with pytest.raises(UserError, match="refusing to build the demo data into .*ffpp"):
        build_dataset("FaceForensics", branch)
    assert _intact(user) and sorted(os.listdir(tmp_path / "ffpp")) == ["a.txt", "videos"]
    # through train.py: one line, exit 2, nothing touched
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"train_cfg": {**branch, "num_steps": 1,
                                                                   "log_steps": 1, "val_steps": 1}}))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce", "pretrained": False},
        "data": {"name": "FaceForensics", "file": str(tmp_path / "ds.yml"),
                 "val_branch": "train_cfg"},
        "config": {"ckpt_fold": str(tmp_path / "runs")}}))
    assert train.main(["--config", str(tmp_path / "c.yml")]) == 2
    assert _intact(user) and sorted(os.listdir(tmp_path / "ffpp")) == ["a.txt", "videos"]


def test_mistyped_root_beside_complete_demo_is_a_missing_root(demo_root):
    from dataset import build_dataset
    before = sorted(os.listdir(demo_root))
    with pytest.raises(UserError, match="dataset root not found: .*faceforensicss.*celeb_df"):
        build_dataset("FaceForensics", {"root": os.path.join(demo_root, "faceforensicss"),
                                        "demo": True, "split": "train"})
    assert sorted(os.listdir(demo_root)) == before


def test_demo_tool_refuses_a_users_folder(tmp_path, capsys):
    from tools.make_demo_dataset import main
    user = _sentinels(tmp_path / "data" / "ffpp" / "x.png", tmp_path / "data" / "y.txt")
    for out in (tmp_path / "data", tmp_path / "data" / "ffpp"):  # the folder and the one above
        assert main(["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: refusing to build the demo data into") and err.count("\n") == 1
    assert _intact(user)
    assert sorted(os.listdir(tmp_path / "data")) == ["ffpp", "y.txt"]  # no temporary left


@pytest.mark.slow
def test_demo_rebuild_replaces_only_its_own_sets(tmp_path):
    from dataset.demo import DONE_MARKER, make_demo_dataset
    out = tmp_path / "demo"
    make_demo_dataset(str(out))
    user = _sentinels(out / "notes.txt")
    (out / "faceforensics" / "stale.png").write_text("old demo file")
    make_demo_dataset(str(out), seed=1)
    assert _intact(user) and (out / DONE_MARKER).is_file()
    assert not (out / "faceforensics" / "stale.png").exists()
    assert sorted(p for p in os.listdir(tmp_path)) == ["demo"]


# ---------------------------------------------------------------- index files
def test_index_builder_escapes_glob_characters_and_never_empties_an_index(tmp_path):
    from test_dataset import _ff_tree
    from dataset.index import load_pickle_index
    root = tmp_path / "a[1]" / "ff"
    counts, _ = _ff_tree(root)  # a '[' in the path is a character, not a pattern
    assert counts["train"] == (4, 16)
    good = load_pickle_index(str(root / "train_c23.pickle"))
    import shutil
    for sub in ("original_sequences", "manipulated_sequences"):
        shutil.rmtree(root / sub)  # the crops are gone (moved, unmounted, ...)
    from tools.build_index import main
    assert main(["faceforensics", "--root", str(root), "--compression", "c23"]) == 2
    assert load_pickle_index(str(root / "train_c23.pickle")) == good
    assert not [f for f in os.listdir(root) if f.endswith(".tmp")]


# ---------------------------------------------------------------- run directories
def test_run_id_is_one_folder_name(tmp_path, demo_root):
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"))
    for bad in ("../../escaped", "a/b", "..", "."):
        with pytest.raises(UserError, match="config.id: .* must be one folder name"):
            load_config(path, [f"config.id={bad}"])
    assert not (tmp_path / "escaped").exists()


def test_stale_temporaries_removed_user_files_kept(tmp_path, demo_root):
    from trainer.train import Trainer
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"))
    run_dir = tmp_path / "runs" / "Recce" / "t"
    run_dir.mkdir(parents=True)
    stale = (".latest_model.bin.k3x_9q2a.tmp", ".best_model_5.bin.0a1b2c3d.tmp")
    for name in stale:  # fileio.temporary_beside's names, left by a killed atomic_save
        (run_dir / name).write_bytes(b"x" * 100)
    user = _sentinels(run_dir / "notes.tmp1", run_dir / ".latest_model.bin.tmpfoo",
                      run_dir / "latest_model.bin.k3x_9q2a.tmp",  # not hidden: not our name
                      run_dir / ".latest_model.bin.k3x_9q2.tmp",  # 7 characters
                      run_dir / ".best_model_5.bin.0A1B2C3D.tmp",  # mkstemp writes lower case
                      run_dir / ".config.yml.0a1b2c3d.tmp")  # not a checkpoint's
    trainer = Trainer(load_config(path))
    trainer.close()
    names = set(os.listdir(run_dir))
    assert not names & set(stale)
    assert _intact(user)


def test_a_checkpoint_s_temporary_file_is_one_the_cleanup_removes(tmp_path, monkeypatch):
    """atomic_save's temporary file (fileio.temporary_beside) and remove_stale_temporaries agree
    on the name: what a kill mid-write leaves is removed by the next run."""
    import trainer.checkpoint as ck
    written, real_save = [], torch.save

    def save(obj, f, *a, **k):
        written.append(os.path.basename(f))
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(ck.torch, "save", save)
    ck.atomic_save({"step": 12}, str(tmp_path / "best_model_12.bin"))
    assert len(written) == 1 and ck.TMP_PATTERN.fullmatch(written[0])
    assert sorted(os.listdir(tmp_path)) == ["best_model_12.bin"]
    (tmp_path / written[0]).write_bytes(b"half")  # as a kill during torch.save leaves it
    user = _sentinels(tmp_path / "best_model_12.bin.tmp", tmp_path / "notes.txt")
    assert ck.remove_stale_temporaries(str(tmp_path)) == [written[0]]
    assert _intact(user) and torch.load(tmp_path / "best_model_12.bin")["step"] == 12


def test_same_run_twice_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, demo_root):
    from trainer.checkpoint import RunLock
    from trainer.train import Trainer
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"))
    run_dir = tmp_path / "runs" / "Recce" / "t"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from trainer.checkpoint import RunLock; lock = RunLock(sys.argv[2]); print('locked', flush=True);"
        "time.sleep(60)"), str(ROOT), str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="is in use by another run"):
            Trainer(load_config(path))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunLock(str(run_dir)).release()  # the kernel released the killed run's lock
    trainer = Trainer(load_config(path))
    trainer.close()


def test_failed_resume_changes_nothing(tmp_path, demo_root):
    from trainer.train import Trainer
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"),
                        extra={"resume": True})
    run_dir = tmp_path / "runs" / "Recce" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "latest_model.bin").write_bytes(b"not a checkpoint")
    (run_dir / "config.yml").write_text("the run's own config")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        Trainer(load_config(path))
    assert (run_dir / "config.yml").read_text() == "the run's own config"
    assert not [f for f in os.listdir(run_dir) if f.startswith("events")]
    from trainer.checkpoint import RunLock
    RunLock(str(run_dir)).release()  # the run that could not start released its lock


# ---------------------------------------------------------------- images
def test_pixel_budget_refuses_huge_images_before_decoding(tmp_path):
    from dataset import build_dataset, read_rgb
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


# ---------------------------------------------------------------- interrupts
@pytest.mark.slow
@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_training_between_steps(tmp_path, demo_root, sig, status):
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=10_000,
                        val_steps=10_000)
    proc = subprocess.Popen([sys.executable, "train.py", "--config", path], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "step 2/" in line:
            break
    start = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode == status, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at step") and "config.resume=true" in last
    assert "Traceback" not in err
    run_dir = tmp_path / "runs" / "Recce" / "t"
    state = torch.load(run_dir / "latest_model.bin", weights_only=True)
    assert state["step"] >= 2
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


@pytest.mark.slow
def test_ctrl_c_in_inference_prints_one_line_and_writes_no_output(tmp_path, demo_root):
    from model import Recce
    ckpt = tmp_path / "m.bin"
    torch.save({"model": Recce().state_dict()}, ckpt)
    folder = tmp_path / "faces"
    folder.mkdir()
    src = image_list_tree(demo_root, tmp_path / "d", videos=1, frames=1)
    img = os.path.join(src, "real", "v0", os.listdir(os.path.join(src, "real", "v0"))[0])
    for i in range(400):
        os.link(img, folder / f"{i:04d}.png")
    out = tmp_path / "res.csv"
    proc = subprocess.Popen([sys.executable, "inference.py", "-b", str(ckpt), "-f", str(folder),
                             "-s", "64", "-d", "cpu", "--output", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("path: ")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    # a bare state dict: its input spec is said first, then the threshold, then the stop
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "does not say how its images were prepared" in lines[0], repr(err)
    assert lines[1].startswith("threshold: 0.5000 (the default)"), repr(err)
    assert lines[2].startswith("interrupted:"), repr(err)
    assert sorted(os.listdir(tmp_path)) == ["d", "faces", "m.bin"]  # no res.csv, no temporary


# ---------------------------------------------------------------- endless loops
def test_all_unreadable_training_set_stops_with_one_line(tmp_path, demo_root):
    from trainer.train import Trainer
    data = image_list_tree(demo_root, tmp_path / "d", videos=0, corrupt=3)
    trainer = Trainer(load_config(write_config(tmp_path, data, steps=5)))
    start = time.monotonic()
    with pytest.raises(UserError, match=r"ImageList .*whole epoch without a readable image "
                                         r"\(6 bad file"):
        trainer.fit()
    trainer.close()
    assert time.monotonic() - start < 60


def test_consecutive_bad_batches_are_bounded(tmp_path, demo_root, monkeypatch):
    import trainer.train as tt
    monkeypatch.setattr(tt, "MAX_SKIPPED_BATCHES", 3)
    data = image_list_tree(demo_root, tmp_path / "d", videos=0, corrupt=20)
    trainer = tt.Trainer(load_config(write_config(tmp_path, data, steps=5)))
    with pytest.raises(UserError, match="3 batches in a row without a readable image"):
        trainer.fit()
    trainer.close()


def test_one_class_validation_never_makes_a_nan_best(tmp_path, demo_root, capsys):
    import train
    data = image_list_tree(demo_root, tmp_path / "d")
    val = image_list_tree(demo_root, tmp_path / "v")
    import shutil
    shutil.rmtree(os.path.join(val, "fake"))
    os.makedirs(os.path.join(val, "fake"))  # real images only
    path = write_config(tmp_path, data, val, steps=2, val_steps=1)
    assert train.main(["--config", path]) == 0
    out = capsys.readouterr().out
    assert "has real images only: AUC is undefined" in out
    assert "best val AUC: undefined" in out and "best checkpoint: none" in out
    assert "nan" not in out.split("best val AUC")[1]
    assert not [f for f in os.listdir(tmp_path / "runs" / "Recce" / "t") if f.startswith("best_")]


def test_best_checkpoint_ties_and_lower_is_better():
    from trainer.checkpoint_hooks import BestCheckpoint
    best = BestCheckpoint("AUC")
    best.best_metric = 0.8
    assert best.is_better(0.8) and not best.is_better(0.79)
    assert not best.is_better(float("nan"))
    best = BestCheckpoint("LogLoss")
    best.best_metric = 0.3
    assert best.is_better(0.3) and best.is_better(0.2)
    assert not best.is_better(0.31)
    best = BestCheckpoint("Acc")
    assert best.is_better(0.1) and not best.is_better(float("nan"))


# ---------------------------------------------------------------- disk
def test_full_disk_ends_the_run_and_keeps_the_previous_checkpoint(tmp_path, demo_root,
                                                                   monkeypatch):
    import errno

    import trainer.checkpoint as ck
    from trainer.train import Trainer
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=4,
                        val_steps=2)
    trainer = Trainer(load_config(path))
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # best and latest at step 2 succeed; the disk is full at step 4
            with open(f, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(ck.torch, "save", save)
    with pytest.raises(UserError, match="No space left on device; the previous checkpoint is intact"):
        trainer.fit()
    trainer.close()
    run_dir = tmp_path / "runs" / "Recce" / "t"
    monkeypatch.setattr(ck.torch, "save", real_save)
    assert torch.load(run_dir / "latest_model.bin", weights_only=True)["step"] == 2
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


def test_keep_best_prunes_only_its_own_files(tmp_path):
    from trainer.checkpoint import prune_best
    for step in (1, 5, 12, 30):
        (tmp_path / f"best_model_{step}.bin").write_bytes(b"")
    user = _sentinels(tmp_path / "best_model_final.bin", tmp_path / "best_model_3.bin.bak")
    assert prune_best(str(tmp_path), 2) == ["best_model_1.bin", "best_model_5.bin"]
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".bin")) == [
        "best_model_12.bin", "best_model_30.bin", "best_model_final.bin"]
    assert _intact(user)
    assert prune_best(str(tmp_path), None) == []


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
    user = _sentinels(tmp_path / f".model.onnx.tmp{pid}", tmp_path / f"model_tmp{pid}.avi",
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
    assert out.read_text() == "the previous export" and _intact(user)
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
    assert _intact(user) and len(os.listdir(tmp_path)) == 1 + len(user)


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


def test_a_failed_video_distortion_keeps_files_named_like_its_temporary(tmp_path, monkeypatch):
    import dataset.perturb as perturb
    from test_perturb import _color_video, _rng
    src = _color_video(tmp_path / "in.avi")
    user = _sentinels(tmp_path / f"cc_tmp{os.getpid()}.avi")

    def broken(*args):
        raise RuntimeError("a distortion failed")
    monkeypatch.setattr(perturb, "distort", broken)
    with pytest.raises(RuntimeError):
        perturb.distort_video(src, str(tmp_path / "cc.mp4"), "CC", 5, _rng())
    assert _intact(user)
    assert sorted(os.listdir(tmp_path)) == sorted(["in.avi", os.path.basename(user[0])])


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


def test_a_killed_run_s_orphaned_workers_do_not_hold_its_lock(tmp_path):
    """The lock is a POSIX record lock: a child forked while it is held (a DataLoader worker)
    does not hold it, so a run killed with its workers still alive can be resumed at once."""
    from trainer.checkpoint import RunLock
    lock = RunLock(str(tmp_path))
    with pytest.raises(UserError, match="in use by another run \\(this process\\)"):
        RunLock(str(tmp_path))
    pid = os.fork()
    if pid == 0:  # the "worker": outlives the lock's owner for a while
        time.sleep(3)
        os._exit(0)
    try:
        holder = subprocess.run([sys.executable, "-c", (
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from trainer.checkpoint import RunLock; RunLock(sys.argv[2])")
            , str(ROOT), str(tmp_path)], capture_output=True, text=True)
        assert holder.returncode != 0 and "in use by another run" in holder.stderr
        lock.release()  # the owner goes; its forked child lives on
        again = subprocess.run(holder.args, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
    finally:
        os.waitpid(pid, 0)


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


def test_a_stop_reaches_every_child_process_and_waits_for_them(tmp_path):
    """tools.reproduce.run_child (reproduce.py's runner): SIGTERM to the parent reaches the child and the
    grandchild (torchrun's workers), the parent waits for them to finish saving, then exits 143;
    nothing is left running."""
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import signal, sys, time, subprocess\n"
        "name = sys.argv[1]\n"
        "def stop(s, f):\n"
        "    time.sleep(1.0)  # saving\n"
        "    open(sys.argv[2] + '/' + name, 'w').write('saved')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "open(sys.argv[2] + '/ready_' + name, 'w').close()\n"
        "if name == 'launcher':\n"
        "    child = subprocess.Popen([sys.executable, sys.argv[0], 'worker', sys.argv[2]])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from errors import run_cli; from tools.reproduce import run_child;"
        "sys.exit(run_cli(lambda: run_child([sys.executable, sys.argv[2], 'launcher', sys.argv[3]]),"
        " 'interrupted'))"), str(ROOT), str(worker), str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready_worker").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the grandchild has its handler
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 143 and err.strip() == "interrupted"
    assert (tmp_path / "launcher").read_text() == "saved"
    assert (tmp_path / "worker").read_text() == "saved"
    left = subprocess.run(["pgrep", "-f", str(worker)], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_hand_edited_tables_and_manifests_are_one_line(tmp_path):
    from tools.reproduce import read_results
    from tools.robustness import FIELDS, read_rows
    rob = tmp_path / "robustness.csv"
    rob.write_text(",".join(FIELDS) + "\nGB,1,0.9,oops,0.8,10\n")
    with pytest.raises(UserError, match="not a robustness.csv this tool wrote"):
        read_rows(str(rob))
    rob.write_text(",".join(FIELDS) + "\nGB,1,0.9\n")  # cut short
    with pytest.raises(UserError, match="another number of fields"):
        read_rows(str(rob))
    rob.write_bytes(b"\xff\xfe junk")
    with pytest.raises(UserError, match="not a robustness.csv"):
        read_rows(str(rob))
    table = tmp_path / "demo.csv"
    table.write_text("row,ours\nx,1\n")
    with pytest.raises(UserError, match="not a table this tool wrote"):
        read_results(str(table))
    from faces.manifest import read_manifest
    man = tmp_path / "manifest.jsonl"
    man.write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_manifest(str(man))
    man.write_text('{"video": "v", "frame": 9, "frames_total": 4, "crop": [0, 0, 8, 8], '
                   '"file": "v/0009.png"}\n')
    with pytest.raises(UserError, match=r"manifest.jsonl:1: not a manifest line"):
        read_manifest(str(man))  # frame 9 of a 4-frame video
    man.write_text('{"video": "v", "frame": 1, "frames_total": 4, "crop": [0, 0, 8, 8], '
                   '"file": "v/0001.png"}\n')
    (tmp_path / "manifest_meta.json").write_text('{"size": -5, "quality": 95}')
    with pytest.raises(UserError, match="size -5 is not a positive number"):
        read_manifest(str(man))


def test_two_runs_into_one_crops_folder_are_refused(tmp_path):
    from fileio import FolderLock
    lock = FolderLock(str(tmp_path))
    other = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, sys.argv[1]); from fileio import FolderLock;"
        "FolderLock(sys.argv[2])"), str(ROOT), str(tmp_path)], capture_output=True, text=True)
    assert other.returncode != 0 and "is in use by another run" in other.stderr
    lock.release()


def test_retinaface_weights_of_another_kind_are_one_line(tmp_path):
    from faces.detectors.retinaface import RetinaFaceNet, load_retinaface_weights
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError, match="is not RetinaFace weights"):
        load_retinaface_weights(RetinaFaceNet("mobilenet0.25"), str(tmp_path / "list.pth"))
    other = RetinaFaceNet("mobilenet0.25").state_dict()
    k = next(k for k, v in other.items() if v.dim() == 4)
    other[k] = torch.zeros(1, 1, 1, 1)
    torch.save(other, tmp_path / "shape.pth")
    with pytest.raises(UserError, match="does not fit RetinaFace"):
        load_retinaface_weights(RetinaFaceNet("mobilenet0.25"), str(tmp_path / "shape.pth"))


def test_a_run_that_fails_on_its_input_leaves_no_output_folder(tmp_path, capsys):
    import test as test_py
    from model import Recce
    ckpt = tmp_path / "m.bin"
    torch.save({"model": Recce().state_dict()}, ckpt)
    (tmp_path / "ds.yml").write_text(yaml.safe_dump({"test_cfg": {"root": str(tmp_path / "typo")}}))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({"model": {"name": "Recce"}, "data": {
        "name": "ImageList", "file": str(tmp_path / "ds.yml"), "num_workers": 0}}))
    out = tmp_path / "new" / "results"
    assert test_py.main(["--config", str(tmp_path / "c.yml"), "--ckpt", str(ckpt), "--out",
                         str(out), "--device", "cpu"]) == 2
    assert "dataset root not found" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # nothing made in the mistyped place
    (tmp_path / "afile").write_text("x")
    assert test_py.main(["--config", str(tmp_path / "c.yml"), "--ckpt", str(ckpt), "--out",
                         str(tmp_path / "afile" / "sub"), "--device", "cpu"]) == 2
    assert "is a file, not a folder to make it in" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_in_extract_faces_is_one_line_and_stops_its_workers(tmp_path):
    pytest.importorskip("dlib")
    from helpers import hopper_video
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(16):
        hopper_video(videos / f"v{i}.avi", frames=10)
    proc = subprocess.Popen([sys.executable, "tools/extract_faces.py", "--input", str(videos),
                             "--out", str(tmp_path / "out"), "--workers", "2", "--frames", "10"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
