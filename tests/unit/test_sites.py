"""Site configs: validation with clear errors, precedence, rebasing."""

from __future__ import annotations

import pytest

from sitekb.errors import ConfigError
from sitekb.sites import resolve_site
from sitekb.settings import Settings
from sitekb.sites import adhoc_site, load_site, site_from_dict


def test_demo_config_loads_with_golden_questions():
    site = load_site("demo")
    assert site.name == "demo"
    assert site.crawl.allow_private_addresses is True
    assert len(site.golden_questions) >= 5
    assert site.absolute("/a.html") == "http://127.0.0.1:8765/a.html"


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nstart_urls: [https://example.test/]\nquality:\n  min_wordz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_site(str(path))
    assert "quality.min_wordz: unknown key" in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"name": "x", "start_urls": ["ftp://a/"]}, "not an absolute http(s) URL"),
        ({"name": "X Y", "start_urls": ["https://a.test/"]}, "name"),
        ({"name": "x", "start_urls": []}, "start_urls"),
        ({"name": "x", "start_urls": ["https://a.test/"], "crawl": {"max_pages": "many"}}, "crawl.max_pages"),
        ({"name": "x", "start_urls": ["https://a.test/"], "crawl": {"exclude_patterns": ["("]}}, "exclude_patterns"),
        ({"name": "x", "start_urls": ["https://a.test/"], "chunking": {"target_tokens": 50, "overlap_tokens": 60}},
         "overlap_tokens"),
        ({"name": "x", "start_urls": ["https://a.test/"], "embedding": {"provider": "cohere"}}, "embedding.provider"),
        ({"name": "x", "start_urls": ["https://a.test/"],
          "embedding": {"provider": "openai", "base_url": "https://me:secret@llm.test/v1"}},
         "embedding.base_url: Value error, must not carry a user or password"),
        ({"name": "x", "start_urls": ["https://a.test/"],
          "embedding": {"provider": "openai", "base_url": "https://token@llm.test/v1"}},
         "embedding.base_url: Value error, must not carry a user or password"),
    ],
)
def test_wrong_values_are_refused_with_their_key(data, fragment):
    with pytest.raises(ConfigError) as err:
        site_from_dict(data)
    assert fragment in str(err.value)


def test_missing_site_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        load_site("nope")
    assert "demo" in str(err.value) and "not found" in str(err.value)


def test_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_site(str(path))


def test_precedence_cli_over_env_over_file(monkeypatch):
    monkeypatch.setenv("SITEKB_EMBEDDING_PROVIDER", "openai")
    monkeypatch.setenv("SITEKB_EMBEDDING_MODEL", "text-embedding-3-large")
    settings = Settings.from_env()
    site = resolve_site("demo", settings)  # the file says provider: local
    assert site.embedding.provider == "openai" and site.embedding.model == "text-embedding-3-large"
    site = resolve_site("demo", settings, overrides={"embedding": {"model": "text-embedding-3-small"}})
    assert site.embedding.model == "text-embedding-3-small"  # CLI beats env
    assert site.embedding.provider == "openai"


def test_bad_env_values_are_config_errors(monkeypatch):
    monkeypatch.setenv("SITEKB_EMBEDDING_DIMENSIONS", "lots")
    with pytest.raises(ConfigError, match="SITEKB_EMBEDDING_DIMENSIONS"):
        Settings.from_env()
    monkeypatch.delenv("SITEKB_EMBEDDING_DIMENSIONS")
    monkeypatch.setenv("SITEKB_EMBEDDING_PROVIDER", "magic")
    with pytest.raises(ConfigError, match="SITEKB_EMBEDDING_PROVIDER"):
        Settings.from_env()


def test_empty_path_variables_mean_unset(monkeypatch, tmp_path):
    from sitekb.settings import DEFAULT_DAGS_FOLDER, DEFAULT_SITES_DIR

    monkeypatch.chdir(tmp_path)
    for name in ("SITEKB_HOME", "AIRFLOW_HOME", "SITEKB_SITES_DIR", "SITEKB_DAGS_FOLDER"):
        monkeypatch.setenv(name, " ")
    settings = Settings.from_env()
    assert settings.home == tmp_path.resolve() / ".sitekb" and settings.airflow_home is None
    assert settings.airflow_folder == settings.home / "airflow"
    assert (settings.sites_dir, settings.dags_folder) == (DEFAULT_SITES_DIR, DEFAULT_DAGS_FOLDER)


def test_rebasing_moves_every_url_and_keeps_the_hash_honest():
    site = load_site("demo")
    moved = site.with_base_url("http://127.0.0.1:9999")
    assert moved.start_urls == ["http://127.0.0.1:9999/"]
    assert moved.absolute("/x") == "http://127.0.0.1:9999/x"
    assert moved.config_hash() != site.config_hash()
    assert site.config_hash() == load_site("demo").config_hash()


