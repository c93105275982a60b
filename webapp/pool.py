"""The worker processes of the server and the thread that watches them: a worker that dies (killed,
out of memory) fails the job it held with the reason, and a new worker takes its place: at once
where it had started, after ``RESPAWN_PAUSE`` where it died starting (a worker that cannot load its
model is not restarted in a tight loop). At a stop, a worker still starting holds no job: it is
ended at once rather than waited for."""
import multiprocessing
import os
import sys
import threading

from .worker import worker_main

RESPAWN_PAUSE = 2.0  # seconds before a worker that died starting is replaced


class Workers:
    """``count`` worker processes (spawned: a fresh interpreter, the model loaded once in each)."""

    def __init__(self, store, checkpoint, options, model_info, count=1):
        self.store, self.checkpoint = store, checkpoint
        self.options, self.model_info, self.count = options, model_info, count
        self.ctx = multiprocessing.get_context("spawn")
        self.stop_event = self.ctx.Event()
        self.procs = []
        # process id -> a shared byte the worker sets to 1 once it has started (no lock: a worker
        # killed while setting it cannot leave one held)
        self.ready = {}
        self.halt = threading.Event()  # set by stop: the watch ends, a pause is cut short
        self.thread = None

    def _spawn(self):
        ready = self.ctx.RawValue("b", 0)
        p = self.ctx.Process(target=worker_main, daemon=True, name="recce-worker",
                             args=(self.store.data, self.checkpoint, self.options,
                                   self.model_info, os.getpid(), self.stop_event, ready))
        p.start()
        self.ready[p.pid] = ready
        return p

    def started(self, p):
        """Whether worker ``p`` has loaded what it needs and may hold a job."""
        ready = self.ready.get(p.pid)
        return ready is None or bool(ready.value)

    def start(self):
        self.procs = [self._spawn() for _ in range(self.count)]
        self.thread = threading.Thread(target=self._watch, daemon=True, name="recce-watch")
        self.thread.start()
        return self

    def alive(self):
        return sum(p.is_alive() for p in self.procs)

    def _watch(self):
        while not self.halt.is_set():
            for k, p in enumerate(self.procs):
                if p.is_alive() or self.halt.is_set():
                    continue
                code = p.exitcode
                how = f"killed by signal {-code}" if code and code < 0 else f"exit status {code}"
                failed = self.store.fail_worker(p.pid, f"the worker process stopped ({how}); "
                                                       "the server goes on")
                print(f"worker {p.pid} stopped ({how})"
                      + ("; its job failed" if failed else "") + "; starting another",
                      file=sys.stderr, flush=True)
                if not self.started(p):
                    self.halt.wait(RESPAWN_PAUSE)
                self.ready.pop(p.pid, None)
                if not self.halt.is_set():
                    self.procs[k] = self._spawn()
            self.halt.wait(0.3)

    def stop(self, timeout=5.0):
        self.halt.set()
        self.stop_event.set()
        if self.thread is not None:  # no worker started behind this loop's back
            self.thread.join(10)
        for p in self.procs:
            if not self.started(p):  # still starting (stop_event is set: it claims no job)
                p.terminate()  # our own worker, by its handle
            p.join(timeout)
            if p.is_alive():
                p.terminate()  # our own worker, by its handle
                p.join(2)
        # a job stopped with the server is interrupted (run again from the page), now rather than
        # at the next start
        self.store.interrupt_running()
