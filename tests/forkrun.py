"""Commands run as ``python <script> <args>`` runs them, each in a process of its own, forked
from one process that has imported the heavy libraries once (torch, timm, albumentations, OpenCV):
a command costs its own work instead of the five seconds a fresh interpreter spends importing.

The process that forks has imported libraries and nothing of the project, and runs nothing
itself (no tensor operation; its only threads wait for its children, and a child keeps none of
them), so each child starts as a fresh interpreter would have,
with the project's modules still to import: a plugin registered in one command is unknown to the
next. The child runs the script as ``__main__`` with ``sys.argv``, ``sys.path[0]``, the working
folder, the environment and the standard streams (at the file-descriptor level) of the command,
and ends as the interpreter does: non-daemon threads joined, ``atexit`` handlers run, the exit
code of ``SystemExit`` or 1 with the traceback.

``python -m MODULE`` runs as well (torchrun's launcher), and a process the server did not fork
(a torchrun worker's stand-in, ``tests/forked_worker.py``) asks for its command through a socket
(``ForkServer.relay``).

``RECCE_TESTS_FORK=0`` runs every command in a fresh interpreter instead."""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SERVER = r"""
import json, os, sys
for name in ("torch", "torchvision", "timm", "albumentations", "cv2", "numpy", "scipy.stats",
             "sklearn.metrics", "yaml", "PIL.Image", "matplotlib"):
    try:
        __import__(name)
    except ImportError:
        pass
import atexit, io, runpy, signal, threading, traceback
replies = os.fdopen(os.dup(1), "w", buffering=1)
requests = os.fdopen(os.dup(0), "r")
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)  # nothing but replies reach the pipe
os.close(null)


def run(req):
    os.setpgid(0, 0)  # the test stops a command's workers with it
    for f in (replies, requests):  # the server's pipes are not the command's
        os.close(f.fileno())
    # the streams first: the test's side of each named pipe waits for this side to open
    # (appended to where the streams are another process's: a relayed command's)
    out = os.O_WRONLY | (os.O_APPEND if req.get("append") else os.O_TRUNC)
    for fd, path, flags in ((0, req["stdin"], os.O_RDONLY), (1, req["stdout"], out),
                            (2, req["stderr"], out)):
        if path is None:  # stderr=STDOUT
            os.dup2(1, fd)
        else:
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has them
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    # what a fresh interpreter starts with: random seeds of its own, OMP_NUM_THREADS as read
    # when torch loads
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.default_generator.seed()
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
    # the streams as the interpreter makes them: unbuffered under PYTHONUNBUFFERED (or
    # python -u), stderr line-buffered
    raw = bool(os.environ.get("PYTHONUNBUFFERED")) or bool(req.get("unbuffered"))
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True) if raw \
        else open(1, "w", closefd=False)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                  line_buffering=True, errors="backslashreplace") if raw \
        else open(2, "w", buffering=1, closefd=False, errors="backslashreplace")
    sys.argv = list(req["argv"])
    module = sys.argv[0] == "-m"  # python -m MODULE ARGS: the working folder first on sys.path
    if module:
        sys.argv = sys.argv[1:]
    sys.path[0] = os.getcwd() if module else os.path.dirname(os.path.abspath(sys.argv[0]))
    code, interrupted = 0, False
    try:
        if module:
            runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:  # the traceback from the script's frame on, as Python prints it
        tb, script = e.__traceback__, os.path.abspath(sys.argv[0])
        while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != script:
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb or e.__traceback__)
        code, interrupted = 1, isinstance(e, KeyboardInterrupt)
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        if interrupted:  # as the interpreter ends on an uncaught Ctrl-C: killed by SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        os._exit(code)


lock = threading.Lock()


def reply(**kw):
    with lock:
        replies.write(json.dumps(kw) + "\n")


def waiter(pid, rid):
    _, status = os.waitpid(pid, 0)
    reply(ended=pid, id=rid, code=os.waitstatus_to_exitcode(status))


for line in requests:  # each command forked at once; a thread waits for each
    req = json.loads(line)
    with lock:  # no reply half written in a child's copy of the buffer
        pid = os.fork()
    if pid == 0:
        try:
            run(req)
        finally:
            os._exit(70)
    reply(started=pid, id=req["id"])
    threading.Thread(target=waiter, args=(pid, req["id"]), daemon=True).start()
"""


