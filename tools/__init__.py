"""Command-line tools of the project, and helpers they share."""
import os


def sha256_of(path):
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_child(cmd, cwd=None):
    """Run ``cmd`` (train.py, torchrun, test.py) in a process group of its own and wait for it.
    SIGINT and SIGTERM received meanwhile go to the whole group (torchrun and every worker
    alike), which stop the way train.py's own handling expects (after the step, saved); this
    process waits until the child has exited, then re-raises the interruption. Nothing is left
    running. Returns the child's exit status."""
    import signal
    import subprocess

    from errors import Terminated
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
    received = []

    def forward(signum, frame):
        received.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise Terminated() if signal.SIGTERM in received else KeyboardInterrupt()
    return code
