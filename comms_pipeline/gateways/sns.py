"""Amazon SNS messages as an HTTP endpoint receives them: their signature, checked.

SNS signs every message it POSTs (Notification, SubscriptionConfirmation,
UnsubscribeConfirmation) with the key of a certificate it publishes at ``SigningCertURL``.
The certificate is fetched only from an ``https://sns.<region>.amazonaws.com/`` address (a
message naming any other host is refused before anything is fetched), cached by URL, and the
signature checked over the canonical string of the message's type (the documented fields in
their documented order): ``SignatureVersion`` 1 is RSA PKCS#1 v1.5 with SHA-1, 2 with SHA-256.
The fetcher is injectable (tests bring their own certificate and key). ``cryptography`` does
the RSA work. Every failure is :class:`SnsRejected` with a short reason, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from comms_pipeline.core.errors import CommsError, MissingExtraError

#: ``fetch(url) -> bytes``: the PEM certificate at ``url``.
CertFetcher = Callable[[str], bytes]
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\Z")
_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}
CERT_MAX = 64 * 1024


class SnsRejected(CommsError):
    """The message is not a correctly signed Amazon SNS message."""


def sns_url_ok(url: str) -> bool:
    """An https address on an SNS host (``sns.<region>.amazonaws.com``)."""
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(_SNS_HOST.match(parts.hostname or "")) \
        and parts.port in (None, 443) and not parts.username


def fetch_https(url: str, timeout: float = 10.0) -> bytes:
    """The default fetcher: GET over https (certificate checked), at most CERT_MAX bytes."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: bytes = resp.read(CERT_MAX + 1)
    return data


def canonical_string(message: dict[str, Any]) -> bytes:
    """The bytes SNS signed: ``name\\nvalue\\n`` for each of the type's fields present."""
    fields = _FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise SnsRejected(f"unknown SNS message type {str(message.get('Type'))[:40]!r}")
    out = []
    for name in fields:
        if name in message and message[name] is not None:
            out.append(f"{name}\n{message[name]}\n")
    return "".join(out).encode()


class SnsVerifier:
    """Checks SNS messages; certificates fetched once per URL."""

    def __init__(self, fetch: CertFetcher = fetch_https) -> None:
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding, rsa
        except ImportError as exc:  # pragma: no cover - cryptography is in the api extra
            raise MissingExtraError("cryptography", "api") from exc
        self._x509, self._hashes, self._padding, self._rsa = x509, hashes, padding, rsa
        self.fetch = fetch
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()

    def parse(self, body: bytes) -> dict[str, Any]:
        """The verified message (SNS posts JSON as text/plain); :class:`SnsRejected` else."""
        try:
            message = json.loads(body)
        except ValueError:
            raise SnsRejected("the body is not JSON") from None
        if not isinstance(message, dict):
            raise SnsRejected("the body is not a JSON object")
        self.verify(message)
        return message

    def _key(self, url: str) -> Any:
        with self._lock:
            found = self._keys.get(url)
        if found is not None:
            return found
        try:
            pem = self.fetch(url)
        except Exception as exc:  # the network's or the fetcher's: one line, no traceback
            raise SnsRejected(f"the signing certificate could not be fetched "
                              f"({type(exc).__name__})") from None
        if len(pem) > CERT_MAX:
            raise SnsRejected("the signing certificate is too large")
        try:
            key = self._x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise SnsRejected("the signing certificate is not a PEM certificate") from None
        if not isinstance(key, self._rsa.RSAPublicKey):
            raise SnsRejected("the signing certificate does not hold an RSA key")
        with self._lock:
            self._keys[url] = key
        return key

    def verify(self, message: dict[str, Any]) -> None:
        version = str(message.get("SignatureVersion"))
        algorithm = {"1": self._hashes.SHA1, "2": self._hashes.SHA256}.get(version)
        if algorithm is None:
            raise SnsRejected(f"unsupported SignatureVersion {version[:8]!r}")
        url = str(message.get("SigningCertURL") or message.get("SigningCertUrl") or "")
        if not sns_url_ok(url):
            raise SnsRejected("SigningCertURL is not an https address on an SNS host "
                              "(sns.<region>.amazonaws.com)")
        try:
            signature = base64.b64decode(str(message.get("Signature") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise SnsRejected("the signature is not base64") from None
        canonical = canonical_string(message)
        try:
            self._key(url).verify(signature, canonical, self._padding.PKCS1v15(), algorithm())
        except SnsRejected:
            raise
        except Exception:  # cryptography's InvalidSignature (or a malformed signature)
            raise SnsRejected("the signature does not match the message") from None