def kill_group(pid, sig=signal.SIGKILL):
    """``sig`` to process group ``pid`` (a forked command and its workers), or to the command
    alone before it has made its group; nothing if it is gone."""
    for kill in (os.killpg, os.kill):
        try:
            return kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class ForkedProcess:
    """A forked command with ``subprocess.Popen``'s manners (``pid``, ``stdout``, ``poll``,
    ``wait``, ``communicate``, ``send_signal``, ``terminate``, ``kill``, ``returncode``): its
    streams are named pipes of a temporary folder, read as ``Popen(..., text=True)`` reads."""

    def __init__(self, server, argv, cwd, stderr_to_stdout=False, input=None, env=None):
        self.server, self.args = server, ["python"] + list(argv)
        self.tmp = tempfile.TemporaryDirectory()
        paths = {k: os.path.join(self.tmp.name, k) for k in ("stdin", "stdout", "stderr")}
        with open(paths["stdin"], "w", encoding="utf-8") as fh:
            fh.write(input or "")
        os.mkfifo(paths["stdout"])
        if stderr_to_stdout:
            paths["stderr"] = None
        else:
            os.mkfifo(paths["stderr"])
        self.pid, self.id = server.send({"argv": list(argv), "cwd": str(cwd),
                                         "env": dict(os.environ if env is None else env),
                                         **paths})
        self.returncode, self._readers, self._read = None, None, {}
        # opened in the child's order: each open waits for the child's
        self.stdout = open(paths["stdout"], encoding="utf-8", errors="replace")
        self.stderr = None if stderr_to_stdout else \
            open(paths["stderr"], encoding="utf-8", errors="replace")

    def poll(self):
        if self.returncode is None:
            self.returncode = self.server.ended.get(self.id)
        return self.returncode

    def wait(self, timeout=None):
        with self.server.changed:
            if not self.server.changed.wait_for(
                    lambda: self.id in self.server.ended or self.server.dead, timeout):
                raise subprocess.TimeoutExpired(self.args, timeout)
        if self.id not in self.server.ended:
            raise RuntimeError("the fork server stopped")
        return self.poll()

    def communicate(self, input=None, timeout=None):
        """Both streams read to their end, then the exit awaited, all within ``timeout``; called
        again after a timeout, it goes on with the same readers."""
        if self._readers is None:
            self._readers = [
                threading.Thread(target=lambda k=k, s=s: self._read.__setitem__(k, s.read()),
                                 daemon=True)
                for k, s in (("out", self.stdout), ("err", self.stderr)) if s is not None]
            for r in self._readers:
                r.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for r in self._readers:
            r.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if r.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for s in (self.stdout, self.stderr):
            if s is not None:
                s.close()
        self.tmp.cleanup()
        return self._read.get("out"), self._read.get("err")

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def kill_group(self):
        kill_group(self.pid)


