"""Corrections (`sitekb corrections`, `sitekb quarantine export`): a content owner's text for a page, used
while the page is unchanged and expired when it changes, on a site served on 127.0.0.1 (issue 15)."""

from __future__ import annotations

import json

import pytest

from sitekb import corrections, engine, report
from sitekb.cli import main
from sitekb.errors import ConfigError
from tests.crawl.conftest import site_config
from tests.crawl.fixture_site import FixtureSite, html_reply, page

FIXED = ("# Webinar transcript\n\nThe cleaned transcript says the rehearsal is on Tuesday at noon sharp. "
         + " ".join(f"Speaker {n} answered the question about registrants and recordings clearly." for n in range(12))
         + "\n")


@pytest.fixture
def web():
    with FixtureSite() as site:
        yield site


TOPICS = {
    "/": ("Home", "campaign calendar budget owners quarterly review planning roadmap"),
    "/a.html": ("Alpha guide", "lead scoring points demo request pricing visit sales handover threshold"),
    "/b.html": ("Beta guide", "email deliverability complaint rate authentication sender reputation bounce"),
    "/webinar.html": ("Webinar transcript", "speaker rehearsal recording registrants slides questions moderator"),
}


def _text(words: str, n: int, salt: str = "") -> str:
    vocabulary = words.split()
    return "".join(f"<p>{' '.join(vocabulary[(i + j) % len(vocabulary)] for j in range(12))} {salt}{i}.</p>"
                   for i in range(n))


def _serve(web, changed: bool = False) -> None:
    links = ["/a.html", "/b.html", "/webinar.html"]
    for path, (title, words) in TOPICS.items():
        extra = _text(words, 25, "v2 " if changed and path == "/webinar.html" else "")
        web.add(path, html_reply(page(title, body=extra, words=0, links=links if path == "/" else [])))


def _site(web):
    config = site_config(web.base_url)
    data = config.model_dump(mode="json")
    data["quality"] = {**data.get("quality", {}), "min_documents": 1}
    return type(config).model_validate(data)


def test_a_correction_survives_an_unchanged_recrawl_and_expires_when_the_page_changes(conn, settings, web, tmp_path,
                                                                                      capsys):
    _serve(web)
    site = _site(web)
    engine.refresh(settings, site, run_id="c1")
    url = web.base_url + "/webinar.html"
    fixed = tmp_path / "fixed.md"
    fixed.write_text("---\nurl: " + url + "\n---\n" + FIXED, encoding="utf-8")
    assert main(["corrections", "add", url, "--file", str(fixed), "--reason", "cleaned transcript", "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["status"] == "active" and added["markdown"] == FIXED      # the front matter is stripped

    # An unchanged page (a 304) gets the corrected text, which is what is published and explained.
    engine.refresh(settings, site, run_id="c2")
    markdown, correction_id = conn.execute(
        "SELECT markdown, correction_id FROM sitekb.documents WHERE run_id = 'c2' AND url = %s", (url,)).fetchone()
    assert "rehearsal is on Tuesday at noon" in markdown and correction_id == added["id"]
    assert main(["explain", "rehearsal on Tuesday at noon", "--site", "fixture", "--mode", "keyword", "-k", "1",
                 "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]
    assert top["url"] == url and top["correction"]["reason"] == "cleaned transcript"
    assert top["correction"]["by"] == added["added_by"]
    assert main(["explain", "rehearsal on Tuesday at noon", "--site", "fixture", "--mode", "keyword", "-k", "1"]) == 0
    assert "corrected  by" in capsys.readouterr().out

    # The page changes: the correction expires, the run says so, the audit log lists it.
    _serve(web, changed=True)
    engine.refresh(settings, site, run_id="c3")
    markdown, correction_id = conn.execute(
        "SELECT markdown, correction_id FROM sitekb.documents WHERE run_id = 'c3' AND url = %s", (url,)).fetchone()
    assert correction_id is None and "Tuesday" not in markdown
    row = conn.execute("SELECT status, expired_hash, expired_run FROM sitekb.corrections WHERE id = %s",
                       (added["id"],)).fetchone()
    assert row[0] == "expired" and row[1] and row[2] == "c3"
    summary = report.run_summary(conn, "c3")
    assert url in summary["corrections_expired"]
    assert any("expired" in w and url in w for w in summary["warnings"])
    assert "WARNING" in report.format_summary(summary)
    assert main(["audit", "--site", "fixture", "--json"]) == 0
    acts = [(r["action"], r["target"]) for r in json.loads(capsys.readouterr().out)]
    assert ("correction expired", url) in acts and ("corrected", url) in acts
    assert main(["corrections", "list", "--site", "fixture", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["corrections", "list", "--all"]) == 0
    assert "expired" in capsys.readouterr().out


def test_add_list_remove_and_quarantine_export(conn, settings, web, tmp_path, capsys):
    _serve(web)
    site = _site(web)
    engine.refresh(settings, site, run_id="q1")
    url = web.base_url + "/webinar.html"
    # Pretend the gate held the transcript back, as a noisy one would be.
    conn.execute("""UPDATE sitekb.documents SET status = 'quarantined',
                           failures = '[{"check": "transcript_noise", "value": 0.4, "message": "noisy"}]'
                    WHERE run_id = 'q1' AND url = %s""", (url,))
    assert main(["quarantine", "export", "--site", "fixture", "--dir", str(tmp_path / "fix"), "--json"]) == 0
    (written,) = json.loads(capsys.readouterr().out)
    text = open(written["path"], encoding="utf-8").read()
    assert text.startswith("---\n") and f"url: {url}" in text and "transcript_noise: noisy" in text
    meta, body = corrections.parse_text(text)
    assert meta["url"] == url and "Webinar transcript" in body
    # The editor's fix goes back in with its front matter.
    with open(written["path"], "w", encoding="utf-8") as f:
        f.write(text.split("---\n", 2)[0] + "---\n" + text.split("---\n", 2)[1] + "---\n" + FIXED)
    assert main(["corrections", "add", url, "--file", written["path"], "--reason", "fixed transcript"]) == 0
    assert "recorded" in capsys.readouterr().out
    assert main(["corrections", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["url"] == url and listed["status"] == "active"
    # A file exported from another page, or an unknown URL, is refused with what to do.
    with pytest.raises(ConfigError, match="front matter is of"):
        corrections.add(conn, web.base_url + "/a.html", FIXED, "x", meta={"url": url})
    assert main(["corrections", "add", web.base_url + "/nope.html", "--file", written["path"], "--reason", "x"]) == 7
    assert main(["corrections", "remove", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "removed"
    assert main(["corrections", "remove", url]) == 7
    assert main(["audit", "--site", "fixture", "--action", "correction removed", "--json"]) == 0
    assert [r["target"] for r in json.loads(capsys.readouterr().out)] == [url]
