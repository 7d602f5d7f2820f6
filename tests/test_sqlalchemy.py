"""SQLAlchemy on poodle (issue 18): an Engine whose connections a poodle pool lends.

What SQLAlchemy users rely on, on real PostgreSQL and SQLite: the pool events,
pre-ping after the server killed a session, ``invalidate()``, ``dispose()``
(in a forked child too), reset on return, the checkout timeout, nesting; and
the config that declares such a pool. The request Session is in
tests/test_sqlalchemy_tool.py.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")

import psycopg  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy import exc as sa_exc  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from poodle_cherrypy import Pool, PoolTimeout  # noqa: E402
from poodle_cherrypy.config import build  # noqa: E402
from poodle_cherrypy.sqlalchemy import PoodlePool, create_engine  # noqa: E402

pytestmark = pytest.mark.services


def sa_url(dsn: str) -> str:
    """The SQLAlchemy URL (psycopg 3 dialect) of a libpq URL."""
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def pg_url(postgres_dsn: str) -> Iterator[str]:
    """A SQLAlchemy URL of the loopback PostgreSQL, with a table ``sa_items`` of its own."""
    table = f"sa_items_{os.getpid()}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, v text)")
    yield sa_url(postgres_dsn)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


TABLE = f"sa_items_{os.getpid()}"


def backend_pid(conn: Any) -> int:
    pid: int = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    return pid


def terminate(postgres_dsn: str, pid: int) -> None:
    """Kill backend ``pid`` from another session, as an administrator or a failover would."""
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Wait for it to be gone, so the pool meets a dead socket.
        for _ in range(200):
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            threading.Event().wait(0.01)
    pytest.fail(f"backend {pid} did not end")


def alive(postgres_dsn: str, pid: int) -> bool:
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        return row is not None and row[0] == 1


# -- the pool under the Engine --------------------------------------------------


def test_the_engine_pool_is_poodle_and_the_events_fire(pg_url: str) -> None:
    engine = create_engine(pg_url, poodle={"max_size": 3, "name": "sa-events"})
    seen: list[str] = []
    for name in ("connect", "checkout", "checkin", "reset"):
        event.listen(engine.pool, name, lambda *args, name=name: seen.append(name))
    try:
        assert isinstance(engine.pool, PoodlePool)
        poodle = engine.pool.poodle
        with engine.connect() as conn:
            first = backend_pid(conn)
            assert engine.pool.checkedout() == 1
            assert "in_use=1" in engine.pool.status()
        with engine.connect() as conn:
            assert backend_pid(conn) == first  # the same DB-API connection, reused
        # connect once per DB-API connection; checkout, reset and checkin per use.
        assert seen == ["connect", "checkout", "reset", "checkin", "checkout", "reset", "checkin"]
        stats = poodle.stats()
        assert (stats.size, stats.idle, stats.in_use, stats.checkouts) == (1, 1, 0, 2)
        assert engine.pool.status() == (
            "PoodlePool 'sa-events': size=1/3 idle=1 in_use=0 waiting=0"
        )
    finally:
        engine.pool.poodle.close()


def test_nested_checkouts_get_connections_of_their_own(pg_url: str) -> None:
    """An inner Session's rollback never touches the outer one's transaction."""
    engine = create_engine(pg_url, poodle={"max_size": 2})
    try:
        with Session(engine) as outer:
            outer.execute(text(f"INSERT INTO {TABLE} (v) VALUES ('outer')"))
            with Session(engine) as inner:
                inner.execute(text(f"INSERT INTO {TABLE} (v) VALUES ('inner')"))
                assert backend_pid(inner.connection()) != backend_pid(outer.connection())
                assert engine.pool.checkedout() == 2
                inner.rollback()
            outer.commit()
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT v FROM {TABLE}")).scalars().all() == ["outer"]
    finally:
        engine.pool.poodle.close()


def test_an_open_transaction_is_rolled_back_on_return(pg_url: str) -> None:
    engine = create_engine(pg_url, poodle={"max_size": 1})
    try:
        conn = engine.connect()
        conn.execute(text(f"INSERT INTO {TABLE} (v) VALUES ('left open')"))
        conn.close()  # no commit: SQLAlchemy's reset on return rolls it back
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar_one() == 0
    finally:
        engine.pool.poodle.close()


def test_pre_ping_replaces_a_session_the_server_killed(pg_url: str, postgres_dsn: str) -> None:
    engine = create_engine(pg_url, pool_pre_ping=True, poodle={"max_size": 2})
    try:
        with engine.connect() as conn:
            dead = backend_pid(conn)
        terminate(postgres_dsn, dead)
        with engine.connect() as conn:  # no error reaches the caller
            assert backend_pid(conn) != dead
        stats = engine.pool.poodle.stats()
        assert (stats.discarded, stats.size) == (1, 1)
    finally:
        engine.pool.poodle.close()


def test_a_disconnect_invalidates_and_poodle_discards_and_moves_the_watermark(
    pg_url: str, postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without pre-ping: SQLAlchemy detects the disconnect, poodle disposes of the
    connection and, having no check, of the idle ones opened before it."""
    engine = create_engine(pg_url, poodle={"max_size": 3})
    try:
        first = engine.connect()
        second = engine.connect()
        dead, other = backend_pid(first), backend_pid(second)
        second.close()  # idle now, opened before the one found dead
        terminate(postgres_dsn, dead)
        with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"):
            with pytest.raises(sa_exc.OperationalError) as caught:
                first.execute(text("SELECT 1"))
            assert caught.value.connection_invalidated
            first.close()
        stats = engine.pool.poodle.stats()
        assert (stats.in_use, stats.idle, stats.size, stats.discarded) == (0, 0, 0, 2)
        assert any("SQLAlchemy invalidated it" in r.getMessage() for r in caplog.records)
        assert not alive(postgres_dsn, other)  # the idle one was closed, not only dropped
        with engine.connect() as conn:
            assert backend_pid(conn) not in (dead, other)
    finally:
        engine.pool.poodle.close()


