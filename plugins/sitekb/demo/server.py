"""A tiny, stdlib-only HTTP server for the bundled demo website.

Usage from code (tests, the quickstart)::

    from sitekb.demo.server import DemoSite
    with DemoSite() as site:          # port 0 -> a free port
        fetch(site.base_url + "/sitemap.xml")

or from a shell::

    python -m sitekb.demo.server --port 8765
    python -m sitekb.demo.server --host 0.0.0.0 --port 8765   # e.g. in docker-compose

Behaviour, relied upon by the crawler tests:

* files are served from ``site_dir``; ``/`` and ``/articles/`` map to their
  ``index.html``; a directory without trailing slash gets a 301 to the slash form;
* ``{{BASE_URL}}`` is replaced with the request's origin in text bodies
  (.html, .xml, .txt), so ``sitemap.xml`` / ``robots.txt`` carry absolute URLs;
* the request's origin is ``http://`` + its ``Host`` header when that is a plain
  ``host[:port]`` (letters, digits, dots, dashes; a bracketed IPv6 address), so a
  server bound to 0.0.0.0 and crawled at ``http://sitekb-demo:8765/`` names that
  origin; a missing, repeated or malformed ``Host`` falls back to ``base_url``
  (the bound address, 127.0.0.1 for 0.0.0.0);
* ``/old/lead-scoring.html`` answers ``301`` with an absolute ``Location`` on the
  request's origin, as does a directory without trailing slash;
* unknown paths answer ``404`` with a small HTML body;
* every 200 carries a strong ``ETag`` (quoted sha256 prefix of the body) and a
  ``Last-Modified`` (the file's mtime, to the second); ``If-None-Match`` and
  ``If-Modified-Since`` are honoured with ``304``;
* ``GET`` and ``HEAD`` are supported; nothing is logged to stderr;
* every request is recorded in ``DemoSite.requests`` as ``(method, raw_path)``.
"""

from __future__ import annotations

import argparse
import datetime
import email.utils
import hashlib
import http.server
import ipaddress
import posixpath
import re
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

SITE_DIR: Path = Path(__file__).resolve().parent / "site"

BASE_URL_PLACEHOLDER = "{{BASE_URL}}"
LEAD_SCORING_PATH = "/articles/lead-scoring-fundamentals.html"
REDIRECTS: dict[str, str] = {"/old/lead-scoring.html": LEAD_SCORING_PATH}

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".ico": "image/x-icon",
}
_SUBSTITUTED_SUFFIXES = {".html", ".htm", ".xml", ".txt"}

# What a Host header may be for the server to echo it into bodies and Location
# headers: a DNS name or IPv4 address, or a bracketed IPv6 address, and an
# optional port. Anything else (paths, markup, spaces, CR/LF) is not an origin.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_HEADER = re.compile(
    rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?"
)

NOT_FOUND_BODY = (
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
    "<title>404 Not Found</title></head>\n<body>\n<h1>Page not found</h1>\n"
    "<p>The page you requested does not exist on this site.</p>\n"
    "<p><a href=\"/\">Back to the home page</a></p>\n</body>\n</html>\n"
).encode("utf-8")


def _http_date(ts: float) -> str:
    return email.utils.formatdate(int(ts), usegmt=True)


def _parse_http_date(value: str) -> int | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # RFC 9110: HTTP dates are GMT
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return int(parsed.timestamp())


def origin_from_host(host_header: str | None) -> str | None:
    """``http://`` + a well-formed ``host[:port]`` Host header, else None."""
    if host_header is None or len(host_header) > 255:
        return None
    match = _HOST_HEADER.fullmatch(host_header)
    if match is None:
        return None
    if host_header.startswith("["):
        try:
            ipaddress.IPv6Address(host_header[1 : host_header.index("]")])
        except ValueError:
            return None
    port = match.group("port")
    if port is not None and not 0 < int(port) <= 65535:
        return None
    return "http://" + host_header


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    wanted = etag.strip('"')
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == wanted:
            return True
    return False


class _DemoHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR only skips TIME_WAIT leftovers; on Linux a port that is still
    # listening stays busy, so serve_demo_site() can fall back to a free port.
    allow_reuse_address = True
    allow_reuse_port = False
    demo: "DemoSite"

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: D401
        """Stay quiet (client disconnects etc.); the demo server never logs to stderr."""