class ForkServer:
    """One server process; commands run side by side. A thread reads the server's replies."""

    def __init__(self):
        self.proc = None
        self.used = False
        self.lock = threading.Lock()
        self.changed = threading.Condition()
        self.started, self.ended, self.dead, self.count = {}, {}, False, 0
        self._relay = None

    def start(self):
        """Start the server (its imports then run beside whatever runs meanwhile); the first
        command waits for them."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.dead = False
                self.proc = subprocess.Popen([sys.executable, "-c", SERVER],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             text=True)
                threading.Thread(target=self._read, args=(self.proc.stdout,),
                                 daemon=True).start()

    def _read(self, stream):
        for line in stream:
            msg = json.loads(line)
            with self.changed:
                if "started" in msg:
                    self.started[msg["id"]] = msg["started"]
                else:  # by request: a process number the system reuses names one process
                    self.ended[msg["id"]] = msg["code"]
                self.changed.notify_all()
        with self.changed:
            self.dead = True
            self.changed.notify_all()

    def send(self, request):
        """Send a command; returns (its process id, its request id) once forked."""
        self.start()
        with self.lock:
            self.used = True
            self.count += 1
            request = {**request, "id": self.count}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        with self.changed:
            if not self.changed.wait_for(lambda: request["id"] in self.started or self.dead,
                                         120):
                raise RuntimeError("the fork server does not answer")
            if self.dead:
                raise RuntimeError("the fork server stopped")
            return self.started.pop(request["id"]), request["id"]

    def popen(self, argv, cwd, stderr_to_stdout=False):
        """``subprocess.Popen([python] + argv, cwd=cwd, stdout=PIPE, stderr=PIPE or STDOUT,
        text=True)``, forked."""
        return ForkedProcess(self, argv, cwd, stderr_to_stdout)

    def run(self, argv, cwd, timeout=None, input=None, env=None):
        """``subprocess.run([python] + argv, cwd=cwd, capture_output=True, text=True,
        timeout=timeout, input=input, env=env)``, forked; past its time the command and its
        workers are killed."""
        proc = ForkedProcess(self, argv, cwd, input=input, env=env)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill_group()
            proc.communicate(timeout=60)
            raise subprocess.TimeoutExpired(proc.args, timeout) from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def relay(self):
        """The address (a Unix socket) where a process the server did not fork asks for a
        command forked on its behalf: ``tests/forked_worker.py``, the stand-in that torchrun
        starts for each worker. The command writes to the stand-in's stdout and stderr, the
        stand-in passes on the signals it gets and ends as the command ended; a stand-in killed
        takes its command with it."""
        with self.lock:
            if self._relay is None:
                folder = tempfile.TemporaryDirectory(prefix="forkrun-")
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(os.path.join(folder.name, "relay"))
                sock.listen(64)
                threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
                self._relay = (sock, folder)
            return self._relay[0].getsockname()

    def _accept(self, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._relayed, args=(conn,), daemon=True).start()

    def _relayed(self, conn):
        with conn:
            try:
                req = json.loads(conn.makefile("r", encoding="utf-8").readline())
            except ValueError:  # the stand-in went before it asked
                return
            fds = f"/proc/{req.pop('pid')}/fd"
            try:  # as torchrun runs a worker: python -u
                pid, rid = self.send({**req, "stdin": os.devnull, "stdout": f"{fds}/1",
                                      "stderr": f"{fds}/2", "append": True,
                                      "unbuffered": True})
            except RuntimeError:  # the server is gone: the stand-in says so
                return
            try:
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                while True:
                    with self.changed:
                        if self.changed.wait_for(lambda: rid in self.ended or self.dead, 0.2):
                            break
                    if select.select([conn], [], [], 0)[0] and not conn.recv(1):
                        raise ConnectionResetError  # the stand-in was killed
                conn.sendall(json.dumps({"code": self.ended.get(rid, 1)}).encode() + b"\n")
            except OSError:  # the stand-in is gone: its command goes with it
                kill_group(pid)

    def close(self):
        if self._relay is not None:
            try:
                self._relay[0].shutdown(socket.SHUT_RDWR)  # wakes the thread in accept()
            except OSError:
                pass
            self._relay[0].close()
            self._relay[1].cleanup()
            self._relay = None
        if self.proc is not None and self.proc.poll() is None:
            if not self.used:  # started early and never asked: no need to wait for its imports
                self.proc.kill()
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
            self.proc.stdout.close()


ENABLED = os.environ.get("RECCE_TESTS_FORK", "1") != "0" and hasattr(os, "fork")
SERVER_PROCESS = ForkServer()
