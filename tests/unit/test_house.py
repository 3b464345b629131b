"""The rules that keep the house easy to change, checked on the code itself.

- Only ``sitekb.orchestration`` imports Airflow, and the rest of the library
  imports and runs with Airflow absent.
- The library reads no environment variable and writes none: only the
  environment layer (``sitekb.settings``) and the entry points (the CLI, the
  Airflow tasks) touch ``os.environ``.
- SQL is the store's: no module outside ``sitekb.store`` runs a statement,
  except ``sitekb.query``, the one query path over the SQL API.
- Each stage is a module of ``sitekb.stages``, and the registry lists them all.
- Modes and the default alias are defined once, and the SQL API agrees.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from sitekb import stages
from sitekb.passages import DEFAULT_ALIAS, DEFAULT_VECTOR_WEIGHT, MODES
from sitekb.store import schema

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "plugins" / "sitekb"
CRAWLER = REPO / "crawlers" / "sitekb_crawlers"
SOURCES = sorted(p for p in [*LIBRARY.rglob("*.py"), *CRAWLER.rglob("*.py")] if "demo/site" not in str(p))


def _module(path: Path) -> str:
    root = LIBRARY.parent if LIBRARY in path.parents else CRAWLER.parent
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_only_the_orchestration_corner_imports_airflow():
    importers = set()
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "airflow" or n.startswith("airflow.") for n in names):
                importers.add(_module(path))
    assert importers and all(m.startswith("sitekb.orchestration") for m in importers), importers


BLOCKED = textwrap.dedent("""
    import importlib, importlib.abc, json, sys

    class NoAirflow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "airflow" or name.startswith("airflow."):
                raise ImportError(f"{name} is blocked: Airflow is not installed here")
            return None

    sys.meta_path.insert(0, NoAirflow())
    failed = {}
    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported
            failed[name] = f"{type(exc).__name__}: {exc}"
    # Something real, too: the CLI parser, the registry, a site config.
    from sitekb import stages
    from sitekb.cli import build_parser
    from sitekb.sites import load_site
    build_parser().parse_args(["run", "demo", "--dry-run"])
    load_site("demo")
    try:
        import sitekb.orchestration.tasks
        blocked = False
    except ImportError:
        blocked = True
    print(json.dumps({"failed": failed, "stages": [s.name for s in stages.STAGES], "blocked": blocked}))
""")


def test_the_library_imports_and_runs_without_airflow():
    # The Airflow corner imports Airflow; of it, only the CLI's helpers (runner, naming) must not.
    without_airflow = ("sitekb.orchestration", "sitekb.orchestration.runner", "sitekb.orchestration.naming")
    modules = [_module(p) for p in SOURCES
               if not _module(p).startswith("sitekb.orchestration.") or _module(p) in without_airflow]
    import json

    result = subprocess.run([sys.executable, "-c", BLOCKED, json.dumps(modules)], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    assert report["stages"] == list(stages.NAMES) and report["blocked"] is True
    assert len(modules) > 50


# The environment layer and the entry points; nothing else may read or write the environment.
ENVIRONMENT_OWNERS = {"sitekb.settings", "sitekb.cli", "sitekb.orchestration.tasks"}


def test_only_the_environment_layer_and_entry_points_touch_the_environment():
    touching = set()
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "unsetenv") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                touching.add(_module(path))
            if isinstance(node, ast.ImportFrom) and node.module == "os" \
                    and any(a.name in ("environ", "getenv") for a in node.names):
                touching.add(_module(path))
    assert touching <= ENVIRONMENT_OWNERS, touching - ENVIRONMENT_OWNERS


def test_sql_is_run_by_the_store_and_the_query_path_only():
    running = set()
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            statement = node.func.attr in ("execute", "executemany") and not (
                isinstance(node.func.value, ast.Name) and node.func.value.id == "engine")
            copy = node.func.attr == "copy" and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
            if statement or copy:
                running.add(_module(path))
    outside = {m for m in running if not m.startswith("sitekb.store")}
    assert outside == {"sitekb.query"}, outside


def test_every_stage_is_a_module_of_its_own_and_the_registry_lists_them_all():
    modules = {p.stem for p in (LIBRARY / "stages").glob("*.py")} - {"__init__", "context"}
    assert set(stages.NAMES) == modules
    for stage in stages.STAGES:
        assert stage.run.__module__ == f"sitekb.stages.{stage.name}" and stage.run.__name__ == "run"
        assert stage.does
    assert stages.DRY_RUN == stages.NAMES[: stages.NAMES.index("embed") + 1]


def test_modes_and_the_default_alias_are_defined_once_and_the_sql_api_agrees():
    search = next(s.text for s in schema.repeatables() if s.name == "sitekb_api.search")
    resolve = next(s.text for s in schema.repeatables() if s.name == "sitekb_api.resolve_snapshot")
    assert f"alias            text    DEFAULT '{DEFAULT_ALIAS}'" in search
    assert f"alias text DEFAULT '{DEFAULT_ALIAS}'" in resolve
    assert "IN (" + ", ".join(f"'{m}'" for m in MODES) + ")" in search
    pages = next(s.text for s in schema.repeatables() if s.name == "sitekb_api.search_pages")
    for text in (search, pages):
        assert f"vector_weight    float8  DEFAULT {DEFAULT_VECTOR_WEIGHT}" in text
    assert f"coalesce($15, {DEFAULT_VECTOR_WEIGHT})" in search
    literal = re.compile(rf"[\"']{DEFAULT_ALIAS}[\"']")
    spelled = {str(p.relative_to(REPO)) for p in [*SOURCES, *(REPO / "dags").glob("*.py")]
               if literal.search(p.read_text(encoding="utf-8"))}
    assert spelled == {"plugins/sitekb/passages.py"}, spelled
