"""Refuse webhook targets inside our own network unless the configuration allows them.

A webhook URL is written by whoever configures an external system; without a check it could
make the pipeline POST to the metadata service (169.254.169.254), a database admin page on
localhost or anything else reachable only from inside. Every address the host name resolves
to must be public (or explicitly allowed), and the request is then sent to the address that
was checked, so a DNS answer that changes between check and connect cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from comms_pipeline.core.errors import CommsError

Resolver = Callable[[str, int], list[str]]


class TargetRefused(CommsError):
    """The webhook target is not allowed."""


class TargetUnresolved(CommsError):
    """The webhook target's name does not resolve (now: DNS failures pass)."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    host: str
    ip: str
    port: int
    scheme: str

    @property
    def pinned_url(self) -> str:
        """The URL with the host replaced by the checked address (the Host header keeps the
        name; for HTTPS the name is also sent as SNI and checked against the certificate)."""
        parts = urlsplit(self.url)
        ip = f"[{self.ip}]" if ":" in self.ip else self.ip
        return urlunsplit((parts.scheme, f"{ip}:{self.port}", parts.path or "/", parts.query, ""))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetUnresolved(f"cannot resolve {host!r}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def classify(address: str) -> str:
    """``public``, ``loopback`` or ``private`` (private ranges, link-local, reserved, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or not ip.is_global:
        return "private"
    return "public"


def check_target(url: str, *, allow_private: bool = False, allow_loopback: bool = False,
                 resolver: Resolver = _resolve) -> Target:
    """The target of ``url`` if every address it resolves to is allowed, else TargetRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise TargetRefused("credentials in a webhook URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused(f"bad port in {url!r}") from None
    addresses = resolver(parts.hostname, port)
    if not addresses:
        raise TargetRefused(f"{parts.hostname!r} has no address")
    for address in addresses:
        kind = classify(address)
        if (kind == "loopback" and not allow_loopback) or (kind == "private" and not allow_private):
            raise TargetRefused(f"webhook target {parts.hostname} resolves to {kind} address "
                                f"{address}, which the configuration does not allow")
    return Target(url, parts.hostname, addresses[0], port, parts.scheme)
