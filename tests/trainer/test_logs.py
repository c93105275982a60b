"""trainer/logs.py: the console's log lines."""
import io
import logging

from trainer.logs import ConsoleHandler


class Stream(io.StringIO):
    """A stream that, like a pipe, shows only what was flushed."""

    def __init__(self):
        super().__init__()
        self.shown = ""

    def flush(self):
        self.shown = self.getvalue()


def test_each_console_line_is_flushed_at_once():
    stream = Stream()
    handler = ConsoleHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(logging.LogRecord("recce", logging.INFO, __file__, 1, "step 1/10", None, None))
    assert stream.shown == "step 1/10\n"
