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
