"""Command-line tools of the project, and the version they write into what they make."""
import os

__version__ = "0.8.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project_version():
    """This project's version: the git commit of the checkout where there is one."""
    import subprocess
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


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
