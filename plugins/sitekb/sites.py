"""Site configuration: what to crawl and how to turn it into a snapshot.

A site config is a YAML file, either a name under ``dags/sites/`` (``demo`` →
``dags/sites/demo.yaml``) or a path. It is validated at load: an unknown key or
a value of the wrong type is a :class:`ConfigError` that names the key and the
file. ``config_hash`` fingerprints the effective config; a snapshot records it.
:func:`resolve_site` gives the effective config of a run: the file, then the
environment's overrides, then the command line's (see :mod:`sitekb.settings`).

Settings read (passed in): ``Settings.sites_dir``, where named configs live.
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
from sitekb.passages import Mode
from sitekb.settings import DEFAULT_SITES_DIR, Settings

SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrawlConfig(_Strict):
    """Scope and politeness of the crawl."""

    sitemaps: list[str] = Field(default_factory=list, description="Sitemap URLs; robots.txt Sitemap lines are added.")
    follow_links: bool = True
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="Hosts (and their subdomains) crawled on their scheme's default port, or origins such as "
                    "https://docs.example.com:8443. Always in scope: the start URLs' own scheme, host and port. "
                    "Another port of an allowed host is refused (off-port).")
    include_patterns: list[str] = Field(default_factory=list, description="Regexes over the whole URL; empty: all.")
    exclude_patterns: list[str] = Field(default_factory=list)
    strip_query_params: list[str] = Field(
        default_factory=lambda: ["utm_*", "gclid", "fbclid", "msclkid", "mc_cid", "mc_eid", "_ga",
                                 "jsessionid", "phpsessid", "sessionid", "session_id", "sid"],
        description="Query parameters (shell patterns, case-insensitive) dropped from every URL: "
                    "tracking and session ids, so one page is one document.",
    )
    sort_query_params: bool = Field(default=True, description="?b=2&a=1 and ?a=1&b=2 are one URL.")
    max_pages: int = Field(default=500, ge=1)
    max_depth: int = Field(default=6, ge=0, description="Link hops from a start URL or sitemap entry.")
    max_query_variants: int = Field(
        default=25, ge=1, description="Distinct query strings per path (facets, calendars): the rest are traps."
    )
    max_url_length: int = Field(default=2000, ge=64)
    max_segment_repeats: int = Field(
        default=3, ge=1, description="A path segment repeated more often (/a/b/a/b/a/b) is a relative-link trap."
    )
    max_page_bytes: int = Field(default=5_000_000, ge=1024)
    content_types: list[str] = Field(
        default_factory=lambda: ["text/html", "application/xhtml+xml", "application/pdf"],
        description="Media types kept; PDF text needs the pypdf package.",
    )
    obey_robots_txt: bool = True
    user_agent: str = "sitekb/0.1 (+https://github.com/sitekb/sitekb)"
    contact_url: str | None = Field(
        default=None, description="Where a site owner reaches the operator; appended to the user agent."
    )
    concurrency_per_host: int = Field(default=4, ge=1, le=64)
    download_delay: float = Field(default=0.25, ge=0)
    max_crawl_delay: float = Field(
        default=30, ge=0, description="robots.txt Crawl-delay is obeyed up to this many seconds."
    )
    timeout_seconds: float = Field(default=20, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    retry_backoff: float = Field(default=0.5, ge=0, description="First retry wait in seconds; doubles each retry.")
    max_retry_after: float = Field(
        default=120, ge=0, description="A longer Retry-After (429/503) gives the URL up instead of waiting."
    )
    max_redirects: int = Field(default=5, ge=0, le=20)
    use_sitemap_lastmod: bool = Field(
        default=False, description="Skip requesting pages whose sitemap lastmod is not newer than the stored "
                                   "fetch. Off by default: a skipped page's new opt-out (noindex, a label) "
                                   "would then be seen only at the next full crawl; without it every page "
                                   "is asked again each run (a conditional request: a 304 when unchanged)."
    )
    full_recrawl_days: float | None = Field(
        default=7, ge=0, description="A crawl is full (no conditional GET, no lastmod skip) when the last "
                                     "full one is older than this; null: only when asked."
    )
    allow_private_addresses: bool = Field(
        default=False, description="Fetch loopback/private hosts; only for the demo and tests."
    )

    @property
    def identity(self) -> str:
        """The User-Agent sent: the configured one plus the contact URL."""
        if self.contact_url and self.contact_url not in self.user_agent:
            return f"{self.user_agent} (+{self.contact_url})"
        return self.user_agent

    @model_validator(mode="after")
    def _identifiable(self) -> "CrawlConfig":
        # A site owner must be able to tell who crawls and how to reach them.
        if not re.search(r"https?://|@", self.identity):
            raise ValueError(
                f"user_agent {self.user_agent!r} names no contact: set crawl.contact_url "
                "(e.g. https://example.com/bot) or put '(+URL)' in the user agent"
            )
        return self

    @field_validator("content_types")
    @classmethod
    def _media_types(cls, types: list[str]) -> list[str]:
        cleaned = [t.strip().lower() for t in types]
        for media in cleaned:
            if not re.match(r"^[a-z0-9.+-]+/[a-z0-9.+-]+$", media):
                raise ValueError(f"{media!r} is not a media type such as text/html")
        return cleaned

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


# What the quality gate does with a page a safety check flags (quality.prompt_injection, quality.hidden_text).
Policy = Literal["report", "quarantine", "block"]


class QualityConfig(_Strict):
    """Per-document and per-batch thresholds of the quality gate (sitekb.quality.suites).

    Strict types: a threshold written as a string ("0.5") or a bool is an error, not a guess.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    min_words: int = Field(default=80, ge=0)
    max_words: int = Field(default=20_000, ge=1)
    languages: list[str] = Field(default_factory=lambda: ["en"], description="Allowed primary language codes (empty: any). The first is the site's default: a page "
                                          "whose language is neither declared nor detected is indexed and searched in it.")
    max_bad_char_ratio: float = Field(default=0.01, ge=0, le=1)
    max_boilerplate_share: float = Field(
        default=0.9, ge=0, le=1, description="Largest share of a page's visible words extraction may discard."
    )
    max_transcript_noise: float = Field(default=0.35, ge=0, le=1)
    near_duplicate_threshold: float = Field(default=0.7, gt=0, le=1, description="Jaccard over 5-word shingles.")
    max_page_drop: float = Field(default=0.5, ge=0, le=1, description="Largest share of pages that may vanish vs live.")
    max_document_drop: float = Field(default=0.5, ge=0, le=1)
    max_chunk_drop: float = Field(default=0.5, ge=0, le=1)
    max_error_rate: float = Field(default=0.2, ge=0, le=1)
    max_quarantine_rate: float = Field(default=0.3, ge=0, le=1)
    min_documents: int = Field(default=1, ge=0)
    data_docs: bool = Field(default=True, description="Write Great Expectations Data Docs under SITEKB_HOME/data_docs.")
    prompt_injection: Policy = Field(
        default="quarantine",
        description="A page with text addressed to an AI model ('ignore previous instructions', '<|im_start|>', "
                    "'note to AI assistants: ...'): report (flag it in the run's record and go on), quarantine "
                    "(hold it back with the phrase that fired) or block (fail the run).")
    hidden_text: Policy = Field(
        default="quarantine",
        description="A page hiding more than max_hidden_words words from its visitors (inline display:none, "
                    "font-size:0, off-screen, text coloured as its background, aria-hidden, hidden), or hiding "
                    "text addressed to an AI model; the hidden text itself never reaches the knowledge base.")
    max_hidden_words: int = Field(
        default=40, ge=0, description="Words of hidden prose a page may have (link and button text not counted).")

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, languages: list[str]) -> list[str]:
        for code in languages:
            if not re.fullmatch(r"[a-z]{2,3}", code):
                raise ValueError(f"{code!r} is not a lowercase ISO 639 language code such as 'en'")
        return languages

    @model_validator(mode="after")
    def _word_bounds(self) -> "QualityConfig":
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


