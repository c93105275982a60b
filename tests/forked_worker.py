"""A torchrun worker's stand-in: ``torchrun ... tests/forked_worker.py SCRIPT ARGS...`` runs
``python -u SCRIPT ARGS...`` in a process forked by the tests' fork server (``forkrun``), asked
through the socket named by ``RECCE_TESTS_RELAY``, with this process's environment (torchrun's
RANK, WORLD_SIZE, MASTER_PORT...), working folder, stdout and stderr. The signals this process
gets are passed on to the command's process group (as torchrun signals a worker's group); it ends
as the command ended (its exit status, or killed by the same signal); if the launcher goes (killed
past its time), the command is killed. Without ``RECCE_TESTS_RELAY`` it becomes that command.
Nothing heavy is imported here: the point is a worker that starts at once."""
import json
import os
import signal
import socket
import sys
import threading
import time

from forkrun import kill_group  # standard library only: the stand-in still starts at once

argv = sys.argv[1:]
relay = os.environ.pop("RECCE_TESTS_RELAY", None)
if not relay:
    os.execv(sys.executable, [sys.executable, "-u", *argv])
launcher, child, pending = os.getppid(), None, []


def forward(sig, frame):
    if child is None:
        pending.append(sig)  # passed on once the command has started
    else:
        kill_group(child, sig)


PASSED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
for sig in PASSED:
    signal.signal(sig, forward)
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(relay)
conn.sendall(json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                         "pid": os.getpid()}).encode() + b"\n")
replies = conn.makefile("r", encoding="utf-8")
line = replies.readline()
if not line:
    sys.exit(f"forked_worker: the fork server did not start {' '.join(argv)}")
child = json.loads(line)["pid"]
for sig in pending:
    kill_group(child, sig)


def watch_launcher():
    while os.getppid() == launcher:
        time.sleep(0.5)
    kill_group(child)  # the launcher was killed: so are its workers
    os._exit(1)


threading.Thread(target=watch_launcher, daemon=True).start()
line = replies.readline()
code = json.loads(line)["code"] if line else 1
if code < 0:  # killed by a signal: so is this process
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):  # SIGKILL, SIGSTOP: at their default already
        pass
    os.kill(os.getpid(), -code)
    os._exit(128 - code)
sys.exit(code)
