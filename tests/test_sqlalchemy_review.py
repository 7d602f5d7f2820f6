"""Review of the SQLAlchemy bridge (review-18): each test shows one defect.

Every test here failed on the code under review (b272f73); see the report.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")

from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc

from poodle_cherrypy import Pool
from poodle_cherrypy.sqlalchemy import (
    PoolTimeoutError,
    RequestBinding,
    create_engine,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'review.db'}"


@pytest.fixture
def engines() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for engine in made:
        engine.pool.poodle.close(timeout=0)


def test_an_engine_timeout_inside_another_pools_block_does_not_discard_that_connection(
    tmp_path: Path, url: str, engines: list[Any]
) -> None:
    # PoolTimeoutError has sqlalchemy.exc.TimeoutError in its MRO, a class named
    # "TimeoutError": the default broken rule calls the outer block's healthy
    # connection lost (errors.py: a pool error must never do that); the epoch
    # moves and, without a check, every idle connection is disposed of too.
    other = Pool(sqlite3.connect, (str(tmp_path / "other.db"),),
                 {"check_same_thread": False}, min_size=2, max_size=2, name="other")
    other.open(wait=True)
    engine = create_engine(url, poodle={"max_size": 1, "timeout": 0.05})
    engines.append(engine)
    try:
        # The Engine's only connection held, then a block of another pool's
        # in which the Engine's checkout times out.
        with engine.connect(), pytest.raises(PoolTimeoutError), other.get():
            engine.connect()
        assert other.stats().discarded == 0
    finally:
        other.close(timeout=0)


def test_a_detached_connection_stays_open_for_its_new_owner(
    url: str, engines: list[Any]
) -> None:
    # detach() calls _do_return_conn with dbapi_connection None, which
    # PoodlePool takes for an invalidation: poodle closes the connection the
    # caller now owns (and moves the watermark, as if it had broken).
    engine = create_engine(url, poodle={"max_size": 2})
    engines.append(engine)
    raw = engine.raw_connection()
    raw.detach()
    try:
        raw.cursor().execute("SELECT 1")  # sqlite3.ProgrammingError: closed database
    finally:
        raw.close()


def test_a_soft_invalidated_request_connection_is_retired_on_its_return(
    url: str, engines: list[Any]
) -> None:
    # _do_return_conn ignores a soft invalidation of the adopted (request's)
    # connection: it goes back idle, and SQLAlchemy's record later reconnects
    # in place, which disposes of it as broken, loudly, instead of quietly.
    engine = create_engine(url, poodle={"max_size": 1})
    engines.append(engine)
    binding = RequestBinding(engine)
    poodle = binding.pool
    with poodle.get():
        session, connection = binding.open()
        connection.connection.invalidate(soft=True)
        session.close()
        connection.close()
    stats = poodle.stats()
    assert (stats.idle, stats.discarded) == (0, 1)


def test_connect_fires_once_per_dbapi_connection_after_a_checkout_disconnect(
    url: str, engines: list[Any]
) -> None:
    # A checkout listener's DisconnectionError makes _hand_over lend the record
    # another poodle connection; when that one is idle and already known to
    # SQLAlchemy, it gets the failed record instead of its own and the connect
    # event runs on it a second time (the docs: "once per DB-API connection").
    engine = create_engine(url, poodle={"max_size": 2}, pool_pre_ping=True)
    engines.append(engine)
    connected: list[Any] = []
    event.listen(engine, "connect", lambda dbapi, record: connected.append(dbapi))
    first, second = engine.connect(), engine.connect()
    first.close()
    second.close()
    assert len(connected) == 2
    fail = [True]

    @event.listens_for(engine, "checkout")
    def checkout(dbapi: Any, record: Any, proxy: Any) -> None:
        if fail:
            fail.pop()
            raise sa_exc.DisconnectionError("stale")

    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    ids = [id(c) for c in connected]
    assert len(ids) == len(set(ids)), "the connect event ran twice on one DB-API connection"


def test_the_request_session_adopts_the_request_connection_when_the_engine_is_disposed(
    url: str, engines: list[Any]
) -> None:
    # RequestBinding.open() marks adoption on engine.pool, then calls
    # engine.connect(); an engine.dispose() in another thread in between swaps
    # engine.pool, the new pool sees no adoption and the Session gets a second
    # poodle connection, outside the request's transaction.
    engine = create_engine(url, poodle={"max_size": 2})
    engines.append(engine)
    binding = RequestBinding(engine)
    real_connect = engine.connect

    def connect_while_another_thread_disposes() -> Any:
        other = threading.Thread(target=engine.dispose)
        other.start()
        other.join()
        return real_connect()

    engine.connect = connect_while_another_thread_disposes  # type: ignore[method-assign]
    with binding.pool.get() as conn:
        session, connection = binding.open()
        try:
            assert connection.connection.dbapi_connection is conn
        finally:
            session.close()
            connection.close()
