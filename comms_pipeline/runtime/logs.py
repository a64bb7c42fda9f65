"""structlog setup: readable on a terminal, JSON lines otherwise (daemons, cron, CI).

Events have stable names (``sms.sent``, ``monitor.rejected``) and carry ids, never message
bodies, tokens or credentials.

While a progress bar is drawn on stderr (``comms job run`` on a terminal), a log line written
straight after it would be glued to the bar's line; ``core.progress_line`` tells the loggers a
bar owns the line, so each log line clears it first, starts on a line of its own and the bar
is drawn again below.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from comms_pipeline.core.progress_line import write_line


class BarAwareLogger:
    """structlog's print logger, aware of a progress bar drawn on the same stream."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def msg(self, message: str) -> None:
        write_line(self._file, message)

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
