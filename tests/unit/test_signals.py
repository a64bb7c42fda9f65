"""A stop signal that arrives while the main thread holds an Event's lock does not hang."""

from __future__ import annotations

import signal
import threading

from comms_pipeline.core.signals import on_stop_signals


def test_a_stop_signal_inside_an_events_lock_does_not_deadlock():
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        on_stop_signals(lambda _signum: stop.set())
        # The main thread holds the Event's lock, as it does on its way into and out of
        # every wait(): a handler that set the Event itself would wait for it for ever.
        with stop._cond:  # type: ignore[attr-defined]
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, and returns
            assert not stop.is_set()  # the stop waits for the lock, on its own thread
        assert stop.wait(10)  # a liveness bound: set as soon as the lock was let go
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def test_off_the_main_thread_no_handler_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    worker = threading.Thread(target=on_stop_signals, args=(lambda _signum: None,))
    worker.start()
    worker.join()
    assert signal.getsignal(signal.SIGTERM) is before
