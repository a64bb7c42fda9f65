"""Push and webhook answers that say nothing about the device or the endpoint must not
condemn it: only FCM's UNREGISTERED flags a token, and a DNS failure is retried."""

from __future__ import annotations

import socket

import pytest

from comms_pipeline.core.errors import TransientGatewayError
from comms_pipeline.gateways import netguard
from comms_pipeline.gateways.fcm import UnregisteredToken, classify


def _error(status: int, name: str, code: str | None = None) -> dict:
    details = [{"errorCode": code}] if code else []
    return {"error": {"code": status, "status": name, "message": "x", "details": details}}


def test_only_unregistered_flags_the_token():
    assert isinstance(classify(404, _error(404, "NOT_FOUND", "UNREGISTERED")),
                      UnregisteredToken)
    bare = classify(404, _error(404, "NOT_FOUND"))  # a wrong URL or project: every message
    assert isinstance(bare, TransientGatewayError) and not isinstance(bare, UnregisteredToken)
    assert "endpoint or project" in bare.description


def test_a_name_that_does_not_resolve_is_not_a_refused_target(monkeypatch):
    def fail(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(netguard.socket, "getaddrinfo", fail)
    with pytest.raises(netguard.TargetUnresolved, match="cannot resolve"):
        netguard.check_target("https://hooks.example.com/in")
