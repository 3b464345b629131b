"""The Knowledge view inside a running Airflow, as people use it: headless Chromium via Selenium.

An admin logs in to the Airflow UI, opens Knowledge from the navigation,
picks the site, reads its alias, snapshot history, quarantine and
exclusions, compares the two snapshots and rolls the alias back; the alias
moves on the page and in the database, with the admin as the actor. A viewer
sees the same page read-only, and the server refuses the viewer's rollback
(from the page's own session and through the REST API alike).

The site is written straight into the sitekb database (no DAG run): see
:mod:`tests.airflow_live.knowledge_seed`. Needs Debian's chromium and
chromium-driver (skipped with that reason when they are missing). Also
writes the README's screenshot, ``docs/images/knowledge-view.png``.
"""

from __future__ import annotations


import pytest

from sitekb import store
from sitekb.passages import DEFAULT_ALIAS
from sitekb.store import snapshots
from tests.airflow_live.ui import log_in, open_knowledge
from tests.browser import chromium, needs_chromium, screenshot_path
from tests.airflow_live.knowledge_seed import HOSTILE_TITLE, SITE, seed_site


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    needs_chromium,
]


@pytest.fixture(scope="module")
def seeded(database_server):
    # The session's database is shared with other tests: nothing is reset, the site's name is its own.
    with store.connection(database_server) as conn:
        store.migrate(conn)
        return seed_site(conn, SITE)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"), width=1400)
    yield driver
    driver.quit()


def alias_target(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f"#aliases tr[data-alias='{DEFAULT_ALIAS}'] td.target") \
        .get_attribute("data-snapshot-id")


def test_an_admin_reads_the_knowledge_view_and_rolls_back(live_airflow, seeded, browser, database_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    first, second, rejected = (s.snapshot_id for s in (seeded.first, seeded.second, seeded.rejected))
    log_in(browser, live_airflow.base_url, "admin")
    wait = open_knowledge(browser, SITE)
    # The Airflow UI's address follows the view (a link to it opens this site).
    browser.switch_to.default_content()
    assert f"/plugin/knowledge/sitekb/?site={SITE}" in browser.current_url
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title='Knowledge']"))

    assert "Signed in to Airflow as admin" in browser.find_element(By.ID, "who").text
    assert alias_target(browser) == str(second)
    history = [r.get_attribute("data-snapshot-id") for r in browser.find_elements(By.CSS_SELECTOR, "#snapshots tbody tr")]
    assert history[:3] == [str(rejected), str(second), str(first)]
    live = browser.find_element(By.CSS_SELECTOR, f"#snapshots tr[data-snapshot-id='{second}']")
    assert live.find_element(By.CSS_SELECTOR, "td.golden").text == "4/4"
    assert "1 quarantined" in live.find_element(By.CSS_SELECTOR, "td.quality").text
    assert f"vs #{first}: +3 −1 ~1" in live.text
    refused = browser.find_element(By.CSS_SELECTOR, f"#snapshots tr[data-snapshot-id='{rejected}']")
    assert "rejected" in refused.text and "golden_questions: answers 2/4" in refused.text

    # The live snapshot's quarantine and exclusions.
    wait.until(lambda d: d.find_elements(By.ID, "quarantine"))
    assert f"Live snapshot #{second}" in browser.find_element(By.ID, "live-title").text
    quarantine = browser.find_element(By.ID, "quarantine").text
    assert "Martech" in quarantine and "min_words" in quarantine and "approved by content-owner" in quarantine
    assert len(browser.find_elements(By.CSS_SELECTOR, "#exclusions tbody tr")) == 3

    browser.switch_to.default_content()
    browser.set_window_size(1400, 1800)   # the README's screenshot: the whole view in the Airflow UI
    browser.save_screenshot(str(screenshot_path("knowledge-view.png")))
    browser.set_window_size(1400, 1000)
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title='Knowledge']"))

    # Compare the first two snapshots; a hostile page title is text, not markup.
    Select(browser.find_element(By.ID, "compare-from")).select_by_value(str(first))
    Select(browser.find_element(By.ID, "compare-to")).select_by_value(str(second))
    browser.find_element(By.CSS_SELECTOR, "#compare button[type=submit]").click()
    summary = wait.until(lambda d: d.find_elements(By.ID, "diff-summary"))[0].text
    assert f"#{first} → #{second}: 3 pages added, 1 removed, 1 changed" in summary
    assert HOSTILE_TITLE in browser.find_element(By.ID, "diff").text
    assert browser.find_elements(By.CSS_SELECTOR, "#diff img, #diff b") == []
    assert browser.execute_script("return window.__xss === undefined")

    # Roll back, with a reason.
    row = browser.find_element(By.CSS_SELECTOR, f"#aliases tr[data-alias='{DEFAULT_ALIAS}']")
    opener = row.find_element(By.CSS_SELECTOR, "button.open-rollback")
    assert opener.text == f"Roll back to #{first}…"  # the target is named before the click
    opener.click()
    row.find_element(By.NAME, "reason").send_keys("prices page is wrong")
    row.find_element(By.CSS_SELECTOR, "button.confirm-rollback").click()
    wait.until(lambda d: d.find_element(By.ID, "notice").is_displayed())
    assert browser.find_element(By.ID, "notice").text == \
        f"{DEFAULT_ALIAS} moved back from snapshot #{second} to #{first} by admin."
    wait.until(lambda d: alias_target(d) == str(first))
    move = browser.find_elements(By.CSS_SELECTOR, "#moves tbody tr")[0]
    assert f"#{second} → #{first}" in move.text and move.find_element(By.CSS_SELECTOR, ".actor").text == "admin"

    with store.connection(database_server) as conn:
        assert snapshots.resolve(conn, SITE).snapshot_id == first
        newest_move = snapshots.history(conn, SITE)[0]
    assert (newest_move["actor"], newest_move["from_snapshot"], newest_move["to_snapshot"]) == ("admin", second, first)
    assert newest_move["reason"] == "rollback in the Airflow Knowledge view: prices page is wrong"


