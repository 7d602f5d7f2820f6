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


def fetch(base: str, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    parts = urlsplit(base)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def text_of(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = browser.find_element(By.ID, element_id).text
    return text


def set_viewport(browser: Any, width: int, height: int, mobile: bool) -> None:
    """The page's viewport (not the window's outer size), as a device would have it."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def wait_for(browser: Any, predicate: Any, what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, WAIT).until(predicate)
    except TimeoutException:
        pytest.fail(f"waited {WAIT:g} s for {what}, in vain")


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
    for selector in ("polyline.in_use", "polyline.idle", "polyline.waiting"):
        wait.until(lambda d, s=selector: d.find_elements(By.CSS_SELECTOR, f"#pool-chart {s}"))
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

    # Delete, once confirmed.
    browser.find_element(By.ID, "delete").click()
    wait.until(lambda d: d.switch_to.alert).accept()
    wait.until(lambda d: "Deleted from-the-browser" in text_of("message"))
    wait.until(lambda d: "from-the-browser" not in text_of("doc-list"))
    assert fetch(served, "/docs/from-the-browser")[0] == 404


# -- layout, chart, refresh and confirmation -----------------------------------------

# No hyphen: nowhere a browser would break the line by itself.
LONG_ID = ("averylongdocumentid_" * 10)[:200]
assert len(LONG_ID) == 200

VIEWPORTS = [
    pytest.param((1280, 900, False), id="desktop-1280x900"),
    pytest.param((390, 844, True), id="phone-390x844"),
]

LAYOUT = """
const box = (id) => document.getElementById(id).getBoundingClientRect().toJSON();
return {
  innerWidth: window.innerWidth, innerHeight: window.innerHeight,
  scrollWidth: document.documentElement.scrollWidth,
  editor: box("editor"), message: box("message"), list: box("doc-list"),
  documents: box("documents"), docId: box("doc-id"),
  listButtons: [...document.querySelectorAll("#doc-list button")].map(
    (b) => b.getBoundingClientRect().toJSON()),
};
"""


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_the_layout_keeps_the_editor_in_view_with_a_200_character_id(
    browser: Any, served: str, tmp_path: Path, viewport: tuple[int, int, bool]
) -> None:
    from selenium.webdriver.common.by import By

    width, height, mobile = viewport
    set_viewport(browser, width, height, mobile)
    assert fetch(served, f"/docs/{LONG_ID}", "PUT", {"long": True})[0] == 201
    assert fetch(served, "/docs/short", "PUT", {"short": True})[0] == 201
    browser.get(served + "/")
    button = wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#doc-list button[data-id="{LONG_ID}"]'),
        "list entry for the long id",
    )[0]
    wait_for(browser, lambda d: text_of(d, "stat-max_size") == "4", "pool stats")
    browser.execute_script("arguments[0].click()", button)
    wait_for(browser, lambda d: text_of(d, "doc-rev").startswith("1-"), "the long document")
    wait_for(browser, lambda d: LONG_ID in text_of(d, "message"), "the 'Loaded' message")
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / f"layout-{width}x{height}.png"))

    layout = browser.execute_script(LAYOUT)
    view_w, view_h = layout["innerWidth"], layout["innerHeight"]
    assert (view_w, view_h) == (width, height), layout
    assert layout["scrollWidth"] <= view_w, f"the page scrolls sideways: {layout}"
    for name in ("editor", "message", "list", "documents", "docId"):
        box = layout[name]
        assert box["left"] >= 0 and box["right"] <= view_w, (name, box, view_w)
    for box in layout["listButtons"]:
        assert box["right"] <= layout["documents"]["right"], (box, layout["documents"])
    if not mobile:
        # At 1280x900 what the page says back (the status line) is in the first screen.
        message = layout["message"]
        assert message["top"] >= 0 and message["bottom"] <= view_h, message
        assert layout["editor"]["top"] < view_h


def chart_facts(browser: Any) -> Any:
    return browser.execute_script("""
const chart = document.getElementById("pool-chart");
const plot = chart.querySelector("rect.plot");
const lines = [...chart.querySelectorAll("polyline")];
const firstX = (cls) => {
  const line = chart.querySelector("polyline." + cls);
  return line ? Number(line.getAttribute("points").trim().split(/[ ,]/)[0]) : null;
};
return {
  plot: plot ? {x: Number(plot.getAttribute("x")), width: Number(plot.getAttribute("width"))}
             : null,
  axes: chart.querySelectorAll(".axis").length,
  timeLabels: [...chart.querySelectorAll("text.time")].map((t) => t.textContent),
  empty: [...chart.querySelectorAll("text.empty")].map((t) => t.textContent),
  order: lines.map((l) => l.getAttribute("class")),
  waitingDash: (() => {
    const w = chart.querySelector("polyline.waiting");
    return w ? getComputedStyle(w).strokeDasharray : null;
  })(),
  firstX: {in_use: firstX("in_use"), idle: firstX("idle"), waiting: firstX("waiting"),
           wait_p99: firstX("wait_p99")},
  p99Axis: [...chart.querySelectorAll("text.p99")].map((t) => t.textContent),
};
""")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_the_chart_has_axes_time_labels_and_fills_its_width_from_the_first_sample(
    browser: Any, served: str, tmp_path: Path, viewport: tuple[int, int, bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sample_app import api

    original = api.StatusAPI.__call__

    def without_p99(self: Any, **params: Any) -> bytes:
        # A /status without wait_time_p99 (an older server's), whatever the
        # checkouts of the tests before this one left in the latest interval.
        data = json.loads(original(self, **params))
        for stats in data["pools"].values():
            stats.pop("wait_time_p99", None)
        return json.dumps(data).encode("ascii")

    monkeypatch.setattr(api.StatusAPI, "__call__", without_p99)
    width, height, mobile = viewport
    set_viewport(browser, width, height, mobile)
    browser.get(served + "/")
    facts = wait_for(browser, lambda d: (f := chart_facts(d))["order"] and f, "the chart lines")
    browser.save_screenshot(str(tmp_path / f"chart-{width}x{height}.png"))

    assert facts["plot"] is not None, facts
    assert facts["axes"] >= 2, facts  # x and y
    assert len(facts["timeLabels"]) >= 2 and all(":" in t for t in facts["timeLabels"]), facts
    # The x range starts at the first sample, not 5 minutes before the last.
    for gauge in ("in_use", "idle", "waiting"):
        assert abs(facts["firstX"][gauge] - facts["plot"]["x"]) < 1, facts
    # Red "waiting" goes under green "idle" (both sit at 0 on an idle pool), dashed.
    order = facts["order"]
    assert order.index("waiting") < order.index("idle"), order
    assert facts["waitingDash"] not in (None, "", "none"), facts
    # No wait_time_p99 in this /status: no line for it, and the chart is drawn anyway.
    assert "wait_p99" not in order and facts["p99Axis"] == [], facts


def test_the_chart_draws_wait_time_p99_when_status_has_it(
    browser: Any, served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sample_app import api

    original = api.StatusAPI.__call__
    calls = [0]

    def with_p99(self: Any, **params: Any) -> bytes:
        data = json.loads(original(self, **params))
        calls[0] += 1
        for stats in data["pools"].values():
            stats["wait_time_p99"] = None if calls[0] == 1 else 0.004 * calls[0]
        return json.dumps(data).encode("ascii")

    monkeypatch.setattr(api.StatusAPI, "__call__", with_p99)
    set_viewport(browser, 1280, 900, False)
    browser.get(served + "/")
    facts = wait_for(browser, lambda d: "wait_p99" in (f := chart_facts(d))["order"] and f,
                     "the wait_time_p99 line")
    browser.save_screenshot(str(tmp_path / "chart-p99.png"))
    assert facts["p99Axis"] and any("ms" in t for t in facts["p99Axis"]), facts
    assert text_of(browser, "stat-wait_time_p99") != "-"


def test_the_page_draws_its_empty_state_before_the_first_status_answer(
    browser: Any, served: str, tmp_path: Path
) -> None:
    set_viewport(browser, 1280, 900, False)
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/status*"]})
    browser.get(served + "/")
    facts = wait_for(browser, lambda d: (f := chart_facts(d))["empty"] and f, "an empty chart")
    browser.save_screenshot(str(tmp_path / "empty.png"))
    assert facts["plot"] is not None and facts["axes"] >= 2, facts
    assert facts["order"] == [], facts
    assert text_of(browser, "stat-max_size") == "-"


def test_the_list_refreshes_while_others_write(browser: Any, served: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served + "/")
    wait_for(browser, lambda d: text_of(d, "stat-max_size") == "4", "pool stats")
    assert fetch(served, "/docs/written-elsewhere", "PUT", {"by": "another client"})[0] == 201
    wait_for(browser, lambda d: "written-elsewhere" in text_of(d, "doc-list"),
             "the other client's document in the list, with no click")
    rev = fetch(served, "/docs/written-elsewhere")[1]["_rev"]
    assert fetch(served, f"/docs/written-elsewhere?rev={rev}", "DELETE")[0] == 200
    wait_for(browser, lambda d: "written-elsewhere" not in text_of(d, "doc-list"),
             "the deleted document gone from the list")
    assert browser.find_elements(By.ID, "doc-list")


def test_delete_asks_for_confirmation(browser: Any, served: str) -> None:
    from selenium.webdriver.common.by import By

    assert fetch(served, "/docs/keep-me", "PUT", {"v": 1})[0] == 201
    browser.get(served + "/")
    button = wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#doc-list button[data-id="keep-me"]'),
        "the list entry",
    )[0]
    button.click()
    wait_for(browser, lambda d: text_of(d, "doc-rev").startswith("1-"), "the document")

    browser.find_element(By.ID, "delete").click()
    alert = wait_for(browser, lambda d: d.switch_to.alert, "a confirmation dialog")
    assert "keep-me" in alert.text
    alert.dismiss()
    wait_for(browser, lambda d: "Not deleted" in text_of(d, "message"), "'Not deleted'")
    assert fetch(served, "/docs/keep-me")[0] == 200

    browser.find_element(By.ID, "delete").click()
    wait_for(browser, lambda d: d.switch_to.alert, "a confirmation dialog").accept()
    wait_for(browser, lambda d: "Deleted keep-me" in text_of(d, "message"), "'Deleted'")
    assert fetch(served, "/docs/keep-me")[0] == 404
