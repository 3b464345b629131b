"""Validate a table of measured values against a suite with Great Expectations.

One call builds an ephemeral Great Expectations context (nothing is written
except Data Docs), loads the rows as a pandas dataframe, runs a Checkpoint over
the suite and maps every failed expectation back to the rows that failed it,
with the measured value, through ``unexpected_index_list`` keyed by the id
column (the URL for documents).

Data Docs: when ``data_docs_dir`` is given, the Checkpoint's
UpdateDataDocsAction writes a static HTML site there, and the validation
results are kept as JSON in ``<data_docs_dir>/.results`` so that suites
validated by different processes of one run (Airflow runs each stage in its own
task) share one index page. The pipeline uses
``$SITEKB_HOME/data_docs/<site>/<run_id>/index.html``.

Without Great Expectations installed (it is the ``quality`` extra), the same
checks are judged in plain Python and the outcome says so; the verdicts are
the same (tests compare them).

Settings read: none. Entry points set ``GX_ANALYTICS_ENABLED=false`` (this
machine's kind of environment has no network for analytics anyway), and the
context switches progress bars off: a log is no place for them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitekb.errors import SitekbError
from sitekb.quality.checks import Check, Failure

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a suite said about a table: failures per row id, a line per check, where the docs are."""

    suite: str
    engine: str
    rows: int
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    checks: list[dict] = field(default_factory=list)
    data_docs: str | None = None
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> dict:
        return {"suite": self.suite, "engine": self.engine, "rows": self.rows, "success": self.success,
                "failed_rows": len(self.failures), "checks": self.checks, "data_docs": self.data_docs,
                "seconds": round(self.seconds, 3)}


def gx_available() -> bool:
    try:
        import great_expectations  # noqa: F401
    except ImportError:
        return False
    return True


def _plain(value: Any) -> Any:
    """numpy/pandas scalars to Python, NaN to None (for JSON and messages)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def validate_rows(suite: str, checks: Sequence[Check], rows: Sequence[Mapping], *, id_column: str = "url",
                  data_docs_dir: Path | None = None, run_name: str | None = None,
                  engine: str = "auto") -> Outcome:
    """Judge every row by every check; ``engine`` is 'auto' (GX when installed), 'gx' or 'python'."""
    started = time.monotonic()
    use_gx = engine == "gx" or (engine == "auto" and gx_available())
    if not rows:
        outcome = Outcome(suite, "none (no rows)", 0)
    elif use_gx:
        outcome = _validate_gx(suite, checks, rows, id_column, data_docs_dir, run_name)
    else:
        if engine == "auto":
            log.warning("great_expectations is not installed (pip install 'sitekb[quality]'); "
                        "judging suite %s in plain Python without Data Docs", suite)
        outcome = _validate_python(suite, checks, rows, id_column)
    outcome.seconds = time.monotonic() - started
    return outcome


def _validate_python(suite: str, checks: Sequence[Check], rows: Sequence[Mapping], id_column: str) -> Outcome:
    outcome = Outcome(suite, "python", len(rows))
    for check in checks:
        failed = 0
        for row in rows:
            failure = check.judge(row)
            if failure is not None:
                failed += 1
                outcome.failures.setdefault(str(row[id_column]), []).append(failure)
        outcome.checks.append({"check": check.name, "column": check.column, "success": failed == 0,
                               "unexpected": failed, "threshold": check.threshold})
    return outcome


def _frame(checks: Sequence[Check], rows: Sequence[Mapping], id_column: str):
    import pandas as pd

    frame = pd.DataFrame([dict(row) for row in rows])
    for check in checks:
        if check.column not in frame.columns:
            frame[check.column] = None  # a measure that does not apply to any row
        if check.kind == "between":
            # All-null columns come out as object dtype; the between check needs numbers.
            frame[check.column] = pd.to_numeric(frame[check.column], errors="coerce")
    frame[id_column] = frame[id_column].astype(str)
    return frame


def _context(data_docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if data_docs_dir is not None:
        data_docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_store("sitekb_validation_results", {
            "class_name": "ValidationResultsStore",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(data_docs_dir / ".results")},
        })
        context.variables.validation_results_store_name = "sitekb_validation_results"
        context.add_data_docs_site("sitekb", {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(data_docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    return context


def _validate_gx(suite_name: str, checks: Sequence[Check], rows: Sequence[Mapping], id_column: str,
                 data_docs_dir: Path | None, run_name: str | None) -> Outcome:
    import great_expectations as gx

    context = _context(data_docs_dir)
    batch = (context.data_sources.add_pandas("sitekb")
             .add_dataframe_asset(suite_name.replace(".", "_"))
             .add_batch_definition_whole_dataframe("run"))
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    for check in checks:
        suite.add_expectation(check.to_gx())
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["sitekb"])] if data_docs_dir else []
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=suite_name, validation_definitions=[definition], actions=actions,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [id_column]},
    ))
    result = checkpoint.run(batch_parameters={"dataframe": _frame(checks, rows, id_column)},
                            run_id=gx.RunIdentifier(run_name=run_name or suite_name))

    by_name = {check.name: check for check in checks}
    by_id = {str(row[id_column]): row for row in rows}
    outcome = Outcome(suite_name, f"great_expectations {gx.__version__}", len(rows))
    for validation in result.run_results.values():
        for item in validation.results:
            name = (item.expectation_config.meta or {}).get("check")
            check = by_name.get(name)
            if check is None:
                continue
            if item.exception_info and item.exception_info.get("raised_exception"):
                raise SitekbError(
                    f"Great Expectations could not evaluate check {name!r} of suite {suite_name}: "
                    f"{item.exception_info.get('exception_message')}"
                )
            failed_ids = [] if item.success else [
                str(_plain(entry[id_column])) for entry in item.result.get("unexpected_index_list") or []
            ]
            for row_id in failed_ids:
                outcome.failures.setdefault(row_id, []).append(check.failure(by_id[row_id]))
            outcome.checks.append({"check": name, "column": check.column, "success": bool(item.success),
                                   "unexpected": len(failed_ids), "threshold": check.threshold})
    if data_docs_dir is not None:
        outcome.data_docs = str(data_docs_dir / "index.html")
    return outcome