class ChunkingSettings(_Strict):
    """How pages become chunks; token counts use the embedding model's own tokenizer.

    ``template`` is the text that gets embedded: ``{title}`` (page title),
    ``{heading_path}`` (e.g. "Setup > Linux", the page's h1 left out when it
    repeats the title) and ``{text}`` (the chunk, exactly once). Budgets count
    the whole rendered template, so no chunk ever passes ``max_tokens`` or the
    model's input limit, whichever is lower.
    """

    target_tokens: int = Field(default=200, ge=16, description="Pack blocks up to this many tokens per chunk.")
    overlap_tokens: int = Field(default=0, ge=0, description="Repeat this many tokens of the previous chunk.")
    max_tokens: int | None = Field(default=None, ge=16, description="Default: the embedding model's input limit.")
    template: str = Field(default="{title}\n{heading_path}\n\n{text}",
                          description="Embedded text; fields {title}, {heading_path}, {text} (once).")

    @field_validator("template")
    @classmethod
    def _template_is_valid(cls, template: str) -> str:
        from sitekb.chunking import ChunkingConfig

        ChunkingConfig(template=template)  # raises ValueError naming the problem
        return template

    @model_validator(mode="after")
    def _overlap_below_target(self) -> "ChunkingSettings":
        if self.overlap_tokens >= self.target_tokens:
            raise ValueError("overlap_tokens must be smaller than target_tokens")
        if self.max_tokens is not None and self.max_tokens < self.target_tokens:
            raise ValueError("max_tokens must be at least target_tokens")
        return self