def test_a_viewer_reads_it_but_may_not_roll_back(live_airflow, seeded, browser, database_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with store.connection(database_server) as conn:
        before = snapshots.resolve(conn, SITE).snapshot_id
        moves = len(snapshots.history(conn, SITE))
    log_in(browser, live_airflow.base_url, "viewer")
    open_knowledge(browser, SITE)
    assert "Signed in to Airflow as viewer" in browser.find_element(By.ID, "who").text
    assert "read-only" in browser.find_element(By.ID, "site-sub").text
    assert browser.find_elements(By.CSS_SELECTOR, "button.open-rollback") == []
    assert alias_target(browser) == str(before)

    # The page hides the button; the server is what refuses: the viewer's own session, then the REST API.
    status = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
           fetch(arguments[0], {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"})
             .then((r) => done(r.status), (e) => done(String(e)));""",
        f"api/sites/{SITE}/aliases/{DEFAULT_ALIAS}/rollback")
    assert status == 403
    answer = live_airflow.request("POST", f"/sitekb/api/sites/{SITE}/aliases/{DEFAULT_ALIAS}/rollback",
                                  json={"reason": "let me"}, user="viewer")
    assert answer.status_code == 403 and f"viewer may not trigger the DAG sitekb_{SITE}" in answer.json()["detail"]
    assert live_airflow.request("GET", f"/sitekb/api/sites/{SITE}", user=None).status_code == 401

    # A DAG's Knowledge tab opens the view with the DAG's id: it shows that DAG's site.
    browser.switch_to.default_content()
    browser.get(f"{live_airflow.base_url}/sitekb/?dag_id=sitekb_{SITE}")
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "site-title").text == f"Site {SITE}")

    with store.connection(database_server) as conn:
        assert snapshots.resolve(conn, SITE).snapshot_id == before
        assert len(snapshots.history(conn, SITE)) == moves
