"""Target addresses: which of a contact's addresses a request goes to, and are they usable.

Email addresses are checked with email-validator (syntax only, no DNS), phone numbers with
phonenumbers and normalised to E.164.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from comms_pipeline.core.simulated_targets import is_reserved_number, is_simulator_email
from comms_pipeline.core.states import AddressKind


class InvalidAddress(ValueError):
    """The address is malformed for its media."""


@dataclass(frozen=True)
class Address:
    kind: str
    value: str
    address_type: str
    is_primary: bool
    invalid_reason: str | None = None


@lru_cache(maxsize=65536)
def normalise(kind: str, value: str, default_region: str = "GB") -> str:
    """The address in canonical form, or :class:`InvalidAddress` saying why it is unusable.

    Cached: parsing a phone number costs about 100 µs and the same customers recur.
    """
    value = (value or "").strip()
    if not value:
        raise InvalidAddress("the address is empty")
    if kind == AddressKind.EMAIL:
        try:
            # the simulator's reserved domain is under .test, which is otherwise refused
            return validate_email(value, check_deliverability=False,
                                  test_environment=is_simulator_email(value)).normalized
        except EmailNotValidError as exc:
            raise InvalidAddress(f"malformed email address {value!r}: {exc}") from None
    if kind == AddressKind.PHONE:
        if is_reserved_number(value):  # the simulator's numbers: no numbering plan has them
            return value
        try:
            number = phonenumbers.parse(value, default_region)
        except phonenumbers.NumberParseException as exc:
            raise InvalidAddress(f"malformed phone number {value!r}: {exc}") from None
        if not phonenumbers.is_valid_number(number):
            raise InvalidAddress(f"not a valid phone number: {value!r}")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if kind == AddressKind.DEVICE:
        if any(c.isspace() for c in value) or len(value) > 4096:
            raise InvalidAddress("malformed device token")
        return value
    return value


def select_targets(addresses: Sequence[Address], kind: str, send_to: str,
                   address_type: str | None) -> tuple[list[Address], str | None]:
    """Pick the addresses of ``kind`` by the send-to rule; or ``[]`` and the reason why none.

    ``all``: every usable address; ``primary``: the one flagged primary, else the only one;
    ``type``: those of the given address type (home, work, mobile, ...).
    """
    usable = [a for a in addresses if a.kind == kind and not a.invalid_reason]
    word = {"email": "email address", "phone": "phone number", "device": "device token",
            "postal": "postal address"}.get(kind, f"{kind} address")
    if not usable:
        flagged = any(a.kind == kind for a in addresses)
        return [], (f"the contact's {word}es are all flagged invalid" if flagged
                    else f"the contact has no {word}")
    if send_to == "all":
        return usable, None
    if send_to == "type":
        chosen = [a for a in usable if a.address_type == address_type]
        return chosen, None if chosen else f"the contact has no {address_type} {word}"
    primary = [a for a in usable if a.is_primary]
    if primary:
        return primary[:1], None
    if len(usable) == 1:
        return usable, None
    return [], f"the contact has {len(usable)} {word}es and none is marked primary"
