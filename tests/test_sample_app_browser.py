"""sample_app's page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium), against the app on a real server.

Without chromium or chromedriver the test skips with the reason; under
``POODLE_REQUIRE_SERVICES=1`` it fails instead.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import require_module, serve_sample_app, unavailable

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
WAIT = 60.0  # seconds for anything the page does: generous on a loaded machine


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            unavailable(f"{path} is missing: apt-get install chromium chromium-driver")
    require_module("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(cp_server: str, tmp_path: Path) -> Iterator[str]:
    yield from serve_sample_app(cp_server, str(tmp_path / "data" / "docs.sqlite3"), 4)


def fetch(base: str, path: str) -> tuple[int, Any]:
    parts = urlsplit(base)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_the_page_creates_edits_lists_and_deletes_and_draws_the_pool(
    browser: Any, served: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)

    def text_of(element_id: str) -> str:
        text: str = browser.find_element(By.ID, element_id).text
        return text

    browser.get(served + "/")

    # The pool chart, drawn from /status (the server sampled the pool at start).
    chart = wait.until(lambda d: d.find_element(By.ID, "pool-chart"))
    assert chart.tag_name == "svg"
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#pool-chart polyline")) == 3)
    wait.until(lambda d: text_of("stat-max_size") == "4")

    # Create.
    browser.find_element(By.ID, "doc-id").send_keys("from-the-browser")
    body = browser.find_element(By.ID, "doc-body")
    body.clear()
    body.send_keys('{"made": "in chromium"}')
    browser.find_element(By.ID, "save").click()
    wait.until(lambda d: "Created from-the-browser" in text_of("message"))
    wait.until(lambda d: "from-the-browser" in text_of("doc-list"))
    status, doc = fetch(served, "/docs/from-the-browser")
    assert status == 200 and doc["made"] == "in chromium" and doc["_rev"].startswith("1-")
    assert text_of("doc-rev") == doc["_rev"]

    # Edit: the page sends the revision it holds.
    body.clear()
    body.send_keys('{"made": "in chromium", "edited": true}')
    browser.find_element(By.ID, "save").click()
    wait.until(lambda d: "Saved from-the-browser" in text_of("message"))
    status, doc = fetch(served, "/docs/from-the-browser")
    assert status == 200 and doc["edited"] is True and doc["_rev"].startswith("2-")

    # Delete.
    browser.find_element(By.ID, "delete").click()
    wait.until(lambda d: "Deleted from-the-browser" in text_of("message"))
    wait.until(lambda d: "from-the-browser" not in text_of("doc-list"))
    assert fetch(served, "/docs/from-the-browser")[0] == 404
