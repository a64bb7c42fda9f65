"""Signal handlers that do their work off the interrupted thread.

A Python signal handler runs in the main thread between two bytecodes, so it may run while
that very thread holds the lock of a ``threading.Event`` or ``Condition`` (it takes the lock
on its way into and out of every ``wait()``, and in ``set()`` and ``clear()``). Setting that
Event from the handler then waits for a lock its own thread holds: the process hangs on
SIGTERM until it is killed. A stop that sets an Event, or wakes a scheduler, is therefore
run by :func:`deferred` on a thread of its own, which takes the lock once the main thread
has let go of it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

Handler = Callable[[int, FrameType | None], None]


def deferred(action: Callable[[int], None]) -> Handler:
    """A signal handler that runs ``action(signum)`` on a new thread."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=action, args=(signum,), name=f"signal-{signum}",
                         daemon=True).start()

    return handler


def on_stop_signals(action: Callable[[int], None],
                    signums: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Run ``action(signum)`` (off the main thread, see :func:`deferred`) on SIGTERM and
    SIGINT. Only the main thread may install handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    handler = deferred(action)
    for signum in signums:
        signal.signal(signum, handler)
