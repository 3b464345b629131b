"""Messaging pivots without a database: the config's rules and their errors, matching, excerpts, the gate's
failures (sitekb.messaging, sitekb.sites.MessagingRule)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sitekb import messaging
from sitekb.errors import ConfigError
from sitekb.sites import MessagingRule, load_site, site_from_dict

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def config(rules) -> "object":
    return site_from_dict({"name": "x", "start_urls": ["https://a.test/"], "messaging": rules})


def rule(**fields) -> MessagingRule:
    fields.setdefault("note", "retired")
    return MessagingRule(**fields)


def hits(r: MessagingRule, text: str) -> int:
    found = messaging.Hits.of(r, text)
    return found.count if found else 0


# -- the config --------------------------------------------------------------

def test_rules_load_as_a_bare_list_or_under_rules_and_report_by_default():
    bare = config([{"term": "Acme Cloud", "replacement": "Acme Platform"},
                   {"pattern": r"free\s+forever", "note": "the free tier ended", "name": "free forever",
                    "policy": "block"}])
    nested = config({"rules": [{"term": "Acme Cloud", "replacement": "Acme Platform"}]})
    assert bare.messaging.rules[0] == nested.messaging.rules[0]
    assert [r.policy for r in bare.messaging.rules] == ["report", "block"]
    assert [r.key for r in bare.messaging.rules] == ["Acme Cloud", "free forever"]


@pytest.mark.parametrize("rules, fragment", [
    ([{"term": "Acme", "pattern": "acme", "note": "x"}], "exactly one of `term`"),
    ([{"note": "x"}], "exactly one of `term`"),
    ([{"pattern": "Acme (Cloud", "note": "x"}], "pattern 'Acme (Cloud' is not a valid regular expression"),
    ([{"pattern": "x*", "note": "x"}], "matches the empty text"),
    ([{"pattern": "cloud|", "note": "x"}], "matches the empty text"),
    ([{"pattern": r"\b", "note": "x"}], "matches the empty text"),       # empty, but only next to a word
    ([{"term": "Acme Cloud"}], "rule 'Acme Cloud': say what writers should do instead"),
    ([{"term": "  ", "note": "x"}], "term is empty"),
    ([{"term": "Acme", "note": "x", "policy": "delete"}], "messaging.rules.0.policy"),
    ([{"term": "Acme", "note": "x", "replacment": "y"}], "messaging.rules.0.replacment: unknown key"),
    ([{"term": "Acme Cloud", "note": "x"}, {"term": "acme  cloud", "replacement": "y"}],
     "rules 0 and 1 are both named"),
    ([{"term": "Acme", "note": "x", "name": "old"}, {"pattern": "acme", "note": "x", "name": "Old"}],
     "rules 0 and 1 are both named 'Old'"),
])
def test_a_bad_rule_is_named_with_what_to_do(rules, fragment):
    with pytest.raises(ConfigError) as err:
        config(rules)
    assert fragment in str(err.value)
    assert "messaging" in str(err.value)


def test_the_readme_example_is_a_valid_config(tmp_path):
    section = README.split("## Messaging pivots", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "acme.yaml"
    path.write_text("name: acme\nstart_urls: [https://acme.example/]\n" + block)
    site = load_site(str(path))
    assert {r.policy for r in site.messaging.rules} == {"report", "quarantine", "block"}
    assert yaml.safe_load(block)["messaging"]


def test_rules_change_the_config_fingerprint_and_no_rules_do_not():
    plain = site_from_dict({"name": "x", "start_urls": ["https://a.test/"]})
    assert config([]).config_hash() == plain.config_hash()
    assert config([{"term": "Acme", "note": "x"}]).config_hash() != plain.config_hash()


# -- matching ----------------------------------------------------------------

def test_a_term_matches_whole_words_in_any_case_across_line_breaks_and_emphasis():
    acme = rule(term="Acme Cloud")
    assert hits(acme, "Try acme cloud today. ACME CLOUD is fast.") == 2
    assert hits(acme, "Our Acme\nCloud runs in three regions.") == 1
    assert hits(acme, "Our Acme\t  \n  Cloud, and **Acme** Cloud and _Acme Cloud_.") == 3
    assert hits(acme, "Acme Cloud's uptime; (Acme Cloud).") == 2
    assert hits(acme, "AcmeCloud, Acme Cloudy, MyAcme Cloud, Acme Clouds, Acme, Acme Cloud2") == 0
    assert hits(rule(term="C++"), "We rewrote it in C++. Not in C or C#.") == 1
    assert hits(rule(term="C++"), "ABC++ is another language") == 0


def test_a_pattern_is_a_case_insensitive_regular_expression():
    free = rule(pattern=r"free\s+for\s*ever")
    assert hits(free, "It is FREE FOREVER, free for ever, free\nforever.") == 3
    assert hits(free, "freedom forever") == 0
    assert hits(rule(pattern="(?-i:ACME)"), "ACME acme Acme") == 1


def test_the_excerpt_is_the_first_hit_in_whole_words_on_one_line():
    text = ("Intro words here. " * 8) + "Sign up for\nAcme Cloud now and " + ("more words after. " * 8)
    found = messaging.Hits.of(rule(term="acme cloud"), text)
    assert found.count == 1 and found.matched == "Acme Cloud"
    assert "\n" not in found.excerpt and "for Acme Cloud now" in found.excerpt
    assert found.excerpt.startswith("…") and found.excerpt.endswith("…")
    inner = found.excerpt.strip("…")
    assert inner.split()[0] in text.split() and inner.split()[-1] in text.split()   # no word is cut
    assert messaging.Hits.of(rule(term="Acme Cloud"), "Acme Cloud").excerpt == "Acme Cloud"


def test_the_reason_names_the_term_and_the_advice():
    assert messaging.reason(rule(term="Acme  Cloud", replacement="Acme Platform", note=None)) == \
        'retired term "Acme Cloud" (use "Acme Platform")'
    assert messaging.reason(rule(pattern="free forever", name="free tier", note="it ended")) == \
        'retired claim "free tier" (it ended)'
    assert messaging.reason(rule(pattern="free forever", note="it ended")) == 'retired wording /free forever/ (it ended)'


# -- what the gate does with it ------------------------------------------------

RULES = [rule(term="Acme Cloud", replacement="Acme Platform", note=None, policy="quarantine"),
         rule(term="legacy", note="say current", policy="report"),
         rule(pattern=r"free\s+forever", name="free forever", note="the free tier ended", policy="block")]


def test_quarantine_failures_come_from_quarantine_rules_only():
    failures = messaging.quarantine_failures(RULES, "Acme Cloud pricing", "Acme Cloud is legacy and free forever.")
    assert [(f.check, f.value, f.threshold) for f in failures] == [("messaging", "Acme Cloud", "quarantine")]
    assert 'retired term "Acme Cloud" (use "Acme Platform"): 2 times' in failures[0].message
    assert "approve it" in failures[0].message
    assert messaging.quarantine_failures(RULES, "Pricing", "Acme Platform, legacy, free forever.") == []


def test_scan_names_the_pages_their_chunks_and_the_pages_held_back():
    pages = [{"url": "https://a.test/b", "title": "B", "markdown": "Free forever, as in free\nforever."},
             {"url": "https://a.test/a", "title": "Legacy notes", "markdown": "Nothing retired here."},
             {"url": "https://a.test/c", "title": "C", "markdown": "Current wording only."}]
    chunks = [{"chunk_id": "b2", "url": "https://a.test/b", "heading_path": ["B"], "content": "free forever"},
              {"chunk_id": "b1", "url": "https://a.test/b", "heading_path": ["B"], "content": "as in free forever"},
              {"chunk_id": "a1", "url": "https://a.test/a", "heading_path": ["Legacy notes"], "content": "Nothing."},
              {"chunk_id": "a2", "url": "https://a.test/a", "heading_path": ["Other"], "content": "Nothing."},
              {"chunk_id": "c1", "url": "https://a.test/c", "heading_path": [], "content": "legacy"}]
    held = [{"url": "https://a.test/q", "title": "Q", "markdown": "Buy Acme Cloud.", "rules": ["Acme Cloud", "gone"]}]
    acme, legacy, free = messaging.scan(RULES, pages, chunks, held)
    assert acme.pages == [] and [p.url for p in acme.held_back] == ["https://a.test/q"]
    assert acme.held_back[0].excerpt == "Q Buy Acme Cloud."        # title, then text, on one line
    # The title counts for the page; a chunk uses the term in its text or its heading path.
    assert [(p.url, p.count, p.chunk_ids) for p in legacy.pages] == [("https://a.test/a", 1, ["a1"])]
    assert [(p.url, p.count, p.chunk_ids) for p in free.pages] == [("https://a.test/b", 2, ["b1", "b2"])]
    assert free.chunk_ids == ["b1", "b2"] and free.as_dict()["chunks"] == 2
    assert messaging.hit_urls([acme, legacy, free]) == ["https://a.test/a", "https://a.test/b"]

    (blocked,) = messaging.block_failures([acme, legacy, free], snapshot_id=7)
    assert (blocked.check, blocked.value, blocked.threshold) == ("messaging", "free forever", "block")
    assert "messaging rule 'free forever' (policy block)" in blocked.message
    assert "1 page(s) (2 chunks): https://a.test/b" in blocked.message
    assert "`sitekb messaging --snapshot 7`" in blocked.message
    assert messaging.block_failures(messaging.scan(RULES, pages[1:], [], [])) == []


def test_a_rule_with_no_page_left_is_a_finding_too():
    (finding,) = messaging.scan(RULES[:1], [{"url": "u", "title": "t", "markdown": "Acme Platform"}])
    assert finding.as_dict() == {
        "rule": "Acme Cloud", "kind": "term", "match": "Acme Cloud", "policy": "quarantine",
        "replacement": "Acme Platform", "note": None, "reason": 'retired term "Acme Cloud" (use "Acme Platform")',
        "pages": [], "chunks": 0, "chunk_ids": [], "held_back": []}
