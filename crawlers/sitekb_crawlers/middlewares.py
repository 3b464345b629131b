"""Downloader middleware that keeps every request, redirects included, in scope.

Off-domain hosts, configured exclude patterns and private/loopback addresses
(unless the site config allows them) are refused before any byte is sent. A
host name is resolved once and refused if any of its addresses is private, so
a public-looking name pointing at 127.0.0.1 cannot sneak in.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from scrapy.exceptions import IgnoreRequest

from sitekb_crawlers.parsers import Scope, is_private_host
from sitekb_crawlers.settings import site_from_settings


class OutOfScope(IgnoreRequest):
    def __init__(self, rule: str, url: str):
        super().__init__(f"{rule}: {url}")
        self.rule = rule


class ScopeGuardMiddleware:
    def __init__(self, scope: Scope):
        self.scope = scope
        self._resolved: dict[str, bool] = {}

    @classmethod
    def from_crawler(cls, crawler):
        return cls(Scope(site_from_settings(crawler.settings)))

    def process_request(self, request, spider=None):
        rule = self.scope.why_out(request.url)
        if rule is None and not self.scope.allow_private:
            host = urlsplit(request.url).hostname or ""
            if self._resolves_private(host):
                rule = "private-address"
        if rule is not None:
            raise OutOfScope(rule, request.url)
        return None

    def _resolves_private(self, host: str) -> bool:
        if host not in self._resolved:
            try:
                addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
            except OSError:
                addresses = set()  # unresolvable: the download itself will fail and be counted
            self._resolved[host] = any(is_private_host(a) for a in addresses)
        return self._resolved[host]
