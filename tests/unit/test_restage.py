"""A rebuild's verdict on a stored page (:mod:`sitekb.restage`): the crawler's rules over inline pages, no network."""

from __future__ import annotations

import pytest

from sitekb.restage import RETRACTABLE, _Rules
from sitekb.sites import site_from_dict
from sitekb.store.restage import Staged

BASE = "https://acme.example"


def rules(**sections) -> _Rules:
    return _Rules(site_from_dict({"name": "acme", "start_urls": [BASE + "/"], **sections}))


def page(path: str = "/a.html", body: str = "<html><head><title>A</title></head><body><p>Text.</p></body></html>",
         headers: dict | None = None, content_type: str | None = "text/html; charset=utf-8") -> Staged:
    return Staged(BASE + path, 200, content_type, body, headers or {}, None)


def test_a_page_the_config_still_allows_stays_in():
    assert rules().verdict(page()) is None


@pytest.mark.parametrize("sections, stored, rule", [
    ({"crawl": {"exclude_patterns": [r"/a\.html$"]}}, page(), "excluded-pattern"),
    ({"crawl": {"include_patterns": [r"/docs/"]}}, page(), "not-included"),
    ({"crawl": {"content_types": ["text/html"]}}, page(content_type="application/pdf", body="# A PDF"),
     "content-type"),
    ({"opt_out": {"labels": ["#internal_only"]}}, page(body="<p>Plan. #internal_only</p>"), "label"),
    ({}, page(body='<html><head><meta name="robots" content="noai"></head><body>x</body></html>'), "robots-meta"),
    ({}, page(headers={"X-Robots-Tag": "noai"}), "x-robots-tag"),
    ({}, page(headers={"tdm-reservation": "1"}), "tdm-reservation"),
    ({"opt_out": {"opt_in_only": True}}, page(), "opt-in-missing"),
    # A PDF's stored text is checked for labels, as the crawler checks it.
    ({"opt_out": {"labels": ["#internal_only"]}},
     page("/a.pdf", body="# Deck\n\n#internal_only", content_type="application/pdf"), "label"),
])
def test_the_current_config_leaves_a_stored_page_out_by_the_crawlers_rule(sections, stored, rule):
    verdict = rules(**sections).verdict(stored)
    assert verdict is not None and verdict.rule == rule and verdict.url == stored.url


def test_a_robots_value_the_site_does_not_deny_keeps_the_page_and_url_rules_are_retractable():
    assert rules(opt_out={"robots_values": ["noai"]}).verdict(
        page(body='<html><head><meta name="robots" content="noindex"></head><body>x</body></html>')) is None
    # Rules of the config a later rebuild may take back (the stored fetch is kept), never an opt-out.
    assert {"excluded-pattern", "not-included", "content-type"} <= RETRACTABLE
    assert not RETRACTABLE & {"label", "robots-meta", "x-robots-tag", "tdm-reservation", "opt-in-missing"}
