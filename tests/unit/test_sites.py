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
