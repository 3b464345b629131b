"""A programmable web site on 127.0.0.1 for the crawler tests.

Routes map a path (with or without its query) or a path prefix to a handler
returning a :class:`Reply`; every request is recorded with its time and
headers, so a test can assert which URLs the crawler fetched, how (conditional
or not, with which user agent) and when. Served by a stdlib
``ThreadingHTTPServer`` in a daemon thread on a free port. A site can also go
down mid-crawl (:meth:`FixtureSite.go_down_after`): its port closes and open
connections are reset.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import html
import http.server
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

WORDS = (
    "Marketing operations teams keep campaigns, data and tools in good order so that every launch "
    "reaches the right people with the right message at the right time and every report can be trusted. "
)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip_seconds: float = 0.0    # >0: send the body a few bytes at a time over this long


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    at: float


Handler = Callable[["Request"], Reply]


@dataclass
class Request:
    path: str          # path with query
    headers: dict[str, str]
    site: "FixtureSite"

    @property
    def bare_path(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> str:
        return urlsplit(self.path).query


def page(title: str, body: str = "", head: str = "", words: int = 3, links: list[str] = ()) -> str:
    """A small valid HTML page with enough words to pass the quality gate."""
    anchors = "".join(f'<li><a href="{html.escape(href)}">{html.escape(href)}</a></li>' for href in links)
    text = "".join(f"<p>{WORDS}</p>" for _ in range(words))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"{head}</head><body><main><article><h1>{html.escape(title)}</h1>{text}{body}"
            f"<ul>{anchors}</ul></article></main></body></html>")


def html_reply(text: str, status: int = 200, headers: dict | None = None, validators: bool = True) -> Handler:
    """A page with a strong ETag and Last-Modified, answering conditional GETs with 304."""
    body = text.encode("utf-8")
    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
    modified = email.utils.formatdate(1_700_000_000, usegmt=True)

    def handle(request: Request) -> Reply:
        extra = {"Content-Type": "text/html; charset=utf-8", **(headers or {})}
        if validators:
            extra.update({"ETag": etag, "Last-Modified": modified})
            if request.headers.get("if-none-match") == etag:
                return Reply(304, b"", {k: v for k, v in extra.items() if k != "Content-Type"})
        return Reply(status, body, extra)

    return handle


def raw(body: bytes, content_type: str, status: int = 200, headers: dict | None = None) -> Handler:
    return lambda request: Reply(status, body, {"Content-Type": content_type, **(headers or {})})


def redirect(location: str, status: int = 301) -> Handler:
    return lambda request: Reply(status, b"", {"Location": location})


def sitemap(base: str, entries: list[tuple[str, str | None]], gz: bool = False) -> Handler:
    rows = "".join(
        f"<url><loc>{base}{path}</loc>{f'<lastmod>{lastmod}</lastmod>' if lastmod else ''}</url>"
        for path, lastmod in entries
    )
    xml = ('<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
           f"{rows}</urlset>").encode()
    if gz:
        return raw(gzip.compress(xml), "application/x-gzip")
    return raw(xml, "application/xml")


def sitemap_index(base: str, paths: list[str]) -> Handler:
    rows = "".join(f"<sitemap><loc>{base}{path}</loc></sitemap>" for path in paths)
    xml = ('<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
           f"{rows}</sitemapindex>").encode()
    return raw(xml, "application/xml")


def sitemap_flood(base: str, count: int, prefix: str = "/flood/") -> Handler:
    """A sitemap of ``count`` page URLs (``{prefix}0.html``...), built in memory once."""
    rows = "".join(f"<url><loc>{base}{prefix}{n}.html</loc></url>" for n in range(count))
    xml = ('<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
           f"{rows}</urlset>").encode()
    return raw(xml, "application/xml")


def nested_json(depth: int) -> str:
    """A JSON document of objects nested ``depth`` deep (json.loads raises RecursionError past ~1000)."""
    return '{"@context": "https://schema.org", "@type": "Thing", "about": ' * depth + "1" + "}" * depth


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    site: "FixtureSite"

    def handle_error(self, request, client_address):  # client gave up (timeouts): expected here
        pass


class _HandlerClass(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        self.server.site._serve(self)

    def do_HEAD(self):  # noqa: N802
        self.server.site._serve(self, head=True)


class FixtureSite:
    """Routes, a request log, and a server on 127.0.0.1:<free port>."""

    def __init__(self):
        self.routes: dict[str, Handler] = {}
        self.prefixes: dict[str, Handler] = {}
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _HandlerClass)
        self._server.site = self
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll: going down (shutdown) waits for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._answers_left: int | None = None
        self._down_prefix = "/"
        self.down = False

    def __enter__(self) -> "FixtureSite":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- configuration ------------------------------------------------------

    def add(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def add_prefix(self, prefix: str, handler: Handler) -> None:
        self.prefixes[prefix] = handler

    def reset(self) -> None:
        with self.lock:
            self.routes.clear()
            self.prefixes.clear()
            self.hits.clear()

    def go_down_after(self, answers: int, prefix: str = "/") -> None:
        """Answer ``answers`` more requests under ``prefix``, then go down for good: the port is
        closed (new connections are refused) and every open connection is reset at its next request."""
        with self.lock:
            self._answers_left = answers
            self._down_prefix = prefix

    # -- what happened ---------------------------------------------------------

    def paths(self, method: str = "GET") -> list[str]:
        with self.lock:
            return [h.path for h in self.hits if h.method == method]

    def hits_of(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]

    # -- serving ------------------------------------------------------------------

    def _handler_for(self, path: str) -> Handler | None:
        if path in self.routes:
            return self.routes[path]
        bare = urlsplit(path).path
        if bare in self.routes:
            return self.routes[bare]
        for prefix in sorted(self.prefixes, key=len, reverse=True):
            if path.startswith(prefix):
                return self.prefixes[prefix]
        return None

    def _serve(self, http_handler: _HandlerClass, head: bool = False) -> None:
        headers = {k.lower(): v for k, v in http_handler.headers.items()}
        with self.lock:
            self.hits.append(Hit("HEAD" if head else "GET", http_handler.path, headers, time.monotonic()))
            down, last = self.down, False
            if not down and self._answers_left is not None and http_handler.path.startswith(self._down_prefix):
                self._answers_left -= 1
                last = self._answers_left <= 0
                self.down = last
        if down:
            _reset_connection(http_handler)
            return
        if last:
            # The port closes before this last answer goes out: whatever the crawler sends
            # on a new connection from now on is refused.
            self._server.shutdown()
            self._server.server_close()
        handler = self._handler_for(http_handler.path)
        reply = handler(Request(http_handler.path, headers, self)) if handler else Reply(
            404, b"<html><body><h1>Not found</h1></body></html>", {"Content-Type": "text/html"})
        try:
            http_handler.send_response(reply.status)
            for key, value in reply.headers.items():
                http_handler.send_header(key, value)
            if reply.status not in (204, 304):
                http_handler.send_header("Content-Length", str(len(reply.body)))
            http_handler.end_headers()
            if head or reply.status in (204, 304):
                return
            if reply.drip_seconds:
                step = max(1, len(reply.body) // 20)
                for start in range(0, len(reply.body), step):
                    http_handler.wfile.write(reply.body[start:start + step])
                    http_handler.wfile.flush()
                    time.sleep(reply.drip_seconds / 20)
            else:
                http_handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the crawler hung up (timeout, size cap, stop after headers)


def _reset_connection(http_handler: _HandlerClass) -> None:
    # SO_LINGER 0: closing sends a RST, as a crashed server's kernel does.
    http_handler.close_connection = True
    http_handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def minimal_pdf(title: str, lines: list[str]) -> bytes:
    """A valid one-page PDF with ``lines`` of Helvetica text and a /Title, written by hand."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(f"({escape(line)}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({escape(title)}) >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return bytes(out)
