"""Site configuration: what to crawl and how to turn it into a snapshot.

A site config is a YAML file, either a name under ``dags/sites/`` (``demo`` →
``dags/sites/demo.yaml``) or a path. It is validated at load: an unknown key or
a value of the wrong type is a :class:`ConfigError` that names the key and the
file. ``config_hash`` fingerprints the effective config; a snapshot records it.

Settings read: ``SITEKB_SITES_DIR`` (where named configs live; default the
repository's ``dags/sites``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sitekb.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrawlConfig(_Strict):
    """Scope and politeness of the crawl."""

    sitemaps: list[str] = Field(default_factory=list, description="Sitemap URLs; robots.txt Sitemap lines are added.")
    follow_links: bool = True
    allowed_domains: list[str] = Field(default_factory=list, description="Empty: the start URLs' hosts.")
    include_patterns: list[str] = Field(default_factory=list, description="Regexes over the whole URL; empty: all.")
    exclude_patterns: list[str] = Field(default_factory=list)
    strip_query_params: list[str] = Field(default_factory=lambda: ["utm_*", "gclid", "fbclid", "mc_cid", "mc_eid"])
    max_pages: int = Field(default=500, ge=1)
    max_depth: int = Field(default=6, ge=0)
    max_page_bytes: int = Field(default=5_000_000, ge=1024)
    obey_robots_txt: bool = True
    user_agent: str = "sitekb/0.1 (+https://github.com/sitekb/sitekb)"
    concurrency_per_host: int = Field(default=4, ge=1, le=64)
    download_delay: float = Field(default=0.25, ge=0)
    timeout_seconds: float = Field(default=20, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    allow_private_addresses: bool = Field(
        default=False, description="Fetch loopback/private hosts; only for the demo and tests."
    )

    @field_validator("include_patterns", "exclude_patterns")
    @classmethod
    def _regexes_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return patterns


class OptOutConfig(_Strict):
    """Labels and signals that keep a page out of the knowledge base."""

    robots_values: list[str] = Field(default_factory=lambda: ["noai", "noindex", "none"])
    labels: list[str] = Field(default_factory=lambda: ["#do_NOT_train_on_this"])
    opt_in_label: str = "#train_on_this"
    opt_in_only: bool = False
    nosnippet_selectors: list[str] = Field(default_factory=lambda: ["[data-nosnippet]"])


class QualityConfig(_Strict):
    """Per-document and per-batch thresholds of the quality gate."""

    min_words: int = Field(default=80, ge=0)
    max_words: int = Field(default=20_000, ge=1)
    languages: list[str] = Field(default_factory=lambda: ["en"])
    max_bad_char_ratio: float = Field(default=0.01, ge=0, le=1)
    max_transcript_noise: float = Field(default=0.35, ge=0, le=1)
    near_duplicate_threshold: float = Field(default=0.8, gt=0, le=1)
    max_page_drop: float = Field(default=0.5, ge=0, le=1, description="Largest share of pages that may vanish vs live.")
    max_chunk_drop: float = Field(default=0.5, ge=0, le=1)
    max_error_rate: float = Field(default=0.2, ge=0, le=1)
    max_quarantine_rate: float = Field(default=0.3, ge=0, le=1)
    min_documents: int = Field(default=1, ge=0)


class ChunkingSettings(_Strict):
    target_tokens: int = Field(default=200, ge=16)
    overlap_tokens: int = Field(default=0, ge=0)
    max_tokens: int | None = Field(default=None, ge=16, description="Default: the embedding model's input limit.")
    template: str = "{title}\n{heading_path}\n\n{text}"

    @model_validator(mode="after")
    def _overlap_below_target(self) -> "ChunkingSettings":
        if self.overlap_tokens >= self.target_tokens:
            raise ValueError("overlap_tokens must be smaller than target_tokens")
        if self.max_tokens is not None and self.max_tokens < self.target_tokens:
            raise ValueError("max_tokens must be at least target_tokens")
        return self


class EmbeddingSettings(_Strict):
    provider: Literal["local", "openai"] = "local"
    model: str | None = Field(default=None, description="Default: all-MiniLM-L6-v2 (local) / text-embedding-3-small.")
    dimensions: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=1, le=2048)
    budget_usd: float | None = Field(default=None, ge=0)


class GoldenQuestion(_Strict):
    question: str
    expected_url: str


class SiteConfig(_Strict):
    """Everything sitekb needs to know about one site."""

    name: str
    start_urls: list[str] = Field(min_length=1)
    description: str = ""
    crawl: CrawlConfig = CrawlConfig()
    opt_out: OptOutConfig = OptOutConfig()
    quality: QualityConfig = QualityConfig()
    chunking: ChunkingSettings = ChunkingSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    golden_questions: list[GoldenQuestion] = Field(default_factory=list)
    golden_k: int = Field(default=5, ge=1, le=100)
    golden_tolerance: int = Field(default=0, ge=0)
    keep_snapshots: int = Field(default=5, ge=1)

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, name: str) -> str:
        if not SITE_NAME.match(name):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 63 characters)")
        return name

    @field_validator("start_urls")
    @classmethod
    def _urls_are_http(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an absolute http(s) URL")
        return urls

    @property
    def base_url(self) -> str:
        parts = urlsplit(self.start_urls[0])
        return f"{parts.scheme}://{parts.netloc}"

    def absolute(self, url: str) -> str:
        """Resolve a config URL (possibly a path such as '/pricing') against the site."""
        return urljoin(self.base_url + "/", url)

    def domains(self) -> list[str]:
        return self.crawl.allowed_domains or sorted({urlsplit(u).hostname or "" for u in self.start_urls})

    def config_hash(self) -> str:
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def with_base_url(self, base_url: str) -> "SiteConfig":
        """The same config served from another origin (the demo site on a free port)."""
        old = self.base_url
        data = json.loads(self.model_dump_json())
        text = json.dumps(data).replace(old, base_url.rstrip("/"))
        data = json.loads(text)
        host = urlsplit(base_url).hostname
        if data["crawl"]["allowed_domains"]:
            data["crawl"]["allowed_domains"] = sorted({*data["crawl"]["allowed_domains"], host})
        return SiteConfig.model_validate(data)


def sites_dir() -> Path:
    return Path(os.environ.get("SITEKB_SITES_DIR", REPO_ROOT / "dags" / "sites"))


def resolve_site_path(site: str) -> Path:
    """A name under the sites folder, or a path to a YAML file."""
    if site.endswith((".yaml", ".yml")) or os.sep in site:
        path = Path(site)
    else:
        path = sites_dir() / f"{site}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in sites_dir().glob("*.yaml"))) or "none"
        raise ConfigError(
            f"site config {site!r} not found (looked for {path}). "
            f"Known sites in {sites_dir()}: {known}. Pass a name from that folder or a path to a YAML file."
        )
    return path


def load_site(site: str, overrides: dict | None = None) -> SiteConfig:
    """Load and validate a site config; ``overrides`` (CLI/env) win over the file."""
    path = resolve_site_path(site)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    data.setdefault("name", path.stem)
    return site_from_dict(_deep_merge(data, overrides or {}), source=str(path))


def site_from_dict(data: dict, source: str = "<config>") -> SiteConfig:
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"  {where}: {message}")
        raise ConfigError(f"{source}: invalid site config:\n" + "\n".join(problems)) from None


def adhoc_site(start_url: str, name: str | None = None, allow_private: bool = False) -> SiteConfig:
    """A site config for `sitekb run --start-url URL`."""
    host = urlsplit(start_url).hostname or "site"
    slug = name or re.sub(r"[^a-z0-9_-]+", "-", host.lower()).strip("-")[:63] or "site"
    data = {"name": slug, "start_urls": [start_url], "crawl": {"allow_private_addresses": allow_private}}
    return site_from_dict(data, source="--start-url")


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
