"""A small Python client for the sitekb HTTP API (`sitekb serve`), standard library only.

    import sitekb
    kb = sitekb.Client("http://127.0.0.1:8000", api_key=None, site="demo")
    for passage in kb.search("How should we score demo requests?", k=5):
        print(passage.rank, passage.title, passage.url, passage.heading_path)

Every call maps to one endpoint of the API; errors become :class:`APIError`
with the HTTP status and the server's explanation. The API key goes only to the
origin (scheme, host, port) of ``base_url``: a redirect elsewhere is followed
without it. Results are the same
:class:`~sitekb.passages.Passage` and :class:`~sitekb.passages.SearchResult`
types the server, the CLI and the quality gate use.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import date
from typing import Any

from sitekb.explain import Explained, Explanation
from sitekb.passages import Page, PagesResult, Passage, SearchResult

# per_page not given: the server's default (2). None is a value: no limit.
_SERVER_DEFAULT = object()

__all__ = ["APIError", "Client", "Explained", "Explanation", "Passage", "SearchResult"]


class APIError(Exception):
    """The API answered with an error (status 4xx/5xx) or could not be reached (status 0)."""

    def __init__(self, status: int, detail: Any):
        self.status = status
        self.detail = detail
        super().__init__(f"HTTP {status}: {detail}" if status else str(detail))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class _KeyStaysHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects, sending the key again only to the configured origin.

    The key is an unredirected header, which urllib never copies to a redirect;
    this handler puts it back when the redirect stays on the origin.
    """

    def __init__(self, origin: tuple, headers: dict[str, str]):
        self.origin = origin
        self.headers = headers

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) == self.origin:
            for name, value in self.headers.items():
                new.add_unredirected_header(name, value)
        return new


class Client:
    """Talks to one sitekb API server."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 site: str | None = None, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.site = site
        self.timeout = timeout

    def search(self, query: str, k: int = 5, *, site: str | None = None, mode: str | None = None,
               alias: str | None = None, snapshot: int | None = None, url_prefix: str | None = None,
               tags: list[str] | None = None, language: str | None = None,
               published_after: date | str | None = None, published_before: date | str | None = None,
               per_page: int | None | object = _SERVER_DEFAULT, query_language: str | None = None,
               vector_weight: float | None = None) -> SearchResult:
        """Top-k passages for ``query``; the server's defaults (mode, at most 2 passages a page) unless given.

        ``per_page=None`` lifts the limit of passages a page.
        """
        body = self._question(query, k, site, mode, alias, snapshot, url_prefix, tags, language, published_after,
                              published_before, query_language, vector_weight)
        if per_page is not _SERVER_DEFAULT:
            body["per_page"] = per_page
        data = self._request("POST", "/v1/search", body)
        passages = [Passage(**p) for p in data.pop("results")]
        return SearchResult(passages=passages, **data)

    def explain(self, query: str, k: int = 5, *, site: str | None = None, mode: str | None = None,
                alias: str | None = None, snapshot: int | None = None, url_prefix: str | None = None,
                tags: list[str] | None = None, language: str | None = None,
                published_after: date | str | None = None, published_before: date | str | None = None,
                per_page: int | None | object = _SERVER_DEFAULT, query_language: str | None = None,
                vector_weight: float | None = None) -> Explanation:
        """The passages :meth:`search` finds, each with why (``POST /v1/explain``): page, fetch, extraction,
        versions, snapshot and who published it, quality checks, approval, correction, history."""
        body = self._question(query, k, site, mode, alias, snapshot, url_prefix, tags, language, published_after,
                              published_before, query_language, vector_weight)
        if per_page is not _SERVER_DEFAULT:
            body["per_page"] = per_page
        data = self._request("POST", "/v1/explain", body)
        return Explanation(passages=[Explained(**p) for p in data.pop("results")], **data)

    def pages(self, query: str, k: int = 5, *, passages: int | None = None, site: str | None = None,
              mode: str | None = None, alias: str | None = None, snapshot: int | None = None,
              url_prefix: str | None = None, tags: list[str] | None = None, language: str | None = None,
              published_after: date | str | None = None, published_before: date | str | None = None,
              query_language: str | None = None, vector_weight: float | None = None) -> PagesResult:
        """The top-k pages for ``query``, each with up to ``passages`` of its best passages (server default 3)."""
        body = self._question(query, k, site, mode, alias, snapshot, url_prefix, tags, language, published_after,
                              published_before, query_language, vector_weight)
        if passages is not None:
            body["passages"] = passages
        data = self._request("POST", "/v1/pages", body)
        return PagesResult(pages=[Page(**p) for p in data.pop("pages")], **data)

    def _question(self, query, k, site, mode, alias, snapshot, url_prefix, tags, language, published_after,
                  published_before, query_language, vector_weight) -> dict[str, Any]:
        """The request body fields /v1/search and /v1/pages share; what is not given is left to the server."""
        filters = {key: (value.isoformat() if isinstance(value, date) else value) for key, value in {
            "url_prefix": url_prefix, "tags": tags, "language": language,
            "published_after": published_after, "published_before": published_before}.items() if value is not None}
        body: dict[str, Any] = {"query": query, "k": k}
        for key, value in (("site", site or self.site), ("mode", mode), ("alias", alias), ("snapshot", snapshot),
                           ("query_language", query_language), ("vector_weight", vector_weight)):
            if value is not None:
                body[key] = value
        if filters:
            body["filters"] = filters
        return body

    def snapshots(self, site: str | None = None) -> list[dict]:
        """The snapshots a frontend may query, newest first."""
        query = f"?{urllib.parse.urlencode({'site': site})}" if site else ""
        return self._request("GET", f"/v1/snapshots{query}")

    def snapshot(self, snapshot_id: int) -> dict:
        return self._request("GET", f"/v1/snapshots/{int(snapshot_id)}")

    def ready(self) -> bool:
        """Whether the server and its database are ready to answer."""
        try:
            return self._request("GET", "/readyz").get("status") == "ready"
        except APIError:
            return False

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        key = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        for name, value in key.items():
            request.add_unredirected_header(name, value)
        opener = urllib.request.build_opener(_KeyStaysHome(_origin(self.base_url), key))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail")
            except (ValueError, AttributeError):
                detail = exc.reason
            raise APIError(exc.code, detail) from None
        except urllib.error.URLError as exc:
            raise APIError(0, f"cannot reach {self.base_url}: {exc.reason}") from None
