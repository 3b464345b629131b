"""A site in English and Spanish, crawled end to end (issue 14, languages).

The pages in ``bilingual_site/`` were written for this test: three in English,
three in Spanish, one of which declares ``lang="en"`` as a template would.
Each page is indexed in its language (detected over the declaration), the
snapshot records both configurations, a Spanish question finds its Spanish
page through Spanish stemming and an English one its English page, the quality
gate accepts the site's two languages, and the run warns that the bundled
local model knows English only.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from sitekb import engine, query, report
from sitekb.sites import site_from_dict
from sitekb.store import snapshots

SITE = Path(__file__).parent / "bilingual_site"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def published(conn, settings, origin):
    site = site_from_dict({"name": "northwind", "start_urls": [f"{origin}/index.html"],
                           "crawl": {"allow_private_addresses": True, "sitemaps": [], "download_delay": 0},
                           "quality": {"languages": ["en", "es"], "min_words": 30}}, source="test")
    run_id = engine.refresh(settings, site)
    return {"run_id": run_id, "snapshot": snapshots.for_run(conn, run_id), "settings": settings}


def test_each_page_is_indexed_in_its_language_and_found_in_it(conn, published):
    snap = published["snapshot"]
    assert snap.state == "published" and snap.text_configs == ["english", "spanish"]
    languages = dict(conn.execute(f"SELECT DISTINCT url, language FROM sitekb_snapshots.snap_{snap.snapshot_id}"))
    by_page = {url.rsplit("/", 2)[-2] + "/" + url.rsplit("/", 1)[-1]: lang for url, lang in languages.items()}
    assert by_page["es/baja.html"] == "es" and by_page["en/cancel.html"] == "en"
    assert by_page["es/tueste.html"] == "es"          # declared "en" by its template, detected Spanish

    def top(question, mode="keyword", **kwargs):
        result = query.search(conn, published["settings"], question, site="northwind", mode=mode, **kwargs)
        return result[0].url.rsplit("/", 2)[-2] + "/" + result[0].url.rsplit("/", 1)[-1]

    # "cancelación" is on no page: Spanish stemming finds the page that says "cancelaciones".
    assert top("¿Cómo pido la cancelación de mi plan?") == "es/baja.html"
    assert top("¿Cuánto tardan los envíos a otros países?") == "es/envios.html"
    assert top("¿Qué notas dan los tuestes oscuros?") == "es/tueste.html"
    assert top("How do I cancel my plan?") == "en/cancel.html"
    assert top("How long does shipping to other countries take?") == "en/shipping.html"
    # The language filter restricts and parses; hybrid gets the same keyword leg.
    assert top("cancelación", filters=query.Filters(language="es")) == "es/baja.html"
    assert top("¿Cómo pido la cancelación de mi plan?", mode="hybrid", filters=query.Filters(language="es")) == \
        "es/baja.html"


def test_the_run_accepts_both_languages_and_warns_the_local_model_knows_english_only(conn, published):
    summary = report.run_summary(conn, published["run_id"])
    assert summary["languages"] == {"en": 4, "es": 3}
    assert summary["quarantined"] == 0
    (warning,) = summary["warnings"]
    assert "3 of 7 accepted pages are not in en (es 3)" in warning and "all-MiniLM-L6-v2" in warning
    assert "OpenAI-compatible server" in warning
    assert "WARNING" in report.format_summary(summary)