class EmbeddingSettings(_Strict):
    """Which model embeds the chunks, where it runs, and what a run may spend (see sitekb.embedding)."""

    provider: Literal["local", "openai"] = "local"
    model: str | None = Field(default=None, description="Default: all-MiniLM-L6-v2 (local; all-MiniLM-L6-v2-int8 is its int8 "
                                                  "quantisation, twice as fast on ONNX Runtime) / text-embedding-3-small.")
    dimensions: int | None = Field(default=None, ge=1, description="text-embedding-3 models: shorter vectors.")
    batch_size: int | None = Field(default=None, ge=1, le=2048,
                                   description="Inputs per request/batch. Default: 64 local, 2048 openai.")
    budget_usd: float | None = Field(default=None, ge=0, description="Most a run may spend on embedding.")
    prices_usd_per_million: dict[str, float] = Field(
        default_factory=dict, description="Per-model price overrides (USD per million tokens); defaults built in.")
    base_url: str | None = Field(default=None, description="OpenAI-compatible server; OPENAI_BASE_URL wins.")
    api_key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="Environment variable holding the API key.")
    concurrency: int = Field(default=4, ge=1, le=32, description="Requests in flight at once (openai).")
    max_retries: int = Field(default=5, ge=0, le=20, description="Retries per request on 429/5xx/timeouts.")
    timeout_seconds: float = Field(default=60, gt=0, description="Per-request timeout (openai).")
    max_input_tokens: int | None = Field(default=None, ge=16,
                                         description="Input limit of a model sitekb does not know.")
    batch_api: bool = Field(default=False, description="openai: OpenAI's Batch API, half price, up to 24 h.")
    batch_poll_seconds: float = Field(default=30, gt=0, description="Batch API: seconds between status checks.")
    batch_max_wait_minutes: float = Field(default=60, gt=0,
                                          description="Batch API: wait this long, then let the task retry.")

    @field_validator("prices_usd_per_million")
    @classmethod
    def _prices_not_negative(cls, prices: dict[str, float]) -> dict[str, float]:
        for model, price in prices.items():
            if price < 0:
                raise ValueError(f"price of {model!r} must not be negative")
        return prices

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
        if url is not None and urlsplit(url).username is not None:
            # Every snapshot records its server (without credentials), and sitekb_api.snapshots
            # shows it to frontends: a key in the URL would be lost or exposed.
            raise ValueError("must not carry a user or password (https://user:password@host): put the key in "
                             "the variable embedding.api_key_env names; the URL is recorded with every snapshot "
                             "and shown to frontends")
        return url


