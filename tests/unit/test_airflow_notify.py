"""A site's alerts and a run's note: notifiers against a webhook receiver on 127.0.0.1, the note's text.

The notifiers are Airflow notifiers (``BaseNotifier``) called with a callback
context; here the context is the few fields they read, and the receiver is a
real HTTP server on loopback that records what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from sitekb.errors import ConfigError
from sitekb.orchestration import notes, notify
from sitekb.report import format_note
from sitekb.sites import site_from_dict


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every JSON body; ``status`` is what it answers."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.paths: list[str] = []   # request paths with their query (a token in the URL shows here)
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.paths.append(self.path)
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _context(task_id="crawl", exception=None):
    ti = SimpleNamespace(dag_id="sitekb_shop", run_id="manual__1", task_id=task_id, try_number=3)
    return {"ti": ti, "dag_run": SimpleNamespace(dag_id="sitekb_shop", run_id="manual__1"), "exception": exception}


def test_a_failed_task_reaches_the_webhook_with_the_facts(receiver):
    targets = [{"kind": "webhook", "url": receiver.url, "events": ["failed"]}]
    notify.SitekbNotifier(site="shop", targets=targets, event="failed").notify(
        _context(exception=RuntimeError("connection refused")))
    [body] = receiver.bodies
    assert body["site"] == "shop" and body["event"] == "failed" and body["task_id"] == "crawl"
    assert body["dag_id"] == "sitekb_shop" and body["run_id"] == "manual__1"
    assert "connection refused" in body["text"]


def test_a_failed_gate_is_sent_as_rejected_with_its_reason(receiver):
    targets = [{"kind": "webhook", "url": receiver.url, "events": ["rejected"]}]
    reason = "QualityGateFailed: snapshot 7 of 'shop' was rejected and not published: pages_drop: 60% of pages vanished"
    notify.SitekbNotifier(site="shop", targets=targets, event="failed").notify(
        _context("evaluate", RuntimeError(reason)))
    [body] = receiver.bodies
    assert body["event"] == "rejected" and "pages_drop" in body["text"] and body["task_id"] == "evaluate"


def test_a_target_hears_only_the_events_it_lists(receiver):
    targets = [{"kind": "webhook", "url": receiver.url, "events": ["published"]}]
    assert notify.send(targets, "failed", site="shop", text="x") == 0
    assert notify.send(targets, "published", site="shop", text="live") == 1
    assert [b["event"] for b in receiver.bodies] == ["published"]


def test_slack_gets_text_only_and_the_url_can_come_from_the_environment(receiver, monkeypatch):
    monkeypatch.setenv("SHOP_SLACK_URL", receiver.url)
    targets = [{"kind": "slack", "url_env": "SHOP_SLACK_URL", "events": ["failed"]}]
    assert notify.send(targets, "failed", site="shop", text="sitekb shop: task crawl failed") == 1
    assert receiver.bodies == [{"text": "sitekb shop: task crawl failed"}]


def test_a_failed_delivery_never_raises(receiver, caplog):
    receiver.status = 500
    targets = [{"kind": "webhook", "url": receiver.url, "events": ["failed"]},
               {"kind": "slack", "url_env": "SITEKB_TEST_UNSET_URL", "events": ["failed"]}]
    assert notify.send(targets, "failed", site="shop", text="x") == 0
    assert "could not deliver" in caplog.text and "SITEKB_TEST_UNSET_URL is not set" in caplog.text


def test_a_missed_freshness_deadline_is_sent_from_the_async_callback(receiver):
    targets = [{"kind": "webhook", "url": receiver.url, "events": ["deadline"]}]
    sent = asyncio.run(notify.deadline_missed("shop", targets, 36, context={"dag_run": {"run_id": "scheduled__x"}}))
    assert sent == 1
    [body] = receiver.bodies
    assert body["event"] == "deadline" and body["deadline_hours"] == 36 and "scheduled__x" in body["text"]


def test_notifier_config_is_checked_with_the_field_named():
    base = {"name": "shop", "start_urls": ["https://shop.example.com/"],
            "crawl": {"contact_url": "https://ops.example.com/bot"}}
    with pytest.raises(ConfigError, match=r"airflow.notifiers.0.*needs one of url, url_env or conn_id"):
        site_from_dict({**base, "airflow": {"notifiers": [{"kind": "webhook"}]}})
    with pytest.raises(ConfigError, match=r"airflow.notifiers.0.*needs `to`"):
        site_from_dict({**base, "airflow": {"notifiers": [{"kind": "smtp"}]}})
    with pytest.raises(ConfigError, match=r"airflow.schedule.*not a cron expression"):
        site_from_dict({**base, "airflow": {"schedule": "every day"}})
    with pytest.raises(ConfigError, match=r"airflow.notifiers.0.events.0"):
        site_from_dict({**base, "airflow": {"notifiers": [{"kind": "webhook", "url": "http://x/", "events": ["oops"]}]}})


def test_the_scheduling_section_does_not_change_the_config_hash():
    base = {"name": "shop", "start_urls": ["https://shop.example.com/"],
            "crawl": {"contact_url": "https://ops.example.com/bot"}}
    assert site_from_dict(base).config_hash() == site_from_dict({**base, "airflow": {"schedule": "@hourly"}}).config_hash()


SUMMARY = {
    "run_id": "shop__manual__1", "site": "shop", "status": "succeeded", "error": None, "snapshot_id": 12,
    "aliases": ["production"], "pages_crawled": 40, "pages_not_modified": 31, "excluded": {"robots-txt": 2, "label": 1},
    "crawl_errors": {}, "documents": 37, "quarantined": 2, "chunks": 180, "tokens": 21000,
    "embeddings_computed": 14, "embeddings_reused": 166, "spend": {"requests": 1, "inputs": 14, "tokens": 1700, "usd": 0.00003},
    "verdict": "passed", "golden": {"hits": 8, "asked": 8}, "diff": {"added": 1, "removed": 0, "changed": 3},
    "dry_run": False, "estimated_usd": 0.0,
}


def test_the_run_note_says_what_the_run_did():
    note = format_note(SUMMARY)
    assert note.startswith("**sitekb shop** · snapshot 12 published to production")
    for part in ("40 (31 not modified)", "label=1, robots-txt=2", "37 accepted, 2 quarantined", "180, 21000 tokens",
                 "embedded 14 new, 166 reused", "1700 tokens billed, $0.0000", "gate: passed; golden 8/8",
                 "+1 pages, -0, ~3 changed", "shop__manual__1"):
        assert part in note, part
    assert len(note) <= notes.NOTE_LIMIT


def test_a_rejected_run_note_gives_the_reason():
    note = format_note({**SUMMARY, "status": "blocked", "verdict": "rejected", "aliases": [],
                        "error": "golden_questions: answers 5/8, live answers 8"})
    assert "REJECTED, live snapshot unchanged" in note and "reason: golden_questions" in note


def test_a_long_note_is_cut_at_a_line():
    text = "\n".join(f"line {i} " + "x" * 60 for i in range(40))
    short = notes.shorten(text)
    assert len(short) <= notes.NOTE_LIMIT and short.endswith("\n…")
    assert all(line.startswith("line") or line == "…" for line in short.splitlines())


class MailReceiver:
    """An SMTP server on 127.0.0.1 that keeps each message's envelope and data (no TLS, no auth)."""

    def __init__(self):
        import socketserver

        self.messages: list[dict] = []
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                message = {"rcpt": [], "data": ""}
                self.wfile.write(b"220 localhost ESMTP test\r\n")
                while line := self.rfile.readline():
                    verb = line.decode().strip().upper()
                    if verb.startswith(("EHLO", "HELO")):
                        self.wfile.write(b"250 localhost\r\n")
                    elif verb.startswith("MAIL FROM"):
                        message["from"] = line.decode().strip()[10:]
                        self.wfile.write(b"250 OK\r\n")
                    elif verb.startswith("RCPT TO"):
                        message["rcpt"].append(line.decode().strip()[8:])
                        self.wfile.write(b"250 OK\r\n")
                    elif verb == "DATA":
                        self.wfile.write(b"354 go ahead\r\n")
                        lines = []
                        while (data := self.rfile.readline()) not in (b".\r\n", b""):
                            lines.append(data.decode(errors="replace"))
                        message["data"] = "".join(lines)
                        receiver.messages.append(message)
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 OK\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_smtp_mails_the_alert_through_the_airflow_connection(monkeypatch, tmp_path):
    mail = MailReceiver()
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_KB_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": mail.port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "kb@example.com"}}))
    targets = [{"kind": "smtp", "conn_id": "kb_smtp", "to": ["owner@example.com"], "events": ["rejected"]}]
    try:
        assert notify.send(targets, "rejected", site="shop", text="sitekb shop: snapshot 9 was rejected") == 1
    finally:
        mail.server.shutdown()
    [message] = mail.messages
    assert "owner@example.com" in message["rcpt"][0] and "kb@example.com" in message["from"]
    assert "sitekb shop: snapshot 9 was rejected" in message["data"]
