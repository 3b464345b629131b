"""The expectation suites through Great Expectations: same verdicts as plain Python, Data Docs on disk."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sitekb.quality import gate, measures
from sitekb.quality import suites
from sitekb.quality.runner import validate_rows
from sitekb.sites import QualityConfig
from tests.unit.test_quality import ARTICLE, GERMAN, NOISY_TRANSCRIPT, doc

CONFIG = QualityConfig()


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    docs = [
        doc(url="https://x.org/clean"),
        doc("# Tag\n\nFour links here.", url="https://x.org/tag", title=None),
        doc(GERMAN, url="https://x.org/de"),
        doc(NOISY_TRANSCRIPT, url="https://x.org/webinar"),
        doc(ARTICLE + "\n\n" + "\ufffd" * 40, url="https://x.org/broken", visible_words=5000),
        doc(ARTICLE, url="https://x.org/clean-copy-at-a-longer-url"),
    ]
    return gate.document_rows(docs, CONFIG)


def verdicts(outcome) -> dict[str, list[tuple]]:
    return {url: sorted((f.check, f.value) for f in fs) for url, fs in outcome.failures.items()}


def test_gx_and_python_agree_on_every_document(rows, tmp_path):
    checks = suites.document_checks(CONFIG)
    gx = validate_rows(suites.DOCUMENTS, checks, rows, engine="gx", data_docs_dir=tmp_path, run_name="r1")
    py = validate_rows(suites.DOCUMENTS, checks, rows, engine="python")
    assert gx.engine.startswith("great_expectations 1.")
    assert verdicts(gx) == verdicts(py)
    found = verdicts(gx)
    assert "https://x.org/clean" not in found
    assert {c for c, _ in found["https://x.org/tag"]} == {"title", "min_words"}
    assert found["https://x.org/de"] == [("language", "de")]
    assert [c for c, _ in found["https://x.org/webinar"]] == ["transcript_noise"]
    # Every failed check is listed: the damage is not a word, so it is also a copy of /clean,
    # and the healthy copy is the one kept even though its URL is not the shortest.
    assert {c for c, _ in found["https://x.org/broken"]} == {"encoding", "boilerplate", "duplicate"}
    assert found["https://x.org/clean-copy-at-a-longer-url"] == [("duplicate", "https://x.org/clean")]


def test_data_docs_show_document_and_batch_suites(rows, tmp_path):
    validate_rows(suites.DOCUMENTS, suites.document_checks(CONFIG), rows, engine="gx",
                  data_docs_dir=tmp_path, run_name="run-42")
    live = {"pages_ok": 50, "documents": 48, "chunks": 200}
    current = {"pages_ok": 5, "pages_seen": 5, "extracted": 5, "documents": 4, "chunks": 15}
    failures, summary = gate.judge_batch(current, live, _site(), "run-42", tmp_path)
    assert {f.check for f in failures} == {"pages_drop", "documents_drop", "chunks_drop"}
    assert summary["measures"]["pages_drop"] == 0.9 and not summary["success"]
    index = (tmp_path / "index.html").read_text()
    assert "sitekb.documents" in index and "sitekb.batch" in index
    pages = list((tmp_path / "validations").rglob("*.html"))
    assert len(pages) == 2
    batch_page = next(p for p in pages if "/sitekb/batch/run-42/" in p.as_posix()).read_text()
    assert "pages_drop" in batch_page


def test_batch_verdicts_agree():
    current = {"pages_ok": 5, "pages_seen": 8, "errors": 3, "extracted": 5, "quarantined": 3,
               "documents": 2, "chunks": 9}
    live = {"pages_ok": 50, "documents": 48, "chunks": 200}
    row = measures.measure_batch(current, live)
    checks = suites.batch_checks(CONFIG)
    gx = validate_rows(suites.BATCH, checks, [row], id_column="run", engine="gx")
    py = validate_rows(suites.BATCH, checks, [row], id_column="run", engine="python")
    assert verdicts(gx) == verdicts(py)
    assert {c for c, _ in verdicts(gx)["batch"]} == {"pages_drop", "documents_drop", "chunks_drop", "error_rate",
                                                     "quarantine_rate"}


def test_chunk_suite_flags_oversized_and_empty_documents():
    rows = [{"url": "a", "chunks": 3, "max_chunk_tokens": 200}, {"url": "b", "chunks": 0, "max_chunk_tokens": None},
            {"url": "c", "chunks": 2, "max_chunk_tokens": 300}]
    outcome = validate_rows(suites.CHUNKS, suites.chunk_checks(256), rows, engine="gx")
    assert verdicts(outcome) == {"b": [("chunks", 0)], "c": [("max_chunk_tokens", 300)]}


def test_no_rows_is_no_failure():
    assert validate_rows(suites.DOCUMENTS, suites.document_checks(CONFIG), []).success


def test_the_pipeline_modules_do_not_import_great_expectations():
    code = ("import sys, sitekb.engine, sitekb.stages, sitekb.quality.gate, sitekb.quality.suites, "
            "sitekb.quality.runner, sitekb.cli; print(any(m.split('.')[0] == 'great_expectations' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _site():
    from sitekb.sites import site_from_dict

    return site_from_dict({"name": "t", "start_urls": ["https://x.org/"]})