def test_adhoc_site_refuses_private_addresses_unless_asked():
    assert adhoc_site("https://www.example.test/docs").name == "www-example-test"
    assert adhoc_site("http://127.0.0.1:8000/").crawl.allow_private_addresses is False
    assert adhoc_site("http://127.0.0.1:8000/", allow_private=True).crawl.allow_private_addresses is True


# -- golden questions: how an expected URL is written and what it matches ----------

ACME = "https://www.acme.example"


@pytest.mark.parametrize(
    "written, crawled, same",
    [
        ("/help/reset-password", f"{ACME}/help/reset-password.html", True),     # the README's own example
        ("/help/reset-password", f"{ACME}/help/reset-password/index.html", True),
        ("/help/reset-password/", f"{ACME}/help/reset-password.html", True),
        ("help/reset-password.htm", f"{ACME}/help/reset-password.html", True),
        ("HTTPS://WWW.Acme.Example:443/help/reset-password#step-2", f"{ACME}/help/reset-password", True),
        ("/", f"{ACME}/index.html", True),
        ("/hilfe/zurücksetzen", f"{ACME}/hilfe/zur%C3%BCcksetzen.html", True),
        ("/search", f"{ACME}/search?q=a", True),                        # no query written: any query
        ("/search?b=2&a=1", f"{ACME}/search?a=1&b=2", True),            # a written query must match, in any order
        ("/search?q=b", f"{ACME}/search?q=a", False),
        ("/search?q=a&utm_source=mail", f"{ACME}/search?q=a", True),    # the site strips utm_* from every URL
        ("/Help/reset-password", f"{ACME}/help/reset-password.html", False),   # paths keep their case
        ("/report", f"{ACME}/report.pdf", False),                              # a file keeps its extension
        ("/help/reset-password", f"{ACME}/help/reset-password-old.html", False),
        ("https://acme.example/help/reset-password", f"{ACME}/help/reset-password.html", False),
    ],
)
def test_an_expected_url_names_its_page_the_way_people_write_it(written, crawled, same):
    from sitekb.quality import golden

    site = site_from_dict({"name": "acme", "start_urls": [f"{ACME}/"],
                           "golden_questions": [{"question": "How do I reset my password?", "expected_url": written}]})
    ref = golden.expected(site, site.golden_questions[0].expected_url)
    assert ref.matches(golden.found(site, crawled)) is same


def test_the_closest_pages_by_path_are_named_when_none_matches():
    from sitekb.urls import PageIndex, PageRef

    pages = PageIndex([f"{ACME}/help/reset-password.html", f"{ACME}/help/reset-username.html",
                       f"{ACME}/pricing.html", f"{ACME}/help/"])
    typo = PageRef.parse("/Help/reset-pasword", ACME + "/")
    assert pages.find(typo) == []
    assert pages.closest(typo, 2) == [f"{ACME}/help/reset-password.html", f"{ACME}/help/reset-username.html"]
    assert pages.find(PageRef.parse("/help", ACME + "/")) == [f"{ACME}/help/"]


@pytest.mark.parametrize(
    "golden, fragment",
    [
        ({"golden_questions": [{"question": "Q?", "expected_url": "mailto:help@acme.example"}]},
         "golden_questions.0.expected_url: Value error, 'mailto:help@acme.example' is not a path"),
        ({"golden_questions": [{"question": "Q?", "expected_url": "  "}]},
         "golden_questions.0.expected_url: Value error, is empty"),
        ({"golden_questions": [{"question": " ", "expected_url": "/x"}]}, "golden_questions.0.question"),
        ({"golden_min_share": 1.5}, "golden_min_share"),
        ({"golden_min_share": "0.5"}, "golden_min_share"),   # strict, like the quality thresholds
    ],
)
def test_wrong_golden_settings_are_refused_with_their_key(golden, fragment):
    with pytest.raises(ConfigError) as err:
        site_from_dict({"name": "x", "start_urls": ["https://a.test/"], **golden})
    assert fragment in str(err.value)


@pytest.mark.parametrize("share, asked, needed", [(0.5, 8, 4), (0.5, 5, 3), (0.5, 1, 1), (0.7, 10, 7),
                                                  (0.0, 4, 0), (1.0, 3, 3)])
def test_the_minimum_share_of_golden_questions_is_rounded_up(share, asked, needed):
    from sitekb.quality import golden

    site = site_from_dict({"name": "x", "start_urls": ["https://a.test/"], "golden_min_share": share,
                           "golden_questions": [{"question": f"Q{i}?", "expected_url": f"/p{i}"} for i in range(asked)]})
    assert golden.min_hits(site) == needed
    assert load_site("demo").golden_min_share == 0.5