class _DemoHTTPServerV6(_DemoHTTPServer):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _DemoHTTPServer
    server_version = "NorthwindSignalDemo/1.0"

    def version_string(self) -> str:
        return self.server_version

    # -- plumbing ---------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head_only=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head_only=True)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        head_only: bool = False,
        send_length: bool = True,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if send_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)

    # -- request handling -------------------------------------------------
    def _origin(self) -> str:
        """The origin this request was addressed to, or the server's base URL."""
        hosts = self.headers.get_all("Host") or []
        # two Host headers are a malformed request (RFC 9112 3.2): trust neither
        origin = origin_from_host(hosts[0].strip(" \t")) if len(hosts) == 1 else None
        return origin or self.server.demo.base_url

    def _serve(self, head_only: bool) -> None:
        demo = self.server.demo
        demo._record(self.command, self.path)
        origin = self._origin()

        raw_path = urllib.parse.urlsplit(self.path).path or "/"
        path = urllib.parse.unquote(raw_path)

        if path in REDIRECTS:
            location = origin + REDIRECTS[path]
            body = f'<!DOCTYPE html><html><body><p>Moved to <a href="{location}">{location}</a></p></body></html>'
            self._send(
                301,
                body.encode("utf-8"),
                {"Location": location, "Content-Type": "text/html; charset=utf-8"},
                head_only=head_only,
            )
            return

        target = self._resolve(path)
        if target is None:
            self._not_found(head_only)
            return
        if target.is_dir():
            # "/articles" -> "/articles/" like any ordinary static server
            if (target / "index.html").is_file():
                location = origin + raw_path + "/"
                self._send(301, b"", {"Location": location}, head_only=head_only)
            else:
                self._not_found(head_only)
            return

        try:
            body = target.read_bytes()
            mtime = target.stat().st_mtime
        except OSError:
            self._not_found(head_only)
            return

        suffix = target.suffix.lower()
        if suffix in _SUBSTITUTED_SUFFIXES and BASE_URL_PLACEHOLDER.encode() in body:
            body = body.replace(BASE_URL_PLACEHOLDER.encode(), origin.encode("utf-8"))

        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        last_modified = _http_date(mtime)
        validators = {"ETag": etag, "Last-Modified": last_modified, "Cache-Control": "no-cache"}

        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        not_modified = False
        if inm is not None:
            not_modified = _etag_matches(inm, etag)
        elif ims is not None:
            since = _parse_http_date(ims)
            not_modified = since is not None and int(mtime) <= since
        if not_modified:
            self._send(304, b"", validators, head_only=True, send_length=False)
            return

        headers = {
            "Content-Type": _CONTENT_TYPES.get(suffix, "application/octet-stream"),
            **validators,
        }
        self._send(200, body, headers, head_only=head_only)

    def _resolve(self, path: str) -> Path | None:
        """Map a URL path to a file or directory inside site_dir (None if outside/missing)."""
        if "\x00" in path:
            return None
        site_dir = self.server.demo.site_dir
        normalized = posixpath.normpath(path)
        parts = [p for p in normalized.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None
        candidate = site_dir.joinpath(*parts) if parts else site_dir
        if path.endswith("/"):
            candidate = candidate / "index.html"
        try:
            resolved = candidate.resolve()
        except OSError:
            return None
        if resolved != site_dir and site_dir not in resolved.parents:
            return None
        if not resolved.exists():
            return None
        return resolved

    def _not_found(self, head_only: bool) -> None:
        self._send(
            404, NOT_FOUND_BODY, {"Content-Type": "text/html; charset=utf-8"}, head_only=head_only
        )


class DemoSite:
    """The demo website served from a background thread (on 127.0.0.1 by default).

    ``base_url`` is the bound address's URL; a request's own ``Host`` decides
    the origin written into its response (see the module docstring).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, site_dir: Path = SITE_DIR) -> None:
        self.host = host
        self.port = port
        self.site_dir = Path(site_dir).resolve()
        self.base_url = ""
        self.bound_address = ""
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._httpd: _DemoHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------
    def start(self) -> "DemoSite":
        if self._httpd is not None:
            return self
        if not self.site_dir.is_dir():
            raise FileNotFoundError(f"demo site directory not found: {self.site_dir}")
        server_cls = _DemoHTTPServerV6 if ":" in self.host else _DemoHTTPServer
        httpd = server_cls((self.host, self.port), _Handler)
        httpd.demo = self
        self.port = int(httpd.server_address[1])
        self.bound_address = str(httpd.server_address[0])
        url_host = self.host
        if url_host in ("", "0.0.0.0"):
            url_host = "127.0.0.1"
        elif url_host == "::":
            url_host = "::1"
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self.base_url = f"http://{url_host}:{self.port}"
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sitekb-demo-site:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def loopback_only(self) -> bool:
        """Whether the socket is bound to a loopback address (True until started)."""
        if not self.bound_address:
            return True
        try:
            return ipaddress.ip_address(self.bound_address.split("%", 1)[0]).is_loopback
        except ValueError:
            return False

    def exposure_warning(self) -> str | None:
        """A warning for stderr when the site is reachable beyond this machine."""
        if self.loopback_only:
            return None
        return (
            f"warning: the demo site listens on {self.bound_address} port {self.port}, "
            "not only on loopback: anyone who can reach this machine can read it"
        )

    def __enter__(self) -> "DemoSite":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------
    def url(self, path: str = "/") -> str:
        """Absolute URL for a site path such as ``/articles/``."""
        return self.base_url + ("" if path.startswith("/") else "/") + path

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def __repr__(self) -> str:
        state = self.base_url if self.running else "stopped"
        return f"<DemoSite {state} site_dir={self.site_dir}>"


def serve_demo_site(host: str = "127.0.0.1", port: int = 8765) -> DemoSite:
    """Start the demo site on ``port``, or on a free port if that one is busy."""
    try:
        return DemoSite(host=host, port=port).start()
    except OSError:
        return DemoSite(host=host, port=0).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sitekb.demo.server",
        description="Serve the bundled Northwind Signal demo website until Ctrl-C.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1; 0.0.0.0 serves every interface, e.g. in a container)",
    )
    parser.add_argument("--port", type=int, default=8765, help="falls back to a free port if busy")
    args = parser.parse_args(argv)
    site = serve_demo_site(args.host, args.port)
    warning = site.exposure_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"Demo site running at {site.base_url}/  (Ctrl-C to stop)", flush=True)
    print(f"Sitemap: {site.base_url}/sitemap.xml", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