def test_invalidate_discards_the_connection(pg_url: str, postgres_dsn: str) -> None:
    engine = create_engine(pg_url, poodle={"max_size": 2})
    try:
        with engine.connect() as conn:
            pid = backend_pid(conn)
            conn.invalidate()
        assert not alive(postgres_dsn, pid)
        with engine.connect() as conn:
            assert backend_pid(conn) != pid
        assert engine.pool.poodle.stats().discarded == 1
    finally:
        engine.pool.poodle.close()


def test_a_soft_invalidation_retires_the_connection_quietly(
    pg_url: str, postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(pg_url, poodle={"max_size": 2})
    try:
        with engine.connect() as keep:
            kept = backend_pid(keep)
        with caplog.at_level(logging.INFO, logger="poodle_cherrypy"), engine.connect() as conn:
            pid = backend_pid(conn)
            assert pid == kept
            conn.connection.invalidate(soft=True)  # the pool-level connection
            assert alive(postgres_dsn, pid)  # still usable until it goes back
            conn.execute(text("SELECT 1"))
        assert not alive(postgres_dsn, pid)
        stats = engine.pool.poodle.stats()
        assert (stats.discarded, stats.size) == (1, 0)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        engine.pool.poodle.close()


def test_dispose_retires_idle_connections_now_and_busy_ones_on_return(
    pg_url: str, postgres_dsn: str
) -> None:
    engine = create_engine(pg_url, poodle={"max_size": 3})
    try:
        busy = engine.connect()
        idle = engine.connect()
        busy_pid, idle_pid = backend_pid(busy), backend_pid(idle)
        idle.close()
        old_pool = engine.pool
        engine.dispose()
        assert engine.pool is not old_pool and engine.pool.poodle is old_pool.poodle
        assert not alive(postgres_dsn, idle_pid)
        assert alive(postgres_dsn, busy_pid)  # in use: left to finish
        busy.execute(text("SELECT 1"))
        busy.close()
        assert not alive(postgres_dsn, busy_pid)
        with engine.connect() as conn:
            assert backend_pid(conn) not in (busy_pid, idle_pid)
        assert engine.pool.poodle.stats().in_use == 0
    finally:
        engine.pool.poodle.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_dispose_close_false_in_a_forked_child_leaves_the_parents_connections(
    pg_url: str, postgres_dsn: str
) -> None:
    engine = create_engine(pg_url, poodle={"max_size": 2})
    try:
        with engine.connect() as conn:
            parent_pid = backend_pid(conn)
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                engine.dispose(close=False)  # SQLAlchemy's advice for a child
                with engine.connect() as conn:
                    own = backend_pid(conn)
                os.write(write, str(own).encode())
                code = 0 if own != parent_pid else 2
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(child, 0)
        child_backend = int(os.read(read, 64) or b"0")
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        assert child_backend not in (0, parent_pid)
        # The child neither closed nor used the parent's connection.
        with engine.connect() as conn:
            assert backend_pid(conn) == parent_pid
    finally:
        engine.pool.poodle.close()


def test_the_checkout_timeout_is_sqlalchemys_and_poodles(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_timeout=0.2, poodle={"max_size": 1, "timeout": 30})
    try:
        with engine.connect(), pytest.raises(sa_exc.TimeoutError) as caught:
            engine.connect()
        assert isinstance(caught.value, PoolTimeout)
        assert "within 0.2 s" in str(caught.value)
        assert engine.pool.poodle.stats().in_use == 0
    finally:
        engine.pool.poodle.close()


def test_pool_recycle_is_poodles_max_lifetime(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_recycle=3600, poodle={"max_size": 1})
    try:
        assert engine.pool.poodle._max_lifetime == 3600.0
    finally:
        engine.pool.poodle.close()


def test_a_given_poodle_pool_opens_the_connections(tmp_path: Path) -> None:
    """The dialect from the URL, the connections from poodle's own factory."""
    path = tmp_path / "given.db"
    opened: list[sqlite3.Connection] = []

    def factory() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        opened.append(conn)
        return conn

    poodle = Pool(factory, name="given", max_size=2)
    engine = create_engine("sqlite://", poodle=poodle)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (v integer)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert len(opened) == 1
        assert sqlite3.connect(path).execute("SELECT v FROM t").fetchall() == [(1,)]
    finally:
        poodle.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pool_pre_ping": True, "poodle": Pool(sqlite3.connect, (":memory:",), name="nocheck")},
         "pool_pre_ping=True with poodle pool 'nocheck', which has no check"),
        ({"pool_recycle": 10, "poodle": Pool(sqlite3.connect, (":memory:",))},
         "set that Pool's max_lifetime instead"),
        ({"poodle": {"factory": sqlite3.connect}}, "the Engine opens the connections"),
        ({"pool_timeout": -1}, "pool_timeout must be seconds >= 0, got -1"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(sa_exc.ArgumentError, match=message.replace("(", r"\(")):
        create_engine("sqlite://", **kwargs)


def test_queuepools_own_arguments_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="'pool_size'"):
        create_engine("sqlite://", pool_size=5)


