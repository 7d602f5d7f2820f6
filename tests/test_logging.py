"""Logging in a CherryPy process: into CherryPy's error log, short in an outage.

The ``poodle_cherrypy`` logger's records reach the handlers of CherryPy's
error log (screen, file) while a PoodlePlugin runs. During a database outage
each state change is one line with its cause, the traceback comes once, and
each request answered 503 is one INFO line without a traceback.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import cherrypy
import pytest
import webtest

from poodle_cherrypy import PoodlePlugin, Pool, cplog

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


# -- one event, one line -----------------------------------------------------


class Conn:
    """A stand-in connection whose rollback can be made to fail."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self.fail_rollback = False

    def rollback(self) -> None:
        if self.fail_rollback:
            raise OSError("rollback failed: server closed the connection")

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"<Conn {self.name}>"


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}" for r in caplog.records
        if r.name == "poodle_cherrypy" and r.levelno >= level
    ]


def three_idle(pool: Pool[Any]) -> list[Any]:
    """Open three connections (each lease entered in a thread of its own, so
    that they are not the same one) and return them all, in this order."""
    held = []
    for _ in range(3):
        lease = pool.get()
        thread = threading.Thread(
            target=lambda lease=lease: held.append((lease, lease.__enter__()))
        )
        thread.start()
        thread.join(10)
    for lease, _ in held:
        lease.__exit__(None, None, None)
    return [conn for _, conn in held]


def test_a_failed_reset_logs_one_warning_naming_the_suspects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = iter("abcdef")
    pool: Pool[Conn] = Pool(lambda: Conn(next(names)), reset=lambda c: c.rollback(),
                            check=lambda c: not c.closed)
    three_idle(pool)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="poodle_cherrypy"), pool.get() as conn:
        conn.fail_rollback = True
    [line] = lines(caplog)
    assert line.startswith("WARNING ")
    assert f"discarded {conn!r}: reset failed (OSError('rollback failed" in line
    assert "2 other(s) now suspect" in line
    assert [r.exc_info is not None for r in caplog.records] == [True]  # with the traceback
    pool.close()


def test_a_failed_check_logs_one_warning_naming_the_suspects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = iter("abcdef")
    pool: Pool[Conn] = Pool(lambda: Conn(next(names)), check=lambda c: not c.closed,
                            check_after=0)
    conns = three_idle(pool)
    top = conns[-1]  # returned last: checked out first
    top.closed = True  # the server ended it
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="poodle_cherrypy"), pool.get() as conn:
        assert conn is not top
    [line] = lines(caplog)
    assert line.startswith("WARNING ")
    assert f"discarded {top!r}: check returned False" in line
    assert "2 other(s) now suspect" in line
    pool.close()


def test_a_broken_connection_logs_one_warning_saying_what_broke_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = iter("abcdef")
    pool: Pool[Conn] = Pool(lambda: Conn(next(names)))
    three_idle(pool)
    caplog.clear()
    with (
        caplog.at_level(logging.INFO, logger="poodle_cherrypy"),
        pytest.raises(ConnectionResetError),
        pool.get() as conn,
    ):
        raise ConnectionResetError("connection reset by peer")
    [line] = lines(caplog)
    assert line.startswith("WARNING ")
    assert f"discarded {conn!r}: its block raised ConnectionResetError(" in line
    # Without a check, the idle ones are disposed of at once, and the line says so.
    assert "disposed of 2 idle connection(s)" in line
    pool.close()


def test_cplogs_lock_is_new_in_a_forked_child() -> None:

    held = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        with cplog._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert held.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: the holder thread is gone; its lock must not be
            code = 1
            try:
                done = threading.Event()
                threading.Thread(
                    target=lambda: (cplog.route(object()), done.set()), daemon=True
                ).start()
                code = 0 if done.wait(5) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join(10)
    assert os.waitstatus_to_exitcode(status) == 0, "route() deadlocked in the child"
