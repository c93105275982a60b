"""trainer/checkpoint.py: atomic saves and their temporary files, pruning the best checkpoints,
the run lock."""
import os

import pytest
import torch

from errors import UserError
from helpers import ROOT, intact, sentinels


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
    user = sentinels(tmp_path / "best_model_12.bin.tmp", tmp_path / "notes.txt")
    assert ck.remove_stale_temporaries(str(tmp_path)) == [written[0]]
    assert intact(user) and torch.load(tmp_path / "best_model_12.bin")["step"] == 12


def test_keep_best_prunes_only_its_own_files(tmp_path):
    from trainer.checkpoint import prune_best
    for step in (1, 5, 12, 30):
        (tmp_path / f"best_model_{step}.bin").write_bytes(b"")
    user = sentinels(tmp_path / "best_model_final.bin", tmp_path / "best_model_3.bin.bak")
    assert prune_best(str(tmp_path), 2) == ["best_model_1.bin", "best_model_5.bin"]
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".bin")) == [
        "best_model_12.bin", "best_model_30.bin", "best_model_final.bin"]
    assert intact(user)
    assert prune_best(str(tmp_path), None) == []


@pytest.mark.slow
def test_a_killed_run_s_orphaned_workers_do_not_hold_its_lock(tmp_path):
    """The lock is a POSIX record lock: a child forked while it is held (a DataLoader worker)
    does not hold it, so a run killed with its workers still alive can be resumed at once."""
    from helpers import cli
    from trainer.checkpoint import RunLock
    lock = RunLock(str(tmp_path))
    with pytest.raises(UserError, match="in use by another run \\(this process\\)"):
        RunLock(str(tmp_path))
    script = tmp_path / "take.py"
    script.write_text("import sys\n"
                      f"sys.path.insert(0, {str(ROOT)!r})\n"
                      "from trainer.checkpoint import RunLock\n"
                      "RunLock(sys.argv[1])\n")
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the "worker": outlives the lock's owner, until the test is done
        os.close(done_w)
        os.read(done_r, 1)
        os._exit(0)
    os.close(done_r)
    try:
        holder = cli([str(script), str(tmp_path)])
        assert holder.returncode != 0 and "in use by another run" in holder.stderr
        lock.release()  # the owner goes; its forked child lives on
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
        again = cli([str(script), str(tmp_path)])
        assert again.returncode == 0, again.stderr
    finally:
        os.close(done_w)
        os.waitpid(pid, 0)
