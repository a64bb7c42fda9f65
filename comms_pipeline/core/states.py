"""The vocabulary of the queue: statuses, states, media and error codes.

Request headers carry a *status* (what happened to the request); request details carry a
*state* (where the communication is in its life cycle). Internal detail states map onto the
public life-cycle states of the communication queue (SPEC): Pending, Rejected, Completed,
Completed and Removed, Expired.
"""

from __future__ import annotations

from enum import StrEnum


class HeaderStatus(StrEnum):
    AWAITING_PROCESSING = "awaiting_processing"
    AWAITING_EVENT_RESOLUTION = "awaiting_event_resolution"
    PROCESSED = "processed"
    CANCELLED = "cancelled"
    NOT_SENT = "not_sent"
    OPTED_OUT = "opted_out"
    ERROR = "error"


HEADER_TERMINAL = frozenset(set(HeaderStatus) - {HeaderStatus.AWAITING_PROCESSING,
                                                  HeaderStatus.AWAITING_EVENT_RESOLUTION})


class DetailState(StrEnum):
    AWAITING_MERGE = "awaiting_merge"
    AWAITING_SEND = "awaiting_send"
    AWAITING_EXTERNAL = "awaiting_external"
    COMPLETED = "completed"
    REJECTED = "rejected"
    COMPLETED_REMOVED = "completed_removed"
    EXPIRED = "expired"


class PublicState(StrEnum):
    PENDING = "Pending"
    REJECTED = "Rejected"
    COMPLETED = "Completed"
    COMPLETED_REMOVED = "Completed and Removed"
    EXPIRED = "Expired"


PENDING_STATES = frozenset(
    {DetailState.AWAITING_MERGE, DetailState.AWAITING_SEND, DetailState.AWAITING_EXTERNAL}
)
DETAIL_TERMINAL = frozenset(set(DetailState) - PENDING_STATES)

_PUBLIC = {
    DetailState.AWAITING_MERGE: PublicState.PENDING,
    DetailState.AWAITING_SEND: PublicState.PENDING,
    DetailState.AWAITING_EXTERNAL: PublicState.PENDING,
    DetailState.COMPLETED: PublicState.COMPLETED,
    DetailState.REJECTED: PublicState.REJECTED,
    DetailState.COMPLETED_REMOVED: PublicState.COMPLETED_REMOVED,
    DetailState.EXPIRED: PublicState.EXPIRED,
}


def public_state(state: str) -> PublicState:
    return _PUBLIC[DetailState(state)]


class Media(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    EXTERNAL = "external"
    LETTER = "letter"


class Direction(StrEnum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


class AddressKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    DEVICE = "device"
    POSTAL = "postal"


#: Which kind of contact address each media is sent to (external entries go to a system).
ADDRESS_KIND = {
    Media.EMAIL: AddressKind.EMAIL,
    Media.SMS: AddressKind.PHONE,
    Media.PUSH: AddressKind.DEVICE,
    Media.LETTER: AddressKind.POSTAL,
}

#: Default maximum characters per media when no media setting row overrides it (SPEC).
DEFAULT_MAX_CHARS = {
    Media.EMAIL: 1000,
    Media.SMS: 160,
    Media.PUSH: 240,
    Media.EXTERNAL: 100_000,
    Media.LETTER: 100_000,
}


class Classification(StrEnum):
    CUSTOMER_CARE = "customer_care"
    FINANCIAL = "financial"
    MARKETING = "marketing"
    REWARD = "reward"


class ErrorCode(StrEnum):
    """Error codes written by the pipeline itself (gateways add their own codes)."""

    UNKNOWN_CONTACT = "UNKNOWN_CONTACT"
    UNKNOWN_TEMPLATE = "UNKNOWN_TEMPLATE"
    UNKNOWN_MEDIA = "UNKNOWN_MEDIA"
    NO_ADDRESS = "NO_ADDRESS"
    INVALID_ADDRESS = "INVALID_ADDRESS"
    NO_VARIANT = "NO_VARIANT"
    TEMPLATE_ERROR = "TEMPLATE_ERROR"
    ENTITY_DATA = "ENTITY_DATA"
    NO_EVENT_RULE = "NO_EVENT_RULE"
    CONDITION_NOT_MET = "CONDITION_NOT_MET"
    NOT_IN_SEGMENT = "NOT_IN_SEGMENT"
    NO_CONTACT_REF = "NO_CONTACT_REF"
    RECIPIENT_KEY_TOO_LONG = "RECIPIENT_KEY_TOO_LONG"
    RENDERER_CRASHED = "RENDERER_CRASHED"
    TOO_LONG = "TOO_LONG"
    MEDIA_NOT_ALLOWED = "MEDIA_NOT_ALLOWED"
    OPTED_OUT = "OPTED_OUT"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    INCOMING_NOT_SUPPORTED = "INCOMING_NOT_SUPPORTED"
    SERVER_NOT_ENABLED = "SERVER_NOT_ENABLED"
    MAX_ATTEMPTS = "MAX_ATTEMPTS"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    INVALID_REQUEST = "INVALID_REQUEST"
    MISSING_DATA = "MISSING_DATA"
    #: A request of one external system whose template delivers into another's queue.
    FOREIGN_SYSTEM = "FOREIGN_SYSTEM"
    #: The local disk (or quota) is full: the entry waits, nothing torn is counted as sent.
    STORAGE_FULL = "STORAGE_FULL"
    #: The local folder is on a read-only filesystem.
    STORAGE_READ_ONLY = "STORAGE_READ_ONLY"
    HEADER_INJECTION = "HEADER_INJECTION"
    #: The target address is on the suppression list (a hard bounce, a complaint, ...).
    SUPPRESSED = "SUPPRESSED"


#: SPEC's processing rules keep these exact messages.
def incoming_not_supported(media: str) -> str:
    return f"Incoming {_media_word(media)} not Supported"


def server_not_enabled(media: str) -> str:
    return f"{_media_word(media, plural=False)} Server not Enabled"


def _media_word(media: str, plural: bool = True) -> str:
    words = {"email": "Email", "sms": "SMS", "push": "Push", "letter": "Letter",
             "external": "External"}
    word = words.get(media, media.title())
    if plural and word not in ("SMS",):
        word += "s"
    return word
