"""The one exception type for mistakes a user can make (bad config, missing file, wrong checkpoint).

Entry points catch it and print its message on one line with a non-zero exit instead of a traceback.
"""
from contextlib import contextmanager


class UserError(Exception):
    """A problem with the user's input: the message names the offending key, file or value.

    Library code speaks of values, not of the command line: a message about one of its arguments
    starts with the argument's name, which ``arg`` repeats (``UserError("image_size 3: the model
    needs at least 7", arg="image_size")``); an entry point names its own flag instead
    (``flags``)."""

    def __init__(self, *args, arg=None):
        super().__init__(*args)
        self.arg = arg


@contextmanager
def flags(**names):
    """An entry point around library calls: an error about the argument ``name`` is said to come
    from the flag ``names[name]`` (``with flags(image_size="--image_size"): ...`` turns
    "image_size 3: ..." into "--image_size 3: ..."); every other error passes unchanged."""
    try:
        yield
    except UserError as exc:
        flag, text = names.get(exc.arg), str(exc)
        if flag is None or not text.startswith(exc.arg):
            raise
        raise UserError(flag + text[len(exc.arg):], arg=exc.arg) from None


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


def run_cli(body, interrupted="interrupted"):
    """Run an entry point's ``body()`` and return its exit status (None counts as 0): a UserError
    becomes one ``error:`` line and exit 2, Ctrl-C or SIGTERM the ``interrupted`` line and exit 130
    or 143. Every entry point of the project goes through here."""
    import sys
    raise_on_sigterm()
    try:
        return body() or 0
    except UserError as exc:
        sys.stdout.flush()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        sys.stdout.flush()
        print(interrupted, file=sys.stderr)
        return interrupt_status(exc)
