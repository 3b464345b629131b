"""The crawler's one address rule: only globally routable addresses may be fetched.

``is_private_host`` refuses loopback, private, link-local (cloud metadata),
carrier-grade NAT (100.64.0.0/10, Alibaba's 100.100.100.200), documentation
and reserved ranges, and IPv6 forms that carry a private IPv4 address
(IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16). The
resolver applies the same rule to every answer a name gets.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.address import IPv4Address, IPv6Address

from sitekb_crawlers import parsers
from sitekb_crawlers.resolver import GuardedResolver


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.8.8.8", "10.0.0.1", "172.16.5.4", "192.168.1.1", "0.0.0.0",
    "169.254.169.254",                       # AWS/GCP/Azure metadata
    "100.64.0.1", "100.100.100.200", "100.127.255.254",   # carrier-grade NAT, Alibaba metadata
    "192.0.2.1", "198.51.100.1", "203.0.113.7", "198.18.0.1", "240.0.0.1", "255.255.255.255", "224.0.0.1",
    "::1", "[::1]", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "[::ffff:169.254.169.254]",   # IPv4-mapped
    "::127.0.0.1", "::10.0.0.1",                                           # IPv4-compatible
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::6464:64c8",       # NAT64 of 127.0.0.1, metadata, Alibaba
    "64:ff9b:1::7f00:1",                                                   # local-use NAT64
    "2002:0a00:0001::", "2002:7f00:1::1",                                  # 6to4 around 10.0.0.1, 127.0.0.1
    "localhost", "LOCALHOST.", "api.localhost",
])
def test_not_globally_routable_is_private(host):
    assert parsers.is_private_host(host) is True


@pytest.mark.parametrize("host", [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1",
    "2606:4700:4700::1111", "[2a00:1450:4001::200e]",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::",   # wrapping a public IPv4 stays public
    "example.com",   # a name: its answers are checked by the resolver
])
def test_public_addresses_are_allowed(host):
    assert parsers.is_private_host(host) is False


def test_scope_refuses_private_literals_in_every_form():
    scope = parsers.Scope(["example.com"], origins=["https://example.com/"])
    for url in ("http://100.100.100.200/latest/meta-data/", "http://[64:ff9b::a9fe:a9fe]/",
                "http://[::ffff:10.0.0.1]/"):
        assert scope.why_out(url) == "off-domain"   # another host already
    on_site = parsers.Scope(["100.100.100.200"], origins=["http://100.100.100.200/"])
    assert on_site.why_out("http://100.100.100.200/latest/meta-data/") == "private-address"


# Nothing here reaches the reactor: the system resolver is replaced by FakeNames.
NO_REACTOR = SimpleNamespace(getThreadPool=lambda: None)


class Receiver:
    def __init__(self):
        self.began = self.complete = False
        self.addresses = []

    def resolutionBegan(self, resolution):
        self.began = True

    def addressResolved(self, address):
        self.addresses.append(address)

    def resolutionComplete(self):
        self.complete = True


class FakeNames:
    """Stands in for the system resolver: the answers a hostile name gives."""

    def __init__(self, answers):
        self.answers = answers

    def resolveHostName(self, receiver, host, port=0, address_types=None, semantics="TCP"):
        receiver.resolutionBegan(object())
        for address in self.answers:
            receiver.addressResolved(address)
        receiver.resolutionComplete()
        return receiver


def resolve(answers, allow_private=False):
    resolver = GuardedResolver(NO_REACTOR, allow_private=allow_private)
    resolver._names = FakeNames(answers)
    receiver = Receiver()
    resolver.resolveHostName(receiver, "hostile.example", 80)
    assert receiver.began and receiver.complete
    return [a.host for a in receiver.addresses]


def test_resolver_refuses_a_name_with_any_private_answer():
    public = IPv4Address("TCP", "93.184.216.34", 80)
    assert resolve([public]) == ["93.184.216.34"]
    assert resolve([public, IPv4Address("TCP", "100.100.100.200", 80)]) == []
    assert resolve([IPv6Address("TCP", "64:ff9b::7f00:1", 80)]) == []
    assert resolve([IPv6Address("TCP", "::ffff:10.0.0.1", 80)]) == []
    # allow_private (the demo, tests): nothing is refused
    assert resolve([IPv4Address("TCP", "127.0.0.1", 80)], allow_private=True) == ["127.0.0.1"]


def test_resolver_simple_path_refuses_private_answers():
    from twisted.internet import defer
    from twisted.internet.error import DNSLookupError

    resolver = GuardedResolver(NO_REACTOR)

    class Simple:
        def getHostByName(self, name, timeout=()):
            return defer.succeed("127.0.0.1")

    resolver._simple = Simple()
    failures = []
    resolver.getHostByName("hostile.example").addErrback(failures.append)
    assert failures and failures[0].check(DNSLookupError)
