"""VERP envelope senders: ``bounces+<detail id>.<signature>@<bounce domain>``.

A bounce comes back to the envelope sender (``MAIL FROM``) of the message it is about, so an
envelope sender per message names that message even when the remote MTA's report is not a
well-formed DSN. The signature is an HMAC-SHA256 of the detail id under the link secret
(salted for this use), cut to 12 hex digits: nobody who has not seen the secret can make an
address that turns an entry Rejected. Hex, because MTAs may fold a local part's case.

The Message-ID of a message sent with VERP carries the same signed id (``<…cp<id>.<sig>@…>``):
a report that lost its envelope (forwarded by hand, an ARF from a mailbox provider) still
names its message by the Message-ID in the headers it returns.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING

from comms_pipeline.pipeline.links import link_secret

if TYPE_CHECKING:
    from comms_pipeline.settings.config import Settings

SALT = b"comms-pipeline.verp.v1:"
SIGNATURE_HEX = 12


class VerpAddresses:
    """Makes and reads the signed VERP addresses of one bounce domain."""

    def __init__(self, secret: str, domain: str, prefix: str = "bounces") -> None:
        self.domain = domain.lower().strip().rstrip(".")
        self.prefix = prefix
        self._key = SALT + secret.encode()
        self._pattern = re.compile(rf"{re.escape(prefix)}\+(\d{{1,19}})\.([0-9a-f]+)\Z", re.I)

    @classmethod
    def from_settings(cls, settings: Settings) -> VerpAddresses | None:
        """The configured addresses, or None when no bounce domain is set (no VERP)."""
        cfg = settings.bounces
        if not cfg.domain:
            return None
        return cls(link_secret(settings.links, settings.var_dir), cfg.domain, cfg.local_prefix)

    def _signature(self, detail_id: int) -> str:
        mac = hmac.new(self._key, str(detail_id).encode(), hashlib.sha256)
        return mac.hexdigest()[:SIGNATURE_HEX]

    def address(self, detail_id: int) -> str:
        """The envelope sender for the message of ``detail_id``."""
        return f"{self.prefix}+{detail_id}.{self._signature(detail_id)}@{self.domain}"

    def accepts_domain(self, address: str) -> bool:
        """Whether ``address`` belongs to the bounce domain (what the receiver takes)."""
        _, at, domain = address.strip().strip("<>").rpartition("@")
        return bool(at) and domain.lower().rstrip(".") == self.domain

    def detail_id(self, address: str) -> int | None:
        """The detail id of a VERP address whose signature holds, else None."""
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if not at or domain.lower().rstrip(".") != self.domain:
            return None
        found = self._pattern.match(local)
        if not found:
            return None
        detail_id = int(found.group(1))
        if not hmac.compare_digest(found.group(2).lower(), self._signature(detail_id)):
            return None
        return detail_id

    def message_id_tag(self, detail_id: int) -> str:
        """What the Message-ID of ``detail_id``'s message carries (``make_msgid``'s idstring)."""
        return f"cp{detail_id}.{self._signature(detail_id)}"

    def detail_id_from_message_id(self, message_id: str) -> int | None:
        """The detail id a Message-ID made with :meth:`message_id_tag` names, else None."""
        found = _MESSAGE_ID_TAG.search(message_id)
        if not found:
            return None
        detail_id = int(found.group(1))
        if not hmac.compare_digest(found.group(2).lower(), self._signature(detail_id)):
            return None
        return detail_id


_MESSAGE_ID_TAG = re.compile(rf"[.<]cp(\d{{1,19}})\.([0-9a-f]{{{SIGNATURE_HEX}}})@", re.I)
