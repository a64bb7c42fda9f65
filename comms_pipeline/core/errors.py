"""The project's own exceptions.

Library errors (SQLAlchemy, smtplib, smpplib, botocore, paramiko, ...) are turned into these at
the boundary where they occur, so callers only ever handle our vocabulary. Each exception's
docstring is its default message.
"""

from __future__ import annotations


class CommsError(Exception):
    """comms-pipeline error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(CommsError):
    """The configuration is invalid."""


class GatewayConfigError(ConfigError):
    """A gateway's configuration cannot be used (a key file missing, a value refused)."""


class UnknownNameError(CommsError):
    """No job or daemon of that name."""


class LeaseLostError(CommsError):
    """The claim on this row expired and another worker took it over."""


class GatewayError(CommsError):
    """The gateway refused or failed the request.

    ``code`` and ``description`` are the gateway's own (an SMTP reply code, an SMPP
    command_status name, an HTTP status), shown on the queue entry as Error Code / Error
    Description.
    """

    transient = False

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


class TransientGatewayError(GatewayError):
    """The gateway failed for now; the message is retried later with backoff."""

    transient = True


class PermanentGatewayError(GatewayError):
    """The gateway refused the message for good; the entry becomes Rejected."""


class MissingExtraError(CommsError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"the '{module}' package is needed here: pip install 'comms-pipeline[{extra}]'"
        )
