"""Dynamic links: signed, expiring URLs that let a customer act from a message.

``#dynamic_link.opt_out_direct_marketing`` (and the six other names of SPEC) renders a URL
``<base>/<name>?t=<token>``; the token is an itsdangerous ``URLSafeTimedSerializer`` payload
bound to the contact and the action (and, for service-request links, the request), signed with
the configured secret and a salt per action, so a token for one action or one contact is
worthless for another. :func:`verify_link` is what the Web API calls before acting on one.

Settings come from the ``[links]`` section (:class:`LinkSettings`). When no secret is
configured, one is generated once into ``<var>/secrets/links.key`` so that the embedded setup
works with no configuration and links survive restarts.
"""

from __future__ import annotations

import html
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from comms_pipeline.core.dynamic_links import DYNAMIC_LINK_NAMES
from comms_pipeline.core.errors import CommsError
from comms_pipeline.rendering.sandbox import SafeHtml, rendering_html
from comms_pipeline.settings.links import LinkSettings

SALT_PREFIX = "comms.dynamic-link."

class InvalidLinkError(CommsError):
    """The link is not valid: tampered with, for another action, or malformed."""


class ExpiredLinkError(InvalidLinkError):
    """The link has expired."""


def link_secret(links: LinkSettings, var_dir: Path | None) -> str:
    if links.secret is not None and links.secret.get_secret_value():
        return links.secret.get_secret_value()
    if var_dir is None:
        raise InvalidLinkError("no link secret configured ([links] secret) and no var folder")
    path = Path(var_dir) / "secrets" / "links.key"
    if not path.exists():
        # Written aside and hard-linked into place: two processes starting together agree on
        # one secret and neither ever reads a half-written file.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".links.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


@dataclass(frozen=True)
class LinkPayload:
    """What a verified token says: who may do which action (on which request)."""

    contact_ref: str
    action: str
    subject: str | None = None


class LinkBuilder:
    """Builds and verifies the signed links of one configuration."""

    def __init__(self, settings: LinkSettings, secret: str) -> None:
        self.settings = settings
        self._secret = secret
        self._serializers: dict[str, URLSafeTimedSerializer] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> LinkBuilder:
        links = settings.links
        return cls(links, link_secret(links, getattr(settings, "var_dir", None)))

    def _serializer(self, action: str) -> URLSafeTimedSerializer:
        found = self._serializers.get(action)
        if found is None:
            found = URLSafeTimedSerializer(self._secret, salt=SALT_PREFIX + action)
            self._serializers[action] = found
        return found

    def token(self, action: str, contact_ref: str, subject: str | None = None) -> str:
        if action not in DYNAMIC_LINK_NAMES:
            raise InvalidLinkError(f"unknown dynamic link {action!r}")
        payload: dict[str, str] = {"c": str(contact_ref), "a": action}
        if subject is not None:
            payload["s"] = str(subject)
        return str(self._serializer(action).dumps(payload))

    def url(self, action: str, contact_ref: str, subject: str | None = None) -> str:
        return f"{self.settings.base_url}/{action}?t={self.token(action, contact_ref, subject)}"

    def verify(self, token: str, action: str, max_age_seconds: float | None = None) -> LinkPayload:
        if action not in DYNAMIC_LINK_NAMES:
            raise InvalidLinkError(f"unknown dynamic link {action!r}")
        max_age = self.settings.max_age_days * 86400 if max_age_seconds is None \
            else max_age_seconds
        try:
            data = self._serializer(action).loads(token, max_age=max_age)  # type: ignore[arg-type]
        except SignatureExpired:
            raise ExpiredLinkError() from None
        except BadSignature:
            raise InvalidLinkError() from None
        if not isinstance(data, dict) or data.get("a") != action or not data.get("c"):
            raise InvalidLinkError()
        return LinkPayload(str(data["c"]), action, data.get("s"))

    def for_contact(self, contact_ref: str, language: str | None = None,
                    subjects: Mapping[str, str] | None = None) -> LinkMap:
        return LinkMap(self, str(contact_ref), language, dict(subjects or {}))


class LinkMap(Mapping[str, str]):
    """``$dynamic_link``: the enabled links of one contact, signed only when a template asks.

    In an HTML body a link renders as an anchor with the configured link text; elsewhere
    (text alternative, SMS) as the bare URL. Disabled links are absent (render empty), and
    so are service-request acceptances when the communication is about no service request.
    """

    def __init__(self, builder: LinkBuilder, contact_ref: str, language: str | None,
                 subjects: dict[str, str]) -> None:
        self._builder = builder
        self._contact = contact_ref
        self._language = language
        self._subjects = subjects
        self._enabled = [n for n in DYNAMIC_LINK_NAMES if n in set(builder.settings.enabled)]

    def __getitem__(self, name: str) -> str:
        if name not in self._enabled:
            raise KeyError(name)
        subject = self._subjects.get("service_request") if name.startswith(
            "service_request") else None
        if subject is None and name.startswith("service_request"):
            raise KeyError(name)  # an acceptance of no service request: renders empty
        url = self._builder.url(name, self._contact, subject)
        if not rendering_html():
            return url
        text = self._builder.settings.text(name, self._language)
        return SafeHtml(f'<a href="{html.escape(url)}">{html.escape(text)}</a>')

    def __iter__(self) -> Iterator[str]:
        return iter(self._enabled)

    def __len__(self) -> int:
        return len(self._enabled)


def verify_link(token: str, purpose: str, settings: Any,
                max_age_seconds: float | None = None) -> LinkPayload:
    """Check a link's token for ``purpose``; raise :class:`InvalidLinkError` or
    :class:`ExpiredLinkError` when it is not good."""
    return LinkBuilder.from_settings(settings).verify(token, purpose, max_age_seconds)
