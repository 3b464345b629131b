"""The search page at / of `sitekb serve`, driven by a person's browser: headless Chromium via Selenium.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium
chromium-driver`); skipped with that reason when they are missing.
"""

from __future__ import annotations


import pytest

from sitekb import api, store
from sitekb.settings import Settings
from tests.browser import chromium, needs_chromium
from tests.conftest import _reset_schema
from tests.db.factory import TOPICS, make_snapshot, running_server


pytestmark = [
    pytest.mark.e2e,
    needs_chromium,
]


@pytest.fixture(scope="module")
def served(database_server):
    _reset_schema(database_server)
    with store.connection(database_server) as conn:
        store.migrate(conn)
        snap = make_snapshot(conn, "kb", TOPICS, embed=True, publish_as="production")
    with running_server(api.create_app(Settings(), database_url=database_server)) as base:
        yield base, snap


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"), width=1200)
    yield driver
    driver.quit()


def test_a_person_asks_a_question_and_sees_cited_passages(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, snap = served
    wait = WebDriverWait(browser, 60)
    browser.get(base + "/")
    assert browser.title == "sitekb search"
    wait.until(lambda d: Select(d.find_element(By.ID, "site")).options)
    assert [o.text for o in Select(browser.find_element(By.ID, "site")).options] == ["kb"]

    box = browser.find_element(By.ID, "q")
    box.send_keys("What complaint rate does Gmail allow for bulk senders?")
    browser.find_element(By.ID, "go").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results li.passage")))

    version = browser.find_element(By.ID, "snapshot-version")
    assert version.get_attribute("data-snapshot-id") == str(snap.snapshot_id)
    assert f"Snapshot {snap.snapshot_id} of kb" in version.text and "alias production" in version.text
    passages = browser.find_elements(By.CSS_SELECTOR, "#results li.passage")
    assert len(passages) == 5
    first = passages[0]
    link = first.find_element(By.CSS_SELECTOR, "a.title")
    assert link.text == "Email deliverability" and link.get_attribute("href") == "https://kb.example/email.html"
    assert first.find_element(By.CSS_SELECTOR, ".url").text == "https://kb.example/email.html"
    assert first.find_element(By.CSS_SELECTOR, ".heading").text == "Email › Deliverability"
    assert "0.3 percent" in first.find_element(By.CSS_SELECTOR, ".text").text
    assert "5 passages" in browser.find_element(By.ID, "status").text
    browser.save_screenshot(str(tmp_path / "search-page.png"))

    # Keyword mode with a word no page has: the page says so instead of showing stale results.
    Select(browser.find_element(By.ID, "mode")).select_by_value("keyword")
    box.clear()
    box.send_keys("zeppelin")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: "No passage matches" in d.find_element(By.ID, "status").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#results li.passage") == []
