"""Logging in a CherryPy process: into CherryPy's error log, short in an outage.

The ``poodle_cherrypy`` logger's records reach the handlers of CherryPy's
error log (screen, file) while a PoodlePlugin runs. During a database outage
each state change is one line with its cause, the traceback comes once, and
each request answered 503 is one INFO line without a traceback.
"""

from __future__ import annotations

import io
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

import cherrypy
import pytest
import webtest

from poodle_cherrypy import PoodlePlugin, Pool

poodle_logger = logging.getLogger("poodle_cherrypy")


class ErrorLog:
    """What reaches the handlers of CherryPy's error log, as they format it."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.handler.addFilter(self._keep)

    def _keep(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return True

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self, part: str) -> list[str]:
        return [line for line in self.text.splitlines() if part in line]


@pytest.fixture
def error_log(cp_engine: Any) -> Iterator[ErrorLog]:
    log = ErrorLog()
    cherrypy.log.error_log.addHandler(log.handler)
    try:
        yield log
    finally:
        cherrypy.log.error_log.removeHandler(log.handler)


def refuse() -> sqlite3.Connection:
    raise sqlite3.OperationalError("connection refused by db.internal")


def test_pool_records_reach_cherrypys_error_log_while_the_plugin_runs(
    error_log: ErrorLog,
) -> None:
    PoodlePlugin(cherrypy.engine, {"orders": Pool(object)}).subscribe()
    cherrypy.engine.start()
    poodle_logger.warning("pool %r: something to say", "orders")
    cherrypy.engine.stop()
    cherrypy.engine.start()  # a second start adds no second route
    poodle_logger.warning("pool %r: once more", "orders")
    cherrypy.engine.stop()
    poodle_logger.warning("pool %r: after stop", "orders")

    [line] = error_log.lines("something to say")
    assert line.startswith("WARNING [") and "] POODLE pool 'orders': something to say" in line
    assert len(error_log.lines("once more")) == 1
    assert error_log.lines("after stop") == []  # the route is gone with the plugin


def test_an_outage_logs_each_state_change_once_and_one_traceback(error_log: ErrorLog) -> None:
    # Callers probe (no probe thread) and retry_delay is long: no probe runs during the
    # test, so the lines are exact.
    pool = Pool(refuse, name="default", fail_fast_after=3, retry_delay=60, max_retry_delay=60,
                probe_interval=None)
    PoodlePlugin(cherrypy.engine, {"default": pool}).subscribe()

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            return "unreachable"

    app = webtest.TestApp(cherrypy.tree.mount(Root(), "/", {"/": {"tools.poodle.on": True}}))
    cherrypy.engine.start()
    for _ in range(8):
        app.get("/", status=503)
    text = error_log.text

    assert text.count("Traceback (most recent call last)") == 1, text
    assert "pool 'default': pool 'default'" not in text
    # The outage's first failure (with the traceback), then the circuit opening.
    assert len(error_log.lines("pool 'default': connecting failed (")) == 1, text
    [opened] = error_log.lines("circuit opened")
    assert opened.startswith("WARNING") and "connection refused by db.internal" in opened
    # One INFO line per request, naming the pool and the cause.
    answered = [r for r in error_log.records if "answered 503" in r.getMessage()]
    assert len(answered) == 8, text
    assert {r.levelno for r in answered} == {logging.INFO}
    assert not any(r.exc_info for r in answered)
    assert all("pool 'default'" in r.getMessage() for r in answered)
