"""The ``[suppressions]`` section: when a dead address stops being sent to
(``COMMS_SUPPRESSIONS_*`` variables)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _status_word(value: str) -> str:
    """An SMPP command_status as our gateways write it (``0x0000000B``)."""
    try:
        number = int(value, 0)
    except ValueError:
        raise ValueError(f"not an SMPP command_status number: {value!r} (write it as "
                         f"0x0000000B or 11)") from None
    return f"0x{number:08X}"


class SuppressionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    #: Soft bounces (a full mailbox, a greylisting MTA) suppress an address only after this
    #: many within ``soft_bounce_window_days``.
    soft_bounce_threshold: int = Field(3, ge=1)
    soft_bounce_window_days: float = Field(7.0, gt=0)
    #: How long a soft-bounce suppression lasts (0: until removed): the mailbox may be
    #: emptied.
    soft_bounce_suppress_days: float = Field(30.0, ge=0)
    #: SMPP command_status answers to submit_sm that say the destination number is wrong
    #: (ESME_RINVDSTADR): the number is suppressed for SMS.
    smpp_destination_statuses: list[str] = Field(default_factory=lambda: ["0x0000000B"])
    #: ``err:`` values of UNDELIV delivery receipts that say the number does not exist (GSM
    #: MAP error 1, unknown subscriber, by default; SMSCs differ: set what yours writes).
    #: Compared as numbers, so ``001`` and ``1`` are one value; ``[]`` switches it off.
    receipt_destination_errors: list[str] = Field(default_factory=lambda: ["001"])

    @field_validator("smpp_destination_statuses")
    @classmethod
    def _statuses(cls, values: list[str]) -> list[str]:
        return [_status_word(v) for v in values]