# -- declaring a pool for SQLAlchemy ----------------------------------------


def test_a_spec_with_sqlalchemy_url_builds_the_engine_and_its_pool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'spec.db'}"
    pool, binding = build(
        "orm", {"sqlalchemy_url": url, "max_size": 2, "sqlalchemy_options": {"echo": False}},
        "poodle.orm",
    )
    try:
        assert binding is not None and binding.pool is pool
        assert (pool.name, pool.stats().max_size) == ("orm", 2)
        with binding.engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ({"sqlalchemy_url": "nonsense"}, ValueError,
         r"^poodle\.orm\.sqlalchemy_url: 'nonsense': Could not parse"),
        ({"sqlalchemy_url": "nosuchdb://x"}, ValueError, r"^poodle\.orm\.sqlalchemy_url: "),
        ({"sqlalchemy_url": 5}, TypeError, r"^poodle\.orm\.sqlalchemy_url: expected a URL"),
        ({"sqlalchemy_options": {}}, ValueError, r"^poodle\.orm\.sqlalchemy_url: missing"),
        ({"sqlalchemy_url": "sqlite://", "max_size": 0}, ValueError,
         r"^poodle\.orm\.max_size: max_size must be"),
        ({"sqlalchemy_url": "sqlite://", "sqlalchemy_options": {"bogus": 1}}, TypeError,
         r"^poodle\.orm\.sqlalchemy_options: .*bogus"),
        ({"sqlalchemy_url": "sqlite://", "sqlalchemy_options": "echo"}, TypeError,
         r"^poodle\.orm\.sqlalchemy_options: expected a dict"),
        ({"sqlalchemy_url": "sqlite://", "max_sizes": 3}, ValueError,
         r"^poodle\.orm\.max_sizes: unknown pool option"),
    ],
)
def test_a_bad_sqlalchemy_spec_names_the_key(
    spec: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build("orm", spec, "poodle.orm")


def test_a_connection_nobody_closed_comes_back_when_collected_even_inside_the_pools_lock(
    tmp_path: Path,
) -> None:
    """The garbage collector may return a forgotten Connection (SQLAlchemy's
    finalizer) at any allocation, even one the pool makes under its own lock:
    that return must not wait for the lock its own thread holds."""
    import gc

    engine = create_engine(f"sqlite:///{tmp_path / 'gc.db'}",
                           connect_args={"check_same_thread": False}, poodle={"max_size": 1})
    poodle = engine.pool.poodle
    finished = threading.Event()

    def forget_and_collect_under_the_lock() -> None:
        conn = engine.connect()
        conn.execute(text("SELECT 1"))
        del conn  # forgotten, unclosed: in a reference cycle, only the collector frees it
        assert poodle.stats().in_use == 1
        with poodle._lock:  # as if the collector ran inside the pool's bookkeeping
            gc.collect()
        finished.set()

    gc_was_enabled = gc.isenabled()
    gc.disable()  # the collection happens where the test says, not before
    try:
        worker = threading.Thread(target=forget_and_collect_under_the_lock, daemon=True)
        worker.start()
        assert finished.wait(10), "the collector's return waited for its own thread's lock"
    finally:
        if gc_was_enabled:
            gc.enable()
    deadline = threading.Event()
    for _ in range(500):
        if poodle.stats().in_use == 0:
            break
        deadline.wait(0.01)
    assert poodle.stats().in_use == 0
    with engine.connect() as conn:  # the connection is back and lent again
        assert conn.execute(text("SELECT 2")).scalar_one() == 2
    poodle.close()
