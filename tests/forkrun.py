"""Commands run as ``python <script> <args>`` runs them, each in a process of its own, forked
from one process that has imported the heavy libraries once (torch, timm, albumentations, OpenCV):
a command costs its own work instead of the five seconds a fresh interpreter spends importing.

The process that forks has imported libraries and nothing of the project, and runs nothing
itself (no tensor operation, no thread), so each child starts as a fresh interpreter would have,
with the project's modules still to import: a plugin registered in one command is unknown to the
next. The child runs the script as ``__main__`` with ``sys.argv``, ``sys.path[0]``, the working
folder, the environment and the standard streams (at the file-descriptor level) of the command,
and ends as the interpreter does: non-daemon threads joined, ``atexit`` handlers run, the exit
code of ``SystemExit`` or 1 with the traceback.

``RECCE_TESTS_FORK=0`` runs every command in a fresh interpreter instead."""
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading

SERVER = r"""
import json, os, sys
for name in ("torch", "torchvision", "timm", "albumentations", "cv2", "numpy", "scipy.stats",
             "sklearn.metrics", "yaml", "PIL.Image", "matplotlib"):
    try:
        __import__(name)
    except ImportError:
        pass
replies = os.fdopen(os.dup(1), "w", buffering=1)
requests = os.fdopen(os.dup(0), "r")
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)  # nothing but replies reach the pipe


def run(req):
    import atexit, runpy, threading, traceback
    os.setpgid(0, 0)  # the test stops a command's workers with it
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    for fd, path, flags in ((0, req["stdin"], os.O_RDONLY),
                            (1, req["stdout"], os.O_WRONLY | os.O_TRUNC),
                            (2, req["stderr"], os.O_WRONLY | os.O_TRUNC)):
        os.dup2(os.open(path, flags), fd)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.argv = list(req["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    code = 0
    try:
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
        code = 1
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


for line in requests:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            run(req)
        finally:
            os._exit(70)
    replies.write(json.dumps({"pid": pid}) + "\n")
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
"""


class ForkServer:
    """One server process; ``run`` is called from one thread at a time (a lock)."""

    def __init__(self):
        self.proc = None
        self.used = False
        self.lock = threading.Lock()

    def start(self):
        """Start the server (its imports then run beside whatever runs meanwhile); the first
        command waits for them."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)

    def _reply(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server stopped")
        return json.loads(line)

    def run(self, argv, cwd, timeout=None, input=None):
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            self.start()
            self.used = True
            paths = {k: os.path.join(tmp, k) for k in ("stdin", "stdout", "stderr")}
            for k, path in paths.items():
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write((input or "") if k == "stdin" else "")
            self.proc.stdin.write(json.dumps({"argv": list(argv), "cwd": str(cwd),
                                              "env": dict(os.environ), **paths}) + "\n")
            self.proc.stdin.flush()
            pid = self._reply(60)["pid"]
            done = self._reply(timeout)
            if done is None:  # as subprocess.run: the command is killed, then the error
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._reply(60)
                raise subprocess.TimeoutExpired(["python"] + list(argv), timeout)

            def read(k):
                with open(paths[k], encoding="utf-8", errors="replace") as fh:
                    return fh.read()
            return subprocess.CompletedProcess(["python"] + list(argv), done["code"],
                                               read("stdout"), read("stderr"))

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            if not self.used:  # started early and never asked: no need to wait for its imports
                self.proc.kill()
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
            self.proc.stdout.close()


ENABLED = os.environ.get("RECCE_TESTS_FORK", "1") != "0" and hasattr(os, "fork")
SERVER_PROCESS = ForkServer()