class NotifierConfig(_Strict):
    """Where a site's alerts go (sitekb.orchestration.notify): a failed run or gate, a missed deadline, ...

    Secrets stay out of the site file: a Slack or webhook URL with a token in
    it comes from an Airflow connection (``conn_id``: its host, or password,
    holds the URL) or an environment variable (``url_env``).
    """

    kind: Literal["webhook", "slack", "smtp"]
    url: str | None = Field(default=None, description="webhook: the URL to POST the alert to (JSON).")
    url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                description="webhook/slack: environment variable holding the URL.")
    conn_id: str | None = Field(default=None, description="slack/webhook: Airflow connection with the URL; "
                                                          "smtp: the SMTP connection (default smtp_default).")
    to: list[str] = Field(default_factory=list, description="smtp: recipients.")
    sender: str | None = Field(default=None, description="smtp: the From address (default: the connection's).")
    events: list[Literal["failed", "rejected", "deadline", "published", "approval"]] = Field(
        default_factory=lambda: ["failed", "rejected", "deadline", "approval"],
        description="What is sent: a failed task, a rejected snapshot, a missed freshness deadline, "
                    "a published snapshot, an approval waiting.")

    @model_validator(mode="after")
    def _target(self) -> "NotifierConfig":
        if self.kind == "smtp":
            if not self.to:
                raise ValueError("an smtp notifier needs `to` (a list of addresses)")
        elif not (self.url or self.url_env or self.conn_id):
            raise ValueError(f"a {self.kind} notifier needs one of url, url_env or conn_id")
        if self.url is not None and urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"{self.url!r} is not an http(s) URL")
        return self


class ApprovalConfig(_Strict):
    """A content owner approves a snapshot before the alias moves (an Airflow Human-in-the-loop task)."""

    required: bool = False
    approvers: list[str] = Field(default_factory=list, description="Airflow users who may decide; empty: any.")
    timeout_hours: float = Field(default=72, gt=0, description="Undecided this long: the snapshot is not published.")


class AirflowConfig(_Strict):
    """How the site's own DAG (``sitekb_<name>``) is scheduled and run (sitekb.orchestration.dag_factory)."""

    schedule: str | None = Field(
        default="@daily", description="A cron expression or preset (@daily, @hourly, ...); null: manual only. "
                                      "The demo site is only scheduled when its file sets this.")
    schedule_assets: list[str] = Field(
        default_factory=list, description="Asset URIs: the DAG runs when any of them is updated (instead of a schedule).")
    owner: str = "sitekb"
    tags: list[str] = Field(default_factory=list)
    max_active_runs: int = Field(default=1, ge=1, le=1, description="One run of a site at a time.")
    retries: int = Field(default=2, ge=0, le=10, description="Retries of a task after a transient failure.")
    embed_shard_texts: int = Field(default=2000, ge=1, description="Texts per mapped embed task.")
    max_embed_shards: int = Field(default=16, ge=1, le=256, description="Most mapped embed tasks per run.")
    freshness_hours: float | None = Field(
        default=None, gt=0, description="Deadline: notify when a run has not published this long after it was due.")
    approval: ApprovalConfig = ApprovalConfig()
    notifiers: list[NotifierConfig] = Field(default_factory=list)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str | None) -> str | None:
        if schedule is None or schedule.startswith("@"):
            return schedule
        fields = schedule.split()
        if len(fields) not in (5, 6) or not all(re.fullmatch(r"[0-9*/,\-A-Za-z?LW#]+", f) for f in fields):
            raise ValueError(f"{schedule!r} is not a cron expression (5 fields, e.g. '0 3 * * *') or a preset "
                             "such as @daily")
        return schedule

    @field_validator("schedule_assets")
    @classmethod
    def _asset_uris(cls, uris: list[str]) -> list[str]:
        for uri in uris:
            if "://" not in uri:
                raise ValueError(f"{uri!r} is not an asset URI such as sitekb://docs/production")
        return uris


