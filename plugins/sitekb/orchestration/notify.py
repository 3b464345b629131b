"""A site's alerts: Airflow notifiers over the targets its ``airflow.notifiers`` section lists.

:class:`SitekbNotifier` is an Airflow notifier (``BaseNotifier``): the DAG
factory puts one on every task's failure callback (event ``failed``), on the
publish task's success (``published``) and on the approval task (``approval``);
the report task sends ``rejected`` when the gate or an approver turned the
snapshot down; :func:`freshness_deadline` sends ``deadline`` from the
triggerer when a run misses its DeadlineAlert. Each target receives only the
events it lists.

Targets (:class:`sitekb.sites.NotifierConfig`):

- ``webhook``: POST of a JSON body ``{"site", "event", "text", "dag_id",
  "run_id", "task_id", ...}`` to the URL;
- ``slack``: POST of ``{"text": ...}`` to a Slack incoming-webhook URL;
- ``smtp``: a mail through Airflow's SMTP provider (connection ``conn_id``,
  default ``smtp_default``).

A URL comes from the target's ``url``, the environment variable ``url_env``
names, or the Airflow connection ``conn_id`` (its host when that is a URL,
else its password), so a token-bearing URL never sits in a site file, a log
or the DAG's serialized form. A failed delivery is logged and never fails the
task it reports on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from datetime import timedelta

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10


class SitekbNotifier(BaseNotifier):
    """Tell a site's targets about one kind of event of a task (an Airflow notifier)."""

    template_fields = ()

    def __init__(self, *, site: str, targets: list[dict], event: str):
        super().__init__()
        self.site = site
        self.targets = targets
        self.event = event

    def notify(self, context) -> None:
        text, details = describe(self.site, self.event, context)
        send(self.targets, details["event"], site=self.site, text=text, details=details)


def describe(site: str, event: str, context) -> tuple[str, dict]:
    """One line for people and the facts for machines, from an Airflow callback context."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    details = {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "try_number": getattr(ti, "try_number", None),
    }
    exception = context.get("exception")
    reason = str(exception) if exception else ""
    if event == "failed" and reason.startswith("QualityGateFailed"):
        event = "rejected"
    what = {
        "failed": f"task {details['task_id']} failed",
        "rejected": "the new snapshot was rejected and not published",
        "published": "a new snapshot is live",
        "approval": "a new snapshot waits for approval",
    }.get(event, event)
    text = f"sitekb {site}: {what}" + (f": {reason}" if reason else "") + f" (run {details['run_id']})"
    details["event"] = event
    return text, details


def send(targets: list[dict], event: str, *, site: str, text: str, details: dict | None = None) -> int:
    """Deliver ``text`` to every target that listens for ``event``; return how many got it."""
    delivered = 0
    for target in targets:
        if event not in target.get("events", ()):
            continue
        try:
            _deliver(target, {"site": site, "event": event, "text": text, **(details or {})})
            delivered += 1
        except Exception as exc:  # noqa: BLE001 - an alert must never fail the task it reports on
            log.warning("sitekb %s: %s notifier could not deliver %r: %s", site, target.get("kind"), event,
                        _without_secrets(str(exc), target))
    if delivered:
        log.info("sitekb %s: %r sent to %d notifier(s)", site, event, delivered)
    return delivered


def _deliver(target: dict, payload: dict) -> None:
    kind = target["kind"]
    if kind == "smtp":
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        sender = {"from_email": target["sender"]} if target.get("sender") else {}
        with SmtpHook(smtp_conn_id=target.get("conn_id") or "smtp_default") as hook:
            hook.send_email_smtp(to=target["to"], subject=payload["text"][:150], **sender,
                                 html_content="<pre>" + _escape(json.dumps(payload, indent=2, default=str)) + "</pre>")
        return
    body = {"text": payload["text"]} if kind == "slack" else payload
    request = urllib.request.Request(
        _url(target), data=json.dumps(body, default=str).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "sitekb-notifier"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - http(s) only
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")


def _url(target: dict) -> str:
    if target.get("url"):
        return target["url"]
    if target.get("url_env"):
        from sitekb.settings import Settings

        value = (Settings.from_env().secret(target["url_env"]) or "").strip()
        if not value:
            raise OSError(f"environment variable {target['url_env']} is not set")
        return value
    from airflow.sdk import Connection

    conn = Connection.get(target["conn_id"])
    host = (conn.host or "").strip()
    url = host if "://" in host else (conn.password or "").strip()
    if not url:
        raise OSError(f"connection {target['conn_id']} holds no URL (put it in host, or password)")
    return url


def _without_secrets(message: str, target: dict) -> str:
    try:
        url = _url(target)
    except Exception:  # noqa: BLE001 - only for a log line
        return message
    return message.replace(url, "<url>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- freshness -----------------------------------------------------------------

async def deadline_missed(site: str, targets: list[dict], hours: float, context: dict | None = None) -> int:
    """The DeadlineAlert callback (run by the triggerer): the site has not published in time."""
    run = (context or {}).get("dag_run") or {}
    run_id = run.get("run_id") if isinstance(run, dict) else getattr(run, "run_id", None)
    text = (f"sitekb {site}: freshness deadline missed: the run {run_id or ''} has not published {hours:g} h "
            "after it was queued; the live snapshot is getting old")
    return await asyncio.to_thread(send, targets, "deadline", site=site, text=text,
                                   details={"run_id": run_id, "deadline_hours": hours})


def freshness_deadline(site: str, hours: float, targets: list[dict]):
    """A DeadlineAlert: a run of the site must finish within ``hours`` of being queued, or the targets hear."""
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=hours),
        callback=AsyncCallback(deadline_missed, kwargs={"site": site, "targets": targets, "hours": hours}),
    )
