"""The server's worker processes (webapp/pool.py), with stand-ins for the processes: a stop ends a
worker still starting at once and waits for one that has started; a worker that died is replaced
at once where it had started, after a pause where it died starting."""
import threading
import types

import pytest

pytest.importorskip("fastapi")

from webapp import pool


class Proc:
    """A worker process's stand-in: it ends when joined (it saw the stop) or terminated."""

    def __init__(self, pid, alive=True, exitcode=None):
        self.pid, self.alive, self.exitcode, self.calls = pid, alive, exitcode, []

    def is_alive(self):
        return self.alive

    def join(self, timeout=None):
        self.calls.append("join")
        self.alive = False

    def terminate(self):
        self.calls.append("terminate")
        self.alive = False


class Store:
    data = "unused"

    def __init__(self):
        self.interrupted = 0

    def interrupt_running(self):
        self.interrupted += 1

    def fail_worker(self, pid, reason):
        return False


def _workers(procs, started):
    w = pool.Workers(Store(), "best_model_1.bin", {}, {}, len(procs))
    w.procs = procs
    for p, s in zip(procs, started):
        w.ready[p.pid] = types.SimpleNamespace(value=int(s))
    return w


def test_a_stop_ends_a_worker_still_starting_at_once():
    loaded, loading = Proc(1), Proc(2)
    w = _workers([loaded, loading], [True, False])
    w.stop()
    assert loaded.calls == ["join"]  # asked through the stop event, and waited for
    assert loading.calls[0] == "terminate"
    assert w.stop_event.is_set() and w.store.interrupted == 1


class Halt:
    """The watch's halt event, recording its waits; set once the watch has started a worker."""

    def __init__(self):
        self.waits, self.done = [], False

    def is_set(self):
        return self.done

    def wait(self, seconds):
        self.waits.append(seconds)


@pytest.mark.parametrize("started,pauses", [(True, []), (False, [pool.RESPAWN_PAUSE])])
def test_a_dead_worker_is_replaced_at_once_unless_it_died_starting(monkeypatch, capsys, started,
                                                                   pauses):
    w = _workers([Proc(1, alive=False, exitcode=-9)], [started])
    w.halt, new = Halt(), Proc(2)

    def spawn():
        w.halt.done = True  # one round of the watch
        return new
    monkeypatch.setattr(w, "_spawn", spawn)
    w._watch()
    assert w.procs == [new] and 1 not in w.ready
    assert w.halt.waits[:-1] == pauses  # then the watch's own poll
    assert "worker 1 stopped (killed by signal 9); starting another" in capsys.readouterr().err


def test_a_stop_waits_for_the_watch_so_no_worker_starts_behind_it():
    w = _workers([], [])
    w.start()
    assert w.thread.is_alive()
    w.stop()
    assert not w.thread.is_alive()


def test_the_worker_says_it_has_started_once_its_model_is_loaded(tmp_path, make_checkpoint,
                                                                 monkeypatch):
    """worker_main as a spawned worker runs it (here in the test's process, already stopped):
    the model loaded, it sets its ready value before it looks for a job."""
    from webapp.store import JobStore
    from webapp.worker import worker_main
    ckpt = make_checkpoint(tmp_path / "best_model_1.bin", config={"model": {"name": "Recce"}},
                           spec=48)
    JobStore(str(tmp_path / "data"))
    monkeypatch.setattr("signal.signal", lambda *a: None)  # the worker's own SIGINT rule
    monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "-8")
    stop, ready = threading.Event(), types.SimpleNamespace(value=0)
    stop.set()
    worker_main(str(tmp_path / "data"), ckpt, {}, {}, None, stop, ready)
    assert ready.value == 1
