"""Headless Chromium for the browser tests (Debian's chromium and chromium-driver; nothing is downloaded).

``needs_chromium`` skips a module with the install command when the browser is
missing; ``chromium(profile_dir, width)`` starts one driver, offline;
``screenshot_path(name)`` is where a test saves a picture: the README's
``docs/images/`` when ``SITEKB_UPDATE_SCREENSHOTS=1``, else a temporary folder
(a test run leaves the tree as it found it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("SITEKB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SITEKB_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")

needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason=f"headless Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): "
           "run `apt-get install -y chromium chromium-driver` as root")


def chromium(profile_dir: Path, width: int = 1200, height: int = 1000):
    """A headless Chromium driver that talks to nothing but the pages it is sent to."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")   # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def screenshot_path(name: str) -> Path:
    """Where the screenshot ``name`` goes (see the module docstring)."""
    if os.environ.get("SITEKB_UPDATE_SCREENSHOTS") == "1":
        folder = Path(__file__).resolve().parents[1] / "docs" / "images"
    else:
        folder = Path(tempfile.gettempdir()) / "sitekb-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
