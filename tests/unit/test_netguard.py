"""The webhook target guard: private, loopback and link-local targets refused unless allowed."""

from __future__ import annotations

import pytest

from comms_pipeline.gateways.netguard import (
    TargetRefused,
    TargetUnresolved,
    check_target,
    classify,
)


def resolver(*addresses: str):  # type: ignore[no-untyped-def]
    return lambda host, port: list(addresses)


@pytest.mark.parametrize("address,kind", [
    ("93.184.216.34", "public"), ("2606:2800:220:1:248:1893:25c8:1946", "public"),
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.20", "private"),
    ("169.254.169.254", "private"), ("fe80::1%eth0", "private"), ("fc00::5", "private"),
    ("100.64.0.1", "private"), ("0.0.0.0", "private"), ("224.0.0.1", "private"),
    ("::ffff:10.0.0.1", "private"),
])
def test_classify(address, kind):
    assert classify(address) == kind


def test_public_targets_pass_and_are_pinned_to_the_checked_address():
    target = check_target("https://hooks.example.com/in?x=1",
                          resolver=resolver("93.184.216.34"))
    assert target.pinned_url == "https://93.184.216.34:443/in?x=1"
    assert target.host_header == "hooks.example.com" and target.scheme == "https"
    v6 = check_target("http://hooks.example.com:8080", resolver=resolver("2606:2800::1"))
    assert v6.pinned_url == "http://[2606:2800::1]:8080/"
    assert v6.host_header == "hooks.example.com:8080"


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_loopback_needs_its_own_permission(address):
    with pytest.raises(TargetRefused, match="loopback"):
        check_target("http://localhost:9000/hook", resolver=resolver(address))
    with pytest.raises(TargetRefused, match="loopback"):
        check_target("http://localhost:9000/hook", resolver=resolver(address),
                     allow_private=True)
    assert check_target("http://localhost:9000/hook", resolver=resolver(address),
                        allow_loopback=True).ip == address


@pytest.mark.parametrize("address", ["10.0.0.7", "169.254.169.254", "fe80::1"])
def test_private_and_link_local_need_permission(address):
    with pytest.raises(TargetRefused, match="private"):
        check_target("http://internal.example/hook", resolver=resolver(address),
                     allow_loopback=True)
    assert check_target("http://internal.example/hook", resolver=resolver(address),
                        allow_private=True).ip == address


def test_one_internal_address_among_public_ones_is_enough_to_refuse():
    with pytest.raises(TargetRefused, match="10.0.0.1"):
        check_target("https://mixed.example/", resolver=resolver("93.184.216.34", "10.0.0.1"))


@pytest.mark.parametrize("url,why", [
    ("ftp://example.com/x", "http"), ("http:///nohost", "http"),
    ("https://user:pw@example.com/", "credentials"), ("http://example.com:99999/", "port"),
])
def test_malformed_urls_are_refused(url, why):
    with pytest.raises(TargetRefused, match=why):
        check_target(url, resolver=resolver("93.184.216.34"))


def test_names_that_do_not_resolve_are_not_sent_to_and_not_refused_for_good():
    with pytest.raises(TargetUnresolved, match="cannot resolve"):
        check_target("http://does-not-exist.invalid/")
