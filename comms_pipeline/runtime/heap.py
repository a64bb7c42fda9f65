"""The heap of a long-running worker, settled once it has started.

A daemon builds its settings, engine, gateways and templates once and keeps them for hours.
Python's cyclic collector would still walk all of them at every full collection: in the email
daemon's profile that was about a tenth of the run (``bench/email_daemon.py``). After start-up
the heap is collected once and what survives is frozen (:func:`gc.freeze`, the technique
CPython documents for pre-fork servers): later collections only look at what the work itself
allocates. Frozen objects are never freed, so this is done once per process, after start-up.
"""

from __future__ import annotations

import gc

_settled = False


def settle() -> bool:
    """Collect once and freeze what survives; only the first call in a process does it.
    Returns whether this call did it."""
    global _settled
    if _settled:
        return False
    _settled = True
    gc.collect()
    gc.freeze()
    return True
