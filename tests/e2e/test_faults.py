"""End to end: `sitekb run` against an embedding server that keeps failing, and a database that stops mid-run.

Every fault ends the run the same way: one line on stderr (``sitekb: error: ...``,
no traceback, no secret), the documented exit code, the run recorded as
failed with its reason, no snapshot published, and the live snapshot still
answering. The runs are real (`sitekb run` in a subprocess, the demo site on
127.0.0.1, tests/fake_openai.py as the embedding server) against a Postgres
of this module's own, so that stopping it disturbs no other test.

| fault                                   | exit | error                           |
| --------------------------------------- | ---- | ------------------------------- |
| 429 / 500 / timeouts after every retry  | 10   | EmbeddingServiceUnavailable     |
| invalid JSON, too few vectors, NaN      | 10   | EmbeddingServiceFailed          |
| vectors of another size                 | 2    | ConfigError (embedding.dimensions) |
| the database stops in the middle        | 3    | DatabaseUnavailable             |

A run whose database came back before it noticed is marked failed at once; one
whose database stayed away is marked failed by the site's next run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[2]
SITEKB = [sys.executable, "-m", "sitekb.cli"]
SECRET = "s3cret"
API_KEY = "sk-faultsuite-4f9c2a7e1b3d5f60"
DIMENSIONS = 64
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \S+: ")   # sitekb's own log lines (cli._LogFormat)


def sitekb(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*SITEKB, *args], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"sitekb {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


class OwnedDatabase:
    """An embedded Postgres of this module alone (a short path: Unix socket paths are limited)."""

    def __init__(self) -> None:
        from sitekb.store import embedded

        self.embedded = embedded
        self.home = Path(tempfile.mkdtemp(prefix="skf-"))
        self.url = embedded.start(self.home)

    def stop(self) -> None:
        assert self.embedded.stop(self.home)

    def start(self) -> None:
        assert self.embedded.start(self.home) == self.url

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        self.embedded.stop(self.home)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def db():
    owned = OwnedDatabase()
    yield owned
    owned.close()


@pytest.fixture(scope="module")
def server():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def site_file(demo_site, tmp_path_factory) -> str:
    """The demo site under another name, embedded by the fake server with few, short retries."""
    data = yaml.safe_load((REPO / "dags" / "sites" / "demo.yaml").read_text())
    data.update(name="faults", golden_questions=[])
    data["crawl"].update(max_pages=12, sitemaps=[])   # a few pages: what matters here is how a run ends
    data["embedding"] = {"provider": "openai", "model": "text-embedding-3-small", "dimensions": DIMENSIONS,
                         "max_retries": 1, "timeout_seconds": 1, "concurrency": 2, "batch_size": 64}
    text = yaml.safe_dump(data).replace("http://127.0.0.1:8765", demo_site.base_url.rstrip("/"))
    path = tmp_path_factory.mktemp("faults-site") / "faults.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def env(db, server, tmp_path_factory) -> dict:
    environment = dict(os.environ)
    credentialed = server.base_url.replace("http://", f"http://user:{SECRET}@")
    environment.update({"SITEKB_DATABASE_URL": db.url, "SITEKB_HOME": str(tmp_path_factory.mktemp("faults-home")),
                        "OPENAI_BASE_URL": credentialed, "OPENAI_API_KEY": API_KEY})
    return environment


@pytest.fixture(scope="module")
def live(env, site_file, server) -> int:
    """The snapshot a first, healthy run published: every fault must leave it live."""
    summary = json.loads(sitekb("run", site_file, "--question", "", "--json", env=env).stdout)
    assert summary["status"] == "succeeded" and summary["aliases"] == ["production"]
    assert server.stats.ok_requests > 0
    return summary["snapshot_id"]


@pytest.fixture
def faulty(db, server, live):
    """A clean slate per fault: nothing cached (so the run must ask the server), the server healthy after."""
    db.query("TRUNCATE sitekb.embedding_cache")
    server.reset()
    yield server
    server.reset()


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a failed run; everything else on stderr is sitekb's own log lines."""
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("sitekb: error:")]
    assert len(errors) == 1, result.stderr[-4000:]
    assert lines[-1] == errors[0], result.stderr[-4000:]
    others = [line for line in lines[:-1] if not LOG_LINE.match(line)]
    assert others == [], result.stderr[-4000:]
    return errors[0]


def newest_run(db) -> tuple[str, str, str | None]:
    return db.query("""SELECT run_id, status, error FROM sitekb.runs WHERE site = 'faults'
                       ORDER BY started_at DESC LIMIT 1""")[0]


def assert_nothing_published_and_live_answers(db, env, live: int, server) -> None:
    published = db.query("""SELECT s.snapshot_id FROM sitekb.aliases a JOIN sitekb.snapshots s USING (snapshot_id)
                            WHERE s.site = 'faults' AND a.alias = 'production'""")
    assert published == [(live,)]
    assert db.query("SELECT count(*) FROM sitekb.snapshots WHERE site = 'faults' AND state = 'published'") \
        == [(1,)]
    server.reset()
    found = json.loads(sitekb("search", "lead scoring for demo requests", "--site", "faults", "--json",
                              env=env).stdout)
    assert found["snapshot_id"] == live and found["results"]


def assert_no_secret(result: subprocess.CompletedProcess, error: str | None) -> None:
    for secret in (SECRET, API_KEY):
        assert secret not in result.stderr and secret not in result.stdout
        assert secret not in (error or "")


