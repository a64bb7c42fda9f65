"""The simulator's reserved recipients: addresses and numbers whose outcome is known in advance.

A test API key's communications are sent only to the simulator gateways
(:mod:`comms_pipeline.gateways.simulator`); what becomes of each one depends on its target,
deterministically, so an integrator can rehearse every path a real message may take:

====================  ========================================  ======================
outcome               email / SMS / push target                 the queue entry
====================  ========================================  ======================
delivered             ``delivered@simulator.comms.test``,       Completed
                      ``+447700900001``, ``sim-delivered``
tempfail-then-ok      ``tempfail-then-ok@…``, ``+447700900002``  retried once, Completed
permfail              ``permfail@…``, ``+447700900003``          Rejected ``SIM_PERMFAIL``
bounce                ``bounce@…``, ``+447700900004``            Rejected ``BOUNCED``
complaint             ``complaint@…``, ``+447700900005``         Completed, ``COMPLAINED``
====================  ========================================  ======================

A local part may carry a ``+tag`` (``bounce+run7@simulator.comms.test``). Push tokens are
``sim-<outcome>``. Any other target of a test key is simulated as delivered: a test key
never reaches a real gateway, whatever its address. The domain is under ``.test`` (RFC 2606)
and the numbers are in Ofcom's range reserved for drama (07700 900000–900999): neither can
ever reach a real mailbox or phone, so these addresses are accepted although no mail server
or numbering plan knows them.
"""

from __future__ import annotations

import re

SIMULATOR_DOMAIN = "simulator.comms.test"
OUTCOMES = ("delivered", "tempfail-then-ok", "permfail", "bounce", "complaint")
#: The reserved numbers, in OUTCOMES' order: +447700900001 (delivered) … +447700900005.
NUMBER_PREFIX = "+447700900"
_NUMBER = re.compile(r"^\+447700900[0-9]{3}$")
TOKEN_PREFIX = "sim-"


def is_simulator_email(value: str) -> bool:
    return value.strip().lower().endswith("@" + SIMULATOR_DOMAIN)


def is_reserved_number(value: str) -> bool:
    """A number of Ofcom's drama range (never a real subscriber's), in E.164."""
    return bool(_NUMBER.match(value.strip()))


def outcome_of(target: str) -> str:
    """The outcome the simulator gives a message to ``target`` (``delivered`` by default)."""
    value = target.strip().lower()
    if is_simulator_email(value):
        local = value.rsplit("@", 1)[0].split("+", 1)[0]
        return local if local in OUTCOMES else "delivered"
    if is_reserved_number(value):
        index = int(value[-3:]) - 1
        return OUTCOMES[index] if 0 <= index < len(OUTCOMES) else "delivered"
    if value.startswith(TOKEN_PREFIX) and value[len(TOKEN_PREFIX):] in OUTCOMES:
        return value[len(TOKEN_PREFIX):]
    return "delivered"
