"""Airflow's UI in headless Chromium, as a person uses it: sign in, open the Knowledge view."""

from __future__ import annotations

from tests.airflow_live.harness import PASSWORDS


def log_in(browser, base: str, user: str) -> None:
    """Sign in through the simple auth manager's login page, as a person does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.switch_to.default_content()
    browser.delete_all_cookies()
    browser.get(base + "/auth/login")
    wait = WebDriverWait(browser, 60)
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(user)
    browser.find_element(By.NAME, "password").send_keys(PASSWORDS[user])
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url and d.get_cookie("_token"))


def open_knowledge(browser, site: str):
    """Click Knowledge in Airflow's navigation, then the site; leave the driver inside the view's frame."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "a[href$='/plugin/knowledge']"))).click()
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.CSS_SELECTOR, "iframe[title='Knowledge']")))
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"#sites tr[data-site='{site}'] a"))).click()
    wait.until(lambda d: d.find_element(By.ID, "site-title").text == f"Site {site}")
    return wait