class GoldenQuestion(_Strict):
    """A question the site must answer, and the page that answers it.

    ``expected_url`` is written as people write URLs: a path (``/help/reset-password``)
    or an absolute URL, with or without the page's extension (``.html``), an
    ``index.html`` or a trailing slash; a fragment is ignored, and so is the query
    unless one is given (sitekb.urls). It must name a page of every snapshot.
    """

    question: str
    expected_url: str = Field(description="A path such as /help/reset-password, or an absolute http(s) URL.")

    @field_validator("question")
    @classmethod
    def _question_has_words(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("is empty")
        return question

    @field_validator("expected_url")
    @classmethod
    def _expected_url_is_a_page(cls, url: str) -> str:
        url = url.strip()
        parts = urlsplit(url)
        if not url:
            raise ValueError("is empty: write a path such as /help/reset-password or an absolute http(s) URL")
        if parts.scheme and (parts.scheme.lower() not in ("http", "https") or not parts.hostname):
            raise ValueError(f"{url!r} is not a path such as /help/reset-password or an absolute http(s) URL")
        return url


# Text a messaging pattern is tried on when the config loads: one that matches an empty string in it would
# match every page.
_EMPTY_MATCH_PROBE = "Acme Cloud, free forever.\nA b-c 1 2."


class MessagingRule(_Strict):
    """One retired term or claim (sitekb.messaging): what to look for, what to say instead, what to do.

    ``term`` is a word or phrase, matched case-insensitively on word boundaries,
    whatever whitespace or line break separates its words; ``pattern`` is a
    regular expression (case-insensitive; ``(?-i:...)`` turns that off). A rule
    names its replacement or says why in a note. ``policy``: ``report`` (name
    the pages in the snapshot's record), ``quarantine`` (hold each page back,
    before it is chunked or embedded) or ``block`` (reject the snapshot: the
    live one stays).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    term: str | None = Field(default=None, description="A word or phrase, e.g. 'Acme Cloud'.")
    pattern: str | None = Field(default=None, description="A regular expression, e.g. 'free\\s+forever'.")
    replacement: str | None = Field(default=None, description="What the site says now, e.g. 'Acme Platform'.")
    note: str | None = Field(default=None, description="Why the term or claim is retired, for the writer.")
    name: str | None = Field(default=None, description="How reports name the rule (default: its term or pattern).")
    policy: Policy = Field(default="report", description="report, quarantine or block.")

    @property
    def key(self) -> str:
        """The rule's name in every record and report: its name, else its term or pattern."""
        return self.name or self.term or self.pattern or ""

    @model_validator(mode="after")
    def _one_matcher_and_advice(self) -> "MessagingRule":
        for field_name in ("term", "pattern", "replacement", "note", "name"):
            value = getattr(self, field_name)
            if value is not None and not value.strip():
                raise ValueError(f"{field_name} is empty: give it a value or leave the key out")
        if (self.term is None) == (self.pattern is None):
            raise ValueError("give a rule exactly one of `term` (a word or phrase, e.g. term: Acme Cloud) or "
                             "`pattern` (a regular expression)")
        label = f"rule {self.key!r}"
        if self.pattern is not None:
            try:
                compiled = re.compile(self.pattern, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"{label}: pattern {self.pattern!r} is not a valid regular expression: {exc}; "
                                 "write a term instead if you mean the words literally") from None
            # `x*`, `a|` or a bare `\b` match nothing at all somewhere on every page: a rule must match words.
            if any(found.end() == found.start() for text in ("", _EMPTY_MATCH_PROBE)
                   for found in compiled.finditer(text)):
                raise ValueError(f"{label}: pattern {self.pattern!r} matches the empty text, so it would flag "
                                 "every page; make it require at least one character")
        if self.replacement is None and self.note is None:
            raise ValueError(f"{label}: say what writers should do instead: a `replacement` (e.g. replacement: "
                             "Acme Platform) or a `note` (e.g. note: we no longer offer a free tier)")
        return self


class MessagingConfig(_Strict):
    """Retired terms and claims the site must no longer use (``messaging.rules``; sitekb.messaging)."""

    rules: list[MessagingRule] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _a_bare_list_is_the_rules(cls, data):
        # `messaging:` followed directly by the list of rules reads naturally in YAML.
        return {"rules": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _rules_are_told_apart(self) -> "MessagingConfig":
        seen: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            key = " ".join(rule.key.split()).casefold()  # "Acme  Cloud" is the term "acme cloud"
            if key in seen:
                raise ValueError(f"rules {seen[key]} and {index} are both named {rule.key!r}: every rule needs its "
                                 "own term, pattern or name (reports and approvals name rules by it)")
            seen[key] = index
        return self


class CoverageConfig(_Strict):
    """What a snapshot's coverage warns of (sitekb.coverage): a warning in the run summary and report, never a
    rejection. Strict types, as the quality thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_section_share: float = Field(
        default=0.6, gt=0, le=1,
        description="Largest share of a snapshot's chunks one site section (first URL path segment: /blog/, "
                    "/docs/, / for the root) may hold before the run warns: a bot trained on one corner of the "
                    "site answers from that corner. 1 never warns.")


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
    coverage: CoverageConfig = CoverageConfig()
    messaging: MessagingConfig = Field(
        default_factory=MessagingConfig,
        description="Retired terms and claims (a product renamed, an offer withdrawn): every snapshot reports "
                    "the pages and chunks that still use them; a rule may quarantine those pages or block the "
                    "publish.")
    golden_questions: list[GoldenQuestion] = Field(default_factory=list)
    golden_k: int = Field(default=5, ge=1, le=100)
    golden_tolerance: int = Field(default=0, ge=0)
    golden_min_share: float = Field(
        default=0.5, ge=0, le=1, strict=True,
        description="Share of the golden questions that must find their page in the top golden_k, rounded up "
                    "(0.5 of 5 is 3), checked on every snapshot, the first one too, and besides the "
                    "comparison with the live one; 0 leaves only that comparison.",
    )
    golden_mode: Mode = Field(
        default="hybrid", description="Search mode the golden questions are asked in (the API's default)."
    )
    airflow: AirflowConfig = AirflowConfig()
    keep_snapshots: int = Field(
        default=5, ge=1,
        description="Snapshots kept by retention (plus aliased and pinned ones); also how many runs keep their documents.",
    )
    history_runs: int = Field(
        default=100, ge=1,
        description="Run records (with their crawl statistics, exclusions and fetch failures) kept per site; "
                    "older ones are deleted when a run starts, unless a kept snapshot or the newest full crawl "
                    "needs them. The alias history (who published or rolled back) is never trimmed.",
    )

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
        # How the site is scheduled and alerted (the airflow section) and how much run history it keeps
        # do not change what it knows.
        excluded = {"airflow", "history_runs"}
        if not self.messaging.rules:
            excluded.add("messaging")  # a config without rules fingerprints as it did before the section existed
        payload = json.dumps(self.model_dump(mode="json", exclude=excluded), sort_keys=True).encode()
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


def resolve_site_path(site: str, sites_dir: Path) -> Path:
    """A name under the sites folder, or a path to a YAML file."""
    if site.endswith((".yaml", ".yml")) or os.sep in site:
        path = Path(site)
    else:
        path = sites_dir / f"{site}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in sites_dir.glob("*.yaml"))) or "none"
        raise ConfigError(
            f"site config {site!r} not found (looked for {path}). "
            f"Known sites in {sites_dir}: {known}. Pass a name from that folder or a path to a YAML file."
        )
    return path


def load_site(site: str, overrides: dict | None = None, *, sites_dir: Path | None = None) -> SiteConfig:
    """Load and validate a site config; ``overrides`` (environment, CLI) win over the file."""
    path = resolve_site_path(site, sites_dir or DEFAULT_SITES_DIR)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    data.setdefault("name", path.stem)
    return site_from_dict(_deep_merge(data, overrides or {}), source=str(path))


def resolve_site(site: "str | SiteConfig", settings: Settings, overrides: dict | None = None,
                 start_url: str | None = None) -> SiteConfig:
    """The effective site config of a run: file < environment < CLI overrides; a start URL rebases it."""
    if isinstance(site, SiteConfig):
        config = site
    else:
        config = load_site(site, _deep_merge(settings.site_overrides(), overrides or {}), sites_dir=settings.sites_dir)
    if start_url:
        config = config.with_base_url(start_url)
    return config


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
