"""End to end: the demo site's own DAG (`sitekb_demo`) on the demo site, then search, re-run and failures.

The first run goes through Airflow (`airflow dags test` with SQLite metadata),
exactly as `make run` does; later runs use the in-process engine to keep the
suite fast. All runs share one database so the second run can reuse embeddings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _reset_schema

REPO = Path(__file__).resolve().parents[2]
SITEKB = [sys.executable, "-m", "sitekb.cli"]


def sitekb(*args: str, env: dict, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([*SITEKB, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"sitekb {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def env(database_server, tmp_path_factory):
    _reset_schema(database_server)
    home = tmp_path_factory.mktemp("sitekb-home")
    environment = dict(os.environ)
    environment.update({"SITEKB_DATABASE_URL": database_server, "SITEKB_HOME": str(home)})
    return environment


@pytest.fixture(scope="module")
def first_run(env, demo_site):
    result = sitekb("run", "demo", "--engine", "airflow", "--start-url", demo_site.base_url, "--json", env=env)
    return json.loads(result.stdout)


def test_airflow_run_publishes_a_snapshot(first_run):
    assert first_run["status"] == "succeeded"
    assert first_run["snapshot_state"] == "published"
    assert first_run["aliases"] == ["production"]
    assert first_run["pages_crawled"] >= 45
    assert first_run["documents"] >= 40
    assert first_run["chunks"] >= first_run["documents"]
    assert first_run["embedding_model"] == "local:all-MiniLM-L6-v2"
    assert first_run["dimensions"] == 384
    assert first_run["embeddings_computed"] > 0
    assert set(first_run["stage_seconds"]) == {"crawl", "extract", "validate", "chunk", "embed", "build",
                                              "evaluate", "publish"}


def test_opt_outs_and_noise_stay_out(first_run):
    excluded = first_run["excluded"]
    assert excluded.get("label") == 1          # #do_NOT_train_on_this
    assert excluded.get("robots-meta") == 1    # <meta name="robots" content="noai">
    assert excluded.get("canonical") == 1      # the syndicated copy points at its original
    assert excluded.get("robots-txt") == 1     # /private/ is disallowed
    assert first_run["crawl_errors"].get("http_404") == 1  # the broken link
    quarantined = " ".join(first_run["quarantined_urls"])
    assert "webinar-lead-scoring-transcript" in quarantined
    assert "tags/martech" in quarantined


def test_sample_search_and_golden_questions(first_run):
    assert first_run["golden"]["hits"] == first_run["golden"]["asked"] >= 5
    top = first_run["sample_search"][0]
    assert top["url"].endswith("/articles/lead-scoring-fundamentals.html")
    assert top["snippet"] and top["title"]


def test_search_command_answers_with_sources(first_run, env):
    result = sitekb("search", "What spam complaint rate must bulk senders stay under for Gmail?",
                    "--site", "demo", "--k", "3", "--json", env=env)
    payload = json.loads(result.stdout)
    assert payload["snapshot_id"] == first_run["snapshot_id"]
    assert len(payload["results"]) == 3
    assert payload["results"][0]["url"].endswith("/articles/email-deliverability-basics.html")
    assert all(r["url"].startswith("http://127.0.0.1") for r in payload["results"])
    text = sitekb("search", "lead routing rules", "--site", "demo", env=env).stdout
    assert "http://127.0.0.1" in text


def test_second_run_reuses_every_embedding(first_run, env, demo_site):
    result = sitekb("run", "demo", "--start-url", demo_site.base_url, "--json", "--question", "", env=env)
    second = json.loads(result.stdout)
    assert second["status"] == "succeeded"
    assert second["snapshot_id"] != first_run["snapshot_id"]
    assert second["embeddings_computed"] == 0
    assert second["embeddings_reused"] == second["chunks"] == first_run["chunks"]
    assert second["pages_not_modified"] >= 40  # conditional GET: ETag / Last-Modified
    # Nothing changed, so nothing is extracted again: every document is the first run's.
    assert second["documents_reused"] == second["documents"] + second["quarantined"]
    assert second["diff"]["added"] == second["diff"]["removed"] == second["diff"]["changed"] == 0


def test_the_run_logs_each_stage_and_a_finished_run_is_not_taken_up_again(first_run, env, demo_site):
    result = sitekb("run", "demo", "--start-url", demo_site.base_url, "--question", "", env=env)
    logged = [line for line in result.stderr.splitlines() if "engine: [" in line and not line.endswith("...")]
    assert [line.split("[", 1)[1].split("]")[0] for line in logged] == [
        "crawl", "extract", "validate", "chunk", "embed", "build", "evaluate", "publish"]
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr
    refused = sitekb("run", "demo", "--start-url", demo_site.base_url, "--from", "evaluate", env=env, check=False)
    assert refused.returncode == 1 and "already succeeded" in refused.stderr and "Traceback" not in refused.stderr


def test_unreachable_site_fails_clearly_and_keeps_the_live_snapshot(first_run, env):
    before = json.loads(sitekb("snapshots", "list", "--site", "demo", "--json", env=env).stdout)
    live = [s["snapshot_id"] for s in before if "production" in s["aliases"]]
    result = sitekb("run", "demo", "--start-url", "http://127.0.0.1:9/", env=env, check=False)
    assert result.returncode == 4
    assert "unreachable" in result.stderr and "http://127.0.0.1:9/" in result.stderr
    assert "Traceback" not in result.stderr
    after = json.loads(sitekb("snapshots", "list", "--site", "demo", "--json", env=env).stdout)
    assert [s["snapshot_id"] for s in after if "production" in s["aliases"]] == live


def test_bad_site_config_names_the_problem(env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstart_urls: [http://127.0.0.1:9/]\ncrawl:\n  max_pagez: 10\n")
    result = sitekb("run", str(bad), env=env, check=False)
    assert result.returncode == 2
    assert "crawl.max_pagez" in result.stderr and "unknown key" in result.stderr
    missing = sitekb("run", "no-such-site", env=env, check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr and "demo" in missing.stderr


def test_database_down_is_one_clear_message(env):
    down = dict(env, SITEKB_DATABASE_URL="postgresql://sitekb@127.0.0.1:1/sitekb")
    result = sitekb("search", "anything", env=down, check=False)
    assert result.returncode == 3
    assert "cannot connect to the database" in result.stderr and "Traceback" not in result.stderr
