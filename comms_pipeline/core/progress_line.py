"""Which stream a progress bar owns the current line of, for the log writer to respect.

``comms job run`` and ``comms notifications run`` draw a click progress bar on stderr; a log
line written while it is drawn would be glued to the bar's line. The command opens
:func:`progress_line` around the bar; the log writer (runtime.logs) asks :func:`write_line`
to clear the bar's line first, write the log line on a line of its own and draw the bar again.
It lives in core so every layer that draws a bar can say so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

#: Erase the line the cursor is on and go back to its start (the bar redraws with ``\r``).
CLEAR_LINE = "\r\x1b[2K"

_lock = threading.RLock()
_active: dict[str, Any] = {}  # {"file": the bar's stream, "bar": the click bar} while drawn


@contextmanager
def progress_line(file: TextIO, bar: Any = None) -> Iterator[None]:
    """While open, ``bar`` (a click progress bar) owns the current line of ``file``. No bar,
    or a stream that is no terminal (click then prints only the label), changes nothing."""
    if bar is None or not file.isatty():
        yield
        return
    with _lock:
        _active.update(file=file, bar=bar)
    try:
        yield
    finally:
        with _lock:
            _active.clear()


def redraw(bar: Any) -> None:
    """Draw a click progress bar again after its line was cleared (click draws a line only
    when it changed, so its memory of the last one is forgotten first)."""
    bar._last_line = None
    bar.render_progress()


def write_line(out: TextIO, message: str) -> None:
    """Write ``message`` and a newline to ``out``, on a fresh line if a bar is drawn there."""
    with _lock:
        bar_here = _active.get("file") is out
        if bar_here:
            out.write(CLEAR_LINE)
        out.write(message + "\n")
        out.flush()
        if bar_here:
            redraw(_active["bar"])