FAULTS = {
    # behaviour: (exit code, what the line says, what the run's error says)
    "429": (10, r"kept failing: answered 429 .*after 1 retry", "answered 429"),
    "500": (10, r"kept failing: answered 500 .*after 1 retry", "answered 500"),
    "slow": (10, r"kept failing: no answer within 1s, after 1 retry", "no answer within 1s"),
    "malformed": (10, r"not an embeddings response: the body is not valid JSON", "not valid JSON"),
    "wrong_count": (10, r"not an embeddings response: \d+ vectors for \d+ inputs", "vectors for"),
    "nan": (10, r"not an embeddings response: the vector at index \d+ holds NaN or infinite values", "NaN"),
    "wrong_dimensions": (2, rf"returned 65-dimensional vectors .*expects {DIMENSIONS}.*embedding\.dimensions",
                         "65-dimensional"),
}


@pytest.mark.parametrize("behaviour", list(FAULTS))
def test_an_embedding_server_that_keeps_failing_ends_the_run_in_one_line(behaviour, faulty, db, env, site_file,
                                                                         live):
    code, says, recorded = FAULTS[behaviour]
    faulty.always(behaviour, retry_after=0, delay=5)
    result = sitekb("run", site_file, "--question", "", env=env, check=False)
    line = error_line(result)
    assert result.returncode == code, line
    assert re.search(says, line), line
    assert f"embedding server {faulty.base_url} " in line   # named, without the user and password of its URL
    assert faulty.stats.requests >= 1
    run_id, status, error = newest_run(db)
    assert f"(run {run_id}, stage embed" in line
    assert status == "failed" and recorded in error
    assert_no_secret(result, error)
    assert_nothing_published_and_live_answers(db, env, live, faulty)


def while_the_database_stops(db, server, env, argv, *, back_before_it_notices: bool):
    """Run `sitekb ARGV` whose first embedding request waits while the database stops (and perhaps starts
    again); return the id of the site's newest run at that moment and the finished process."""
    server.queue("hold")
    process = subprocess.Popen([*SITEKB, *argv], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.holding.wait(300), f"`sitekb {argv[0]}` never asked for an embedding"
        newest = newest_run(db)[0]
        db.stop()
        if back_before_it_notices:
            db.start()
        server.release()
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        server.release()
        if not back_before_it_notices:
            db.start()
    return newest, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_while_the_database_stops(db, server, env, site_file, *, back_before_the_run_notices: bool):
    """`sitekb run` whose first embedding request waits while the database stops (and perhaps starts again)."""
    return while_the_database_stops(db, server, env, ["run", site_file, "--question", ""],
                                    back_before_it_notices=back_before_the_run_notices)


def test_a_database_restarted_mid_run_ends_it_with_exit_3_and_marks_it_failed(faulty, db, env, site_file, live):
    run_id, result = run_while_the_database_stops(db, faulty, env, site_file, back_before_the_run_notices=True)
    line = error_line(result)
    assert result.returncode == 3, line
    assert f"lost the database connection in stage embed of run {run_id} (" in line
    assert line.endswith("nothing was published; the run is marked failed")
    status, error = db.query("SELECT status, error FROM sitekb.runs WHERE run_id = %s", (run_id,))[0]
    assert status == "failed" and error.startswith("lost the database connection in stage embed")
    assert_no_secret(result, error)
    assert_nothing_published_and_live_answers(db, env, live, faulty)


def test_a_database_lost_in_the_middle_of_another_command_is_one_line_and_exit_3(faulty, db, env, live):
    # The question's embedding waits while the database stops; the snapshot was resolved already.
    _, result = while_the_database_stops(db, faulty, env, ["search", "lead scoring", "--site", "faults"],
                                         back_before_it_notices=False)
    line = error_line(result)
    assert result.returncode == 3, line
    assert line.startswith("sitekb: error: lost the database connection (") and "sitekb db status" in line
    assert_no_secret(result, None)


def test_a_database_that_stops_mid_run_ends_it_with_exit_3_and_the_next_run_cleans_up(faulty, db, env, site_file,
                                                                                      live):
    stopped, result = run_while_the_database_stops(db, faulty, env, site_file, back_before_the_run_notices=False)
    line = error_line(result)
    assert result.returncode == 3, line
    assert f"lost the database connection in stage embed of run {stopped} (" in line
    assert "Once the database is back, the site's next run marks this one failed" in line
    assert_no_secret(result, None)
    # The run could not be marked failed with the database gone: the site's next run does it.
    assert newest_run(db)[:2] == (stopped, "running")
    again = json.loads(sitekb("run", site_file, "--question", "", "--json", env=env).stdout)
    assert again["status"] == "succeeded" and again["run_id"] != stopped
    status, error = db.query("SELECT status, error FROM sitekb.runs WHERE run_id = %s", (stopped,))[0]
    assert status == "failed" and "is gone" in error and f"taken over by run {again['run_id']}" in error
    assert SECRET not in error
    assert db.query("SELECT count(*) FROM sitekb.documents WHERE run_id = %s", (stopped,)) == [(0,)]
    found = json.loads(sitekb("search", "lead scoring for demo requests", "--site", "faults", "--json",
                              env=env).stdout)
    assert found["snapshot_id"] == again["snapshot_id"] != live and found["results"]


@pytest.mark.parametrize("behaviour", ["500", "malformed"])
def test_a_search_whose_question_cannot_be_embedded_is_one_line_and_exit_8(behaviour, faulty, env, live):
    faulty.always(behaviour, retry_after=0, delay=5)
    result = sitekb("search", "lead scoring", "--site", "faults", env=env, check=False)
    line = error_line(result)
    assert result.returncode == 8, line
    assert "cannot embed the query with" in line
    assert_no_secret(result, None)
