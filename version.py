"""This project's version, written into what it makes (exported models, face-crop manifests)."""
import os

__version__ = "0.8.0"
ROOT = os.path.dirname(os.path.abspath(__file__))


def project_version():
    """This project's version: the git commit of the checkout where there is one."""
    import subprocess
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__
