"""The one exception type for mistakes a user can make (bad config, missing file, wrong checkpoint).

Entry points catch it and print its message on one line with a non-zero exit instead of a traceback.
"""


class UserError(Exception):
    """A problem with the user's input: the message names the offending key, file or value."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line. An error re-raised from a DataLoader worker carries the
    worker's traceback in its message: keep only its last line, without the class name."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1]
        if ": " in text:
            text = text.split(": ", 1)[1]
    return " ".join(text.split())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that entry points stop the same way."""


def raise_on_sigterm():
    """Make SIGTERM raise ``Terminated`` in the main thread (test.py, inference.py, tools)."""
    import signal

    def handler(signum, frame):
        raise Terminated()
    signal.signal(signal.SIGTERM, handler)


def interrupt_status(exc: BaseException) -> int:
    """The exit status of an interrupted command: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(exc, Terminated) else 130
