"""Every DAG file imports cleanly, does no work at parse time, and is documented; a DAG per site file.

Parsing happens in a fresh interpreter so the checks see exactly what a DAG
file imports and whether it touches the network or a database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sentence_transformers", "great_expectations", "openai", "scrapy", "trafilatura", "transformers")

PARSE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys
    calls = []
    real_connect = socket.socket.connect
    def guarded_connect(self, address):
        calls.append(repr(address))
        raise OSError("network access while parsing a DAG file")
    socket.socket.connect = guarded_connect
    import psycopg
    def no_db(*args, **kwargs):
        calls.append("psycopg.connect")
        raise RuntimeError("database access while parsing a DAG file")
    psycopg.connect = no_db
    psycopg.Connection.connect = classmethod(lambda cls, *a, **k: no_db())

    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "tags": sorted(dag.tags or []),
            "doc_md": dag.doc_md or "",
            "retries": [t.retries for t in dag.tasks],
            "tasks": [t.task_id for t in dag.tasks],
            "schedule": getattr(dag.timetable, "expression", None) or type(dag.timetable).__name__,
            "params": sorted(dag.params.keys()),
            "owner": dag.owner,
            "max_active_runs": dag.max_active_runs,
            "deadline": bool(getattr(dag, "deadline", None)),
            "pools": sorted({t.pool for t in dag.tasks}),
            "mapped": sorted(t.task_id for t in dag.tasks if "MappedOperator" in {c.__name__ for c in type(t).__mro__}),
            "trigger_rules": {t.task_id: getattr(t.trigger_rule, "value", t.trigger_rule) for t in dag.tasks},
        }
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))
    print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                      "dags": dags, "calls": calls, "heavy": heavy}))
    """
)


def _parse(home: Path, sites_dir: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        # Unreachable on purpose: parsing must not need it.
        "SITEKB_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    })
    env.pop("SITEKB_SITES_DIR", None)
    if sites_dir is not None:
        env["SITEKB_SITES_DIR"] = str(sites_dir)
    result = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(REPO / "dags"), json.dumps(HEAVY)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    """The repository's own dags/ folder and site files."""
    return _parse(tmp_path_factory.mktemp("airflow-home"))


SHOP = """
name: shop
description: A shop with its own schedule
start_urls: [https://shop.example.com/]
crawl: {contact_url: https://ops.example.com/bot}
airflow:
  schedule: "0 3 * * *"
  owner: content-ops
  tags: [commerce]
  freshness_hours: 36
  approval: {required: true, approvers: [maria]}
  notifiers:
    - {kind: webhook, url: "http://127.0.0.1:9/hook"}
golden_questions:
  - {question: "What does shipping cost?", expected_url: /shipping}
"""
BROKEN = """
name: broken
start_urls: [https://broken.example.com/]
crawl: {max_pages: 0, contact_url: https://ops.example.com/bot}
"""


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """A sites folder of three files: the demo, a scheduled shop with approval, and a broken one."""
    folder = tmp_path_factory.mktemp("sites")
    (folder / "demo.yaml").write_text((REPO / "dags" / "sites" / "demo.yaml").read_text())
    (folder / "shop.yaml").write_text(SHOP)
    (folder / "broken.yaml").write_text(BROKEN)
    return _parse(tmp_path_factory.mktemp("airflow-home"), folder), folder


def test_dag_files_import_without_errors(parsed):
    assert parsed["errors"] == {}
    assert "sitekb_demo" in parsed["dags"]


def test_parsing_touches_no_database_or_network(parsed):
    assert parsed["calls"] == []


def test_parsing_imports_no_heavy_libraries(parsed):
    assert parsed["heavy"] == []


def test_every_dag_has_tags_docs_and_retries(parsed):
    for dag_id, dag in parsed["dags"].items():
        assert dag["tags"], f"{dag_id} has no tags"
        assert len(dag["doc_md"]) > 100, f"{dag_id} has no doc_md"
        assert dag["retries"] and all(r is not None for r in dag["retries"])
        assert max(dag["retries"]) >= 1, f"{dag_id} never retries"


def test_site_dag_wires_every_stage_in_order(parsed):
    demo = parsed["dags"]["sitekb_demo"]
    assert demo["tasks"] == ["start", "crawl", "extract", "validate", "chunk", "embed_plan", "embed_shard", "embed",
                             "build", "evaluate", "publish", "report", "outcome"]
    assert demo["mapped"] == ["embed_shard"]
    assert demo["pools"] == ["default_pool", "sitekb_embed_local"]
    assert demo["params"] == ["alias", "dry_run", "full_recrawl", "rebuild", "start_url"]
    # No shard (all cached, a dry run) skips the mapped task; the embed stage and the report run anyway.
    assert demo["trigger_rules"]["embed"] == "none_failed"
    assert demo["trigger_rules"]["report"] == "all_done"


def test_the_maintenance_dag_compacts_daily(parsed):
    maintenance = parsed["dags"]["sitekb_maintenance"]
    assert maintenance["tasks"] == ["compact"] and maintenance["schedule"] == "0 0 * * *"   # @daily
    assert maintenance["max_active_runs"] == 1


def test_the_demo_is_never_scheduled_unless_its_file_says_so(parsed):
    assert parsed["dags"]["sitekb_demo"]["schedule"] == "NullTimetable"


def test_two_site_files_give_two_dags_and_a_broken_one_an_import_error_naming_file_and_field(sites):
    result, folder = sites
    assert sorted(set(result["dags"]) - {"sitekb_example_downstream", "sitekb_maintenance"}) == \
        ["sitekb_demo", "sitekb_shop"]
    [(path, message)] = result["errors"].items()
    assert path.endswith("sitekb_site_errors.py")
    assert str(folder / "broken.yaml") in message
    assert "crawl.max_pages" in message


def test_a_site_file_sets_schedule_owner_tags_deadline_and_approval(sites):
    shop = sites[0]["dags"]["sitekb_shop"]
    assert shop["schedule"] == "0 3 * * *"
    assert shop["owner"] == "content-ops"
    assert shop["tags"] == ["commerce", "site:shop", "sitekb"]
    assert shop["max_active_runs"] == 1
    assert shop["deadline"] is True
    assert shop["tasks"].index("evaluate") < shop["tasks"].index("approve") < shop["tasks"].index("publish")
    assert "https://shop.example.com" in shop["doc_md"] and "What does shipping cost?" in shop["doc_md"]
    assert "0 3 * * *" in shop["doc_md"] and "required (maria)" in shop["doc_md"]
