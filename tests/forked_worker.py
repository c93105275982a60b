"""A torchrun worker's stand-in: ``torchrun ... tests/forked_worker.py SCRIPT ARGS...`` runs
``python -u SCRIPT ARGS...`` in a process forked by the tests' fork server (``forkrun``), asked
through the socket named by ``RECCE_TESTS_RELAY``, with this process's environment (torchrun's
RANK, WORLD_SIZE, MASTER_PORT...), working folder, stdout and stderr. The signals this process
gets are passed on; it ends as the command ended (its exit status, or killed by the same signal).
Without ``RECCE_TESTS_RELAY`` it becomes that command. Nothing heavy is imported here: the point
is a worker that starts at once."""
import json
import os
import signal
import socket
import sys

argv = sys.argv[1:]
relay = os.environ.pop("RECCE_TESTS_RELAY", None)
if not relay:
    os.execv(sys.executable, [sys.executable, "-u", *argv])
env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # as torchrun's python -u
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(relay)
conn.sendall(json.dumps({"argv": argv, "cwd": os.getcwd(), "env": env,
                         "pid": os.getpid()}).encode() + b"\n")
replies = conn.makefile("r", encoding="utf-8")
line = replies.readline()
if not line:
    sys.exit(f"forked_worker: the fork server did not start {' '.join(argv)}")
child = json.loads(line)["pid"]


def forward(sig, frame):
    try:
        os.kill(child, sig)
    except ProcessLookupError:
        pass


PASSED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
for sig in PASSED:
    signal.signal(sig, forward)
line = replies.readline()
code = json.loads(line)["code"] if line else 1
if code < 0:
    if -code in PASSED:
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
