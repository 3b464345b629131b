"""The crawler's name resolver: private addresses are refused where the connection is made.

A guard that resolves a name itself and lets Scrapy resolve it again is open
to DNS rebinding: a hostile name answers a public address to the guard and
127.0.0.1 to the connection. :class:`GuardedResolver` is installed as the
reactor's name resolver (Scrapy's ``TWISTED_DNS_RESOLVER``), so every
``HostnameEndpoint`` the HTTP handler opens connects only to addresses this
resolver handed out, and it hands out none of a name that has any private
answer (:func:`sitekb_crawlers.parsers.is_private_host`, the same rule as the
scope's). A refused name ends in Scrapy's ``CannotResolveHostError``, which the
crawler records as a failed fetch.

Settings read: SITEKB_SCOPE (``allow_private``: then nothing is refused),
DNS_TIMEOUT (the simple ``getHostByName`` path).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence

from twisted.internet import defer
from twisted.internet._resolver import GAIResolver
from twisted.internet.base import ThreadedResolver
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IAddress, IHostnameResolver, IResolutionReceiver, IResolverSimple
from zope.interface import implementer, provider

from sitekb_crawlers.parsers import is_private_host

log = logging.getLogger(__name__)


def is_allowed_address(address: str) -> bool:
    """The production rule: only globally routable addresses."""
    return not is_private_host(address)


def _getaddrinfo(*args):
    # Looked up on each call (not bound at import) so a test can stand in for DNS.
    return socket.getaddrinfo(*args)


@provider(IResolutionReceiver)
class _CheckingReceiver:
    """Holds the answers back until all are in; passes them on only if every one is allowed."""

    def __init__(self, receiver: IResolutionReceiver, host: str, allowed: Callable[[str], bool]):
        self.receiver = receiver
        self.host = host
        self.allowed = allowed
        self.addresses: list[IAddress] = []

    def resolutionBegan(self, resolution) -> None:
        self.receiver.resolutionBegan(resolution)

    def addressResolved(self, address: IAddress) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        refused = [a.host for a in self.addresses if not self.allowed(a.host)]
        if refused:
            # One private answer refuses the name: round-robin must not pick it later.
            log.warning("refused %s: it resolves to a private address (%s)", self.host, ", ".join(refused))
        else:
            for address in self.addresses:
                self.receiver.addressResolved(address)
        self.receiver.resolutionComplete()


@implementer(IHostnameResolver, IResolverSimple)
class GuardedResolver:
    """Resolves IPv4 and IPv6 names and refuses a name with any non-public answer (unless allowed)."""

    def __init__(self, reactor, *, allow_private: bool = False, timeout: float = 60.0,
                 is_allowed: Callable[[str], bool] = is_allowed_address):
        self.reactor = reactor
        self.allow_private = allow_private
        self.timeout = timeout
        self.is_allowed = is_allowed
        self._names = GAIResolver(reactor, getaddrinfo=_getaddrinfo)
        self._simple = ThreadedResolver(reactor)

    @classmethod
    def from_crawler(cls, crawler, reactor):
        settings = crawler.settings
        return cls(reactor, allow_private=bool(settings.getdict("SITEKB_SCOPE").get("allow_private")),
                   timeout=settings.getfloat("DNS_TIMEOUT", 60.0))

    def install_on_reactor(self) -> None:
        # Both reactor paths: endpoints use the name resolver, connectTCP(host) the simple one.
        self.reactor.installResolver(self)
        self.reactor.installNameResolver(self)

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes: Sequence[type[IAddress]] | None = None, transportSemantics: str = "TCP"):
        if not self.allow_private:
            resolutionReceiver = _CheckingReceiver(resolutionReceiver, hostName, self.is_allowed)
        return self._names.resolveHostName(resolutionReceiver, hostName, portNumber, addressTypes,
                                           transportSemantics)

    def getHostByName(self, name: str, timeout: Sequence[int] = ()) -> defer.Deferred:
        d = self._simple.getHostByName(name, (self.timeout,))
        if not self.allow_private:
            d.addCallback(self._checked, name)
        return d

    def _checked(self, address: str, name: str) -> str:
        if not self.is_allowed(address):
            log.warning("refused %s: it resolves to a private address (%s)", name, address)
            raise DNSLookupError(f"{name} resolves to a private address")
        return address
