"""structlog setup: readable on a terminal, JSON lines otherwise (daemons, cron, CI).

Events have stable names (``sms.sent``, ``monitor.rejected``) and carry ids, never message
bodies, tokens or credentials.

While a progress bar is drawn on stderr (``comms job run`` on a terminal), a log line written
straight after it would be glued to the bar's line; :func:`progress_line` tells the loggers a
bar owns the line, so each log line clears it first, starts on a line of its own and lets the
bar draw itself again below.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

#: Erase the line the cursor is on and go back to its start (the bar redraws with ``\r``).
CLEAR_LINE = "\r\x1b[2K"

_lock = threading.RLock()
_bar: dict[str, Any] = {}  # {"file": the bar's stream, "redraw": callable} while one is drawn


@contextmanager
def progress_line(file: TextIO, redraw: Callable[[], None] | None = None) -> Iterator[None]:
    """While this is open, a progress bar owns the current line of ``file``: log lines written
    to that stream clear it first and call ``redraw`` after, so the bar stays whole below."""
    with _lock:
        _bar.update(file=file, redraw=redraw)
    try:
        yield
    finally:
        with _lock:
            _bar.clear()


class BarAwareLogger:
    """structlog's print logger, aware of a progress bar drawn on the same stream."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def msg(self, message: str) -> None:
        out = self._file
        with _lock:
            bar_here = _bar.get("file") is out
            if bar_here:
                out.write(CLEAR_LINE)
            out.write(message + "\n")
            out.flush()
            redraw = _bar.get("redraw") if bar_here else None
            if redraw is not None:
                redraw()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class BarAwareLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> BarAwareLogger:
        return BarAwareLogger(self._file)


def configure_logging(level: str = "info", json: bool | None = None,
                      file: TextIO | None = None) -> None:
    """Log to ``file`` (default: ``sys.stderr`` as it is now)."""
    stream = file if file is not None else sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer = (structlog.processors.JSONRenderer() if json
                else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=BarAwareLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
