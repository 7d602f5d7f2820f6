"""PoodleHealth: 200 while every pool can serve, 503 while one cannot, in-process
through CherryPy's WSGI app (webtest), on SQLite pools and a failing factory."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import cherrypy
import pytest
import webtest

from poodle_cherrypy import PoodleHealth, PoodlePlugin, Pool


class Switch:
    """A factory that fails while ``down``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.down = False

    def __call__(self) -> sqlite3.Connection:
        if self.down:
            raise ConnectionRefusedError("database down")
        return sqlite3.connect(self.path, check_same_thread=False)


def serve(cp_engine: Any, pools: dict[str, Pool[Any]], health: PoodleHealth) -> webtest.TestApp:
    class Root:
        pass

    root = Root()
    root.health = health  # type: ignore[attr-defined]
    PoodlePlugin(cp_engine, pools).subscribe()
    cherrypy.tree.mount(root, "")
    cp_engine.start()
    return webtest.TestApp(cherrypy.tree)


def ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1")


def test_ok_with_each_pools_state(cp_engine: Any, tmp_path: Path) -> None:
    pool: Pool[Any] = Pool(Switch(tmp_path / "a.db"), name="default")
    app = serve(cp_engine, {"default": pool}, PoodleHealth(ping=ping))
    response = app.get("/health")
    assert response.status_int == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json["status"] == "ok"
    entry = response.json["pools"]["default"]
    assert entry["ok"] and entry["reason"] is None and entry["circuit"] == "closed"
    assert entry["size"] == entry["idle"] == 1  # the ping's connection, back in the pool


def test_503_while_the_database_is_down_and_200_once_it_is_back(
    cp_engine: Any, tmp_path: Path
) -> None:
    factory = Switch(tmp_path / "a.db")
    pool: Pool[Any] = Pool(factory, fail_fast_after=2, retry_delay=0.05, max_retry_delay=0.1)
    app = serve(cp_engine, {"default": pool}, PoodleHealth(ping=ping))
    factory.down = True
    reasons = set()
    for _ in range(4):
        response = app.get("/health", status=503)
        assert response.json["status"] == "unavailable"
        reasons.add(response.json["pools"]["default"]["reason"])
    assert "circuit open" in reasons or any(r.startswith("ping failed") for r in reasons)
    assert pool.stats().circuit != "closed"
    factory.down = False
    for _ in range(200):  # the checks themselves retry: no request needed
        if app.get("/health", expect_errors=True).status_int == 200:
            break
        threading.Event().wait(0.02)
    assert app.get("/health").json["pools"]["default"]["circuit"] == "closed"


def test_without_ping_the_circuit_decides_and_no_connection_is_made(
    cp_engine: Any, tmp_path: Path
) -> None:
    factory = Switch(tmp_path / "a.db")
    pool: Pool[Any] = Pool(factory, fail_fast_after=1, retry_delay=30, max_retry_delay=30)
    app = serve(cp_engine, {"default": pool}, PoodleHealth())
    assert app.get("/health").json["pools"]["default"]["size"] == 0
    factory.down = True
    with pytest.raises(ConnectionRefusedError), pool.get():
        pass
    response = app.get("/health", status=503)
    assert response.json["pools"]["default"]["reason"] == "circuit open"


def test_a_busy_pool_is_not_down(cp_engine: Any, tmp_path: Path) -> None:
    pool: Pool[Any] = Pool(Switch(tmp_path / "a.db"), max_size=1)
    app = serve(cp_engine, {"default": pool}, PoodleHealth(ping=ping, timeout=0.05))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pool.get():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        response = app.get("/health")
        assert response.json["pools"]["default"]["reason"] == "busy"
    finally:
        release.set()
        thread.join(10)


def test_a_pool_busy_up_to_max_waiting_is_not_down(cp_engine: Any, tmp_path: Path) -> None:
    # With max_waiting, the health check's checkout is refused at once
    # (TooManyWaiters) where it would have waited: busy too, not down.
    pool: Pool[Any] = Pool(Switch(tmp_path / "a.db"), max_size=1, max_waiting=1)
    app = serve(cp_engine, {"default": pool}, PoodleHealth(ping=ping, timeout=0.05))
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pool.get():
            held.set()
            release.wait(10)

    def wait() -> None:
        with pool.get(timeout=10):
            pass

    holder = threading.Thread(target=hold)
    waiter = threading.Thread(target=wait)
    holder.start()
    try:
        assert held.wait(10)
        waiter.start()
        for _ in range(500):
            if pool.stats().waiting == 1:
                break
            threading.Event().wait(0.01)
        assert pool.stats().waiting == 1
        response = app.get("/health", expect_errors=True)
        assert response.json["pools"]["default"]["reason"] == "busy"
        assert response.status_int == 200
    finally:
        release.set()
        holder.join(10)
        if waiter.ident is not None:  # started
            waiter.join(10)


@pytest.mark.parametrize(
    ("pools", "error"),
    [("default", TypeError), ([1], TypeError)],
)
def test_bad_arguments_name_the_value(pools: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=repr(pools).replace("[", r"\[").replace("]", r"\]")):
        PoodleHealth(pools)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"ping": 3}, "ping must be callable, got 3"), ({"timeout": 0}, "got 0")],
)
def test_bad_options_name_the_value(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        PoodleHealth(**kwargs)


def test_an_unknown_pool_is_unavailable(cp_engine: Any, tmp_path: Path) -> None:
    pool: Pool[Any] = Pool(Switch(tmp_path / "a.db"))
    app = serve(cp_engine, {"default": pool}, PoodleHealth(["default", "other"]))
    response = app.get("/health", status=503)
    assert response.json["pools"]["other"] == {"ok": False, "reason": "no such pool"}




def test_the_sample_app_mounts_it_at_health(cp_engine: Any, tmp_path: Path) -> None:
    from sample_app import SampleApp, db

    PoodlePlugin(cp_engine, {"default": db.pool_spec(str(tmp_path / "d.db"), 4)}).subscribe()
    sample = SampleApp(cp_engine)
    sample.mount()
    sample.subscribe()
    try:
        cp_engine.start()
        response = webtest.TestApp(cherrypy.tree).get("/health")
        assert response.json["status"] == "ok"
        assert response.json["pools"]["default"]["ok"] is True
    finally:
        cp_engine.stop()
        sample.unsubscribe()
