"""Log lines written while `comms job run` draws its progress bar start on a line of their own."""

from __future__ import annotations

import io
import json

import click
import structlog

from comms_pipeline.core.progress_line import progress_line
from comms_pipeline.runtime.logs import configure_logging


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: ``\\r`` returns, ``ESC[2K`` erases the line."""
    raw = raw.replace("\x1b[?25l", "").replace("\x1b[?25h", "")
    lines, line, col = [], [], 0
    i = 0
    while i < len(raw):
        if raw.startswith("\x1b[2K", i):
            line, i = [], i + 4
            continue
        ch = raw[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    lines.append("".join(line).rstrip())
    return lines


def test_a_log_line_during_a_progress_bar_gets_its_own_line():
    term = FakeTerminal()
    configure_logging("info", json=True, file=term)
    try:
        log = structlog.get_logger()
        with click.progressbar(length=10, label="deliver", file=term, show_pos=True) as bar, \
                progress_line(term, bar):
            bar.update(3)
            log.info("test.during_bar", rows=3)
            bar.update(2)
        shown = screen(term.getvalue())
        logged = [line for line in shown if "test.during_bar" in line]
        assert len(logged) == 1
        assert json.loads(logged[0])["event"] == "test.during_bar"  # nothing of the bar on it
        after = shown[shown.index(logged[0]) + 1:]
        assert any(line.startswith("deliver") and "5/10" in line for line in after), shown
    finally:
        configure_logging("info", json=True)


def test_without_a_bar_log_lines_are_written_plainly():
    """No bar (notifications run --no-progress) or a stream that is no terminal: no escapes."""
    term, pipe = FakeTerminal(), io.StringIO()
    for out, bar in ((term, None), (pipe, object())):
        configure_logging("info", json=True, file=out)
        try:
            with progress_line(out, bar):
                structlog.get_logger().info("test.no_bar")
            assert "\x1b" not in out.getvalue()
            assert json.loads(out.getvalue())["event"] == "test.no_bar"
        finally:
            configure_logging("info", json=True)
