"""The pool with a real DB-API driver, sqlite3: reset rolls back, broken
connections are disposed of, check catches a dead idle connection."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from poodle_cherrypy import Pool


def rollback(conn: sqlite3.Connection) -> None:
    conn.rollback()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "pool.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table t (n integer)")
    conn.close()
    return path


@pytest.fixture
def pool(db: Path) -> Iterator[Pool[sqlite3.Connection]]:
    pool: Pool[sqlite3.Connection] = Pool(
        sqlite3.connect,
        (str(db),),
        {"check_same_thread": False, "timeout": 30},
        name="sqlite",
        max_size=2,
        reset=rollback,
    )
    yield pool
    pool.close()


def count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        (n,) = conn.execute("select count(*) from t").fetchone()
        return int(n)
    finally:
        conn.close()


def test_reset_rolls_back_uncommitted_writes(pool: Pool[sqlite3.Connection], db: Path) -> None:
    with pool.get() as conn:
        conn.execute("insert into t values (1)")
        conn.commit()
        conn.execute("insert into t values (2)")  # never committed
        assert conn.in_transaction
    with pool.get() as again:
        assert again is conn
        assert not again.in_transaction
        assert again.execute("select n from t").fetchall() == [(1,)]
    assert count(db) == 1


def test_application_error_rolls_back_and_propagates(
    pool: Pool[sqlite3.Connection], db: Path
) -> None:
    error = ValueError("validation failed")
    with pytest.raises(ValueError) as info, pool.get() as conn:
        conn.execute("insert into t values (1)")
        raise error
    assert info.value is error
    assert count(db) == 0
    with pool.get() as again:
        assert again is conn  # a ValueError says nothing about the connection


def test_connection_closed_by_the_block_is_disposed_not_reused(
    pool: Pool[sqlite3.Connection],
) -> None:
    with pool.get() as conn:
        conn.close()  # reset's rollback now fails: the pool disposes of it
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.discarded) == (0, 0, 1)
    for _ in range(3):
        with pool.get() as again:
            assert again is not conn
            assert again.execute("select 1").fetchone() == (1,)


def test_operational_error_disposes_the_connection(pool: Pool[sqlite3.Connection]) -> None:
    with pytest.raises(sqlite3.OperationalError) as info, pool.get() as conn:
        conn.execute("select * from no_such_table")
    assert "no_such_table" in str(info.value)
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("select 1")  # the pool closed it
    with pool.get() as again:
        assert again is not conn


def test_check_replaces_a_dead_idle_connection(db: Path) -> None:
    def ping(conn: sqlite3.Connection) -> None:
        conn.execute("select 1")

    pool: Pool[sqlite3.Connection] = Pool(
        sqlite3.connect, (str(db),), {"check_same_thread": False}, check=ping, check_after=0,
        max_size=1,
    )
    with pool.get() as conn:
        pass
    conn.close()  # dies while idle, as after a server restart
    with pool.get() as again:
        assert again is not conn
        assert again.execute("select 1").fetchone() == (1,)
    pool.close()


def test_threads_each_commit_through_the_pool(pool: Pool[sqlite3.Connection], db: Path) -> None:
    threads, rows = 6, 20
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            for n in range(rows):
                with pool.get(timeout=30) as conn:
                    conn.execute("insert into t values (?)", (i * 1000 + n,))
                    if n % 2:
                        conn.commit()
                    # even rows are left uncommitted: reset rolls them back
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert not worker.is_alive()
    assert not errors, errors
    assert count(db) == threads * rows // 2
    stats = pool.stats()
    assert stats.size <= 2 and stats.in_use == 0 and stats.checkouts == threads * rows
