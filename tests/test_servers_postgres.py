"""PostgreSQL with psycopg 3: what one user leaves on a connection is not seen
by the next user of that same connection (same backend pid), and the broken
rule tells a lost connection from a failed statement.

Each isolation test has a control: without the recipe, the next user does see
what was left, so the test can tell.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest
from servers import PostgreSQL

from poodle_cherrypy import Pool
from poodle_cherrypy.drivers import (
    psycopg_broken,
    psycopg_check,
    psycopg_discard_all,
    psycopg_reset,
)

with contextlib.suppress(ImportError):  # postgres_dsn skips (or fails) each test, saying why
    import psycopg
    from psycopg.pq import TransactionStatus

    ACTIVE = TransactionStatus.ACTIVE
    IDLE = TransactionStatus.IDLE
    INERROR = TransactionStatus.INERROR

pytestmark = pytest.mark.services


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[PostgreSQL]:
    server = PostgreSQL(postgres_dsn)
    yield server
    server.close()


@pytest.fixture
def table(pg: PostgreSQL) -> Iterator[str]:
    name = f"poodle_{uuid.uuid4().hex[:12]}"
    pg.admin.execute(f"CREATE TABLE {name} (n int)")
    yield name
    pg.admin.execute(f"DROP TABLE IF EXISTS {name}")


def count(pg: PostgreSQL, table: str) -> int:
    row = pg.admin.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("reset", [psycopg_reset, psycopg_discard_all, None])
def test_next_user_sees_no_uncommitted_write_nor_failed_transaction(
    pg: PostgreSQL, table: str, reset: Optional[Callable[[Any], None]]
) -> None:
    with Pool(pg.factory(), max_size=1, reset=reset) as pool:
        with pool.get() as conn:
            first = pg.session_id(conn)
            conn.execute(f"INSERT INTO {table} VALUES (1)")  # never committed
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1/0")  # caught: the transaction is left failed
        with pool.get() as conn:
            assert pg.session_id(conn) == first  # the same connection, reused
            if reset is None:  # the control: the next user is in the same transaction
                assert conn.info.transaction_status == INERROR
                conn.rollback()
                return
            assert conn.info.transaction_status == IDLE
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        assert pool.stats().discarded == 0
    assert count(pg, table) == 0


@pytest.mark.parametrize(
    ("reset", "cleared"), [(psycopg_discard_all, True), (psycopg_reset, False)]
)
def test_discard_all_clears_session_state_rollback_does_not(
    pg: PostgreSQL, reset: Callable[[Any], None], cleared: bool
) -> None:
    temp = f"poodle_temp_{uuid.uuid4().hex[:12]}"
    lock_key = uuid.uuid4().int >> 66  # a bigint nobody else uses
    statement = "SELECT %s::int + 1"
    defaults = pg.admin.execute("SELECT current_setting('search_path'), "
                                "current_setting('statement_timeout')").fetchone()
    with Pool(pg.factory(), max_size=1, reset=reset) as pool:
        with pool.get() as conn:
            first = pg.session_id(conn)
            conn.execute("SET search_path TO pg_catalog")
            conn.execute("SET statement_timeout = '1234s'")
            conn.execute("SELECT set_config('poodle.tenant', '42', false)")
            conn.execute(f"CREATE TEMP TABLE {temp} (n int)")
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_key,))
            conn.execute(statement, (1,), prepare=True)
            conn.commit()
        with pool.get() as conn:
            assert pg.session_id(conn) == first
            assert conn.info.transaction_status == IDLE
            assert conn.autocommit is False  # restored after DISCARD ALL
            row = conn.execute(
                "SELECT current_setting('search_path'), current_setting('statement_timeout'), "
                "current_setting('poodle.tenant', true), to_regclass(%s) IS NOT NULL, "
                "(SELECT count(*) FROM pg_prepared_statements)",
                (f"pg_temp.{temp}",),
            ).fetchone()
            assert row is not None
            search_path, timeout, tenant, temp_exists, prepared = row
            # psycopg forgot its prepared statement along with the server.
            assert conn.execute(statement, (1,), prepare=True).fetchone() == (2,)
            conn.commit()
            (lock_free,) = pg.admin.execute(
                "SELECT pg_try_advisory_lock(%s)", (lock_key,)
            ).fetchone() or (None,)
            if lock_free:
                pg.admin.execute("SELECT pg_advisory_unlock(%s)", (lock_key,))
    if cleared:
        assert (search_path, timeout) == defaults
        assert tenant in ("", None)
        assert not temp_exists
        assert prepared == 0
        assert lock_free
    else:  # what a rollback leaves: everything done outside the transaction
        assert (search_path, timeout, tenant) == ("pg_catalog", "1234s", "42")
        assert temp_exists
        assert prepared == 1
        assert not lock_free


@pytest.mark.parametrize(
    ("reset", "check"),
    [(psycopg_reset, None), (psycopg_discard_all, None), (None, psycopg_check)],
    ids=["psycopg_reset", "psycopg_discard_all", "psycopg_check"],
)
def test_a_result_left_half_streamed_is_discarded_not_waited_on(
    pg: PostgreSQL,
    reset: Optional[Callable[[Any], None]],
    check: Optional[Callable[[Any], None]],
) -> None:
    # The suspended generator holds psycopg's connection lock: a rollback or a
    # ping would wait for it forever, in the thread that holds it.
    streams: list[Iterator[Any]] = []
    sessions: list[int] = []

    def two_users() -> None:
        with pool.get() as conn:
            sessions.append(pg.session_id(conn))
            stream = conn.cursor().stream("SELECT generate_series(1, 100000)")
            next(stream)
            streams.append(stream)  # still suspended when the block ends
            assert conn.info.transaction_status == ACTIVE
        with pool.get() as conn:
            sessions.append(pg.session_id(conn))
            conn.execute("SELECT 1")

    # check_after=0: within the skip window only a reset or a broken rule
    # sees the busy connection (the recipes' docs say so).
    with Pool(pg.factory(), max_size=1, reset=reset, check=check, check_after=0) as pool:
        user = threading.Thread(target=two_users, daemon=True)
        user.start()
        user.join(15)
        assert not user.is_alive(), "the pool waited on a busy connection"
        assert len(sessions) == 2 and sessions[0] != sessions[1]
        assert pool.stats().discarded == 1
    with pytest.raises(psycopg.OperationalError):
        next(streams[0])  # the pool closed that connection


def test_discard_all_restores_autocommit_left_on(pg: PostgreSQL) -> None:
    with Pool(pg.factory(autocommit=True), max_size=1, reset=psycopg_discard_all) as pool:
        with pool.get() as conn:
            conn.execute("SET search_path TO pg_catalog")
        with pool.get() as conn:
            assert conn.autocommit is True
            assert conn.execute("SHOW search_path").fetchone() != ("pg_catalog",)


@pytest.mark.parametrize(("broken", "kept"), [(None, False), (psycopg_broken, True)])
def test_psycopg_broken_keeps_a_connection_after_a_statement_timeout(
    pg: PostgreSQL, broken: Optional[Callable[[Any, Optional[BaseException]], bool]], kept: bool
) -> None:
    # QueryCanceled is an OperationalError: the default rule discards the
    # connection, psycopg_broken sees it is fine and lets reset roll back.
    with Pool(pg.factory(), max_size=1, reset=psycopg_reset, broken=broken) as pool:
        with pytest.raises(psycopg.errors.QueryCanceled), pool.get() as conn:
            first = pg.session_id(conn)
            conn.execute("SET LOCAL statement_timeout = '50ms'")
            conn.execute("SELECT pg_sleep(5)")
        with pool.get() as conn:
            assert (pg.session_id(conn) == first) is kept
            assert conn.info.transaction_status == IDLE
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert pool.stats().discarded == (0 if kept else 1)


def test_psycopg_broken_discards_a_lost_connection(pg: PostgreSQL) -> None:
    with Pool(pg.factory(), max_size=1, reset=psycopg_reset, broken=psycopg_broken) as pool:
        with pool.get() as conn:
            first = pg.session_id(conn)
        pg.kill(first)
        with pytest.raises(psycopg.OperationalError), pool.get() as conn:
            conn.execute("SELECT 1")
        assert psycopg_broken(conn, None)
        with pool.get() as conn:
            assert pg.session_id(conn) != first
        assert pool.stats().discarded == 1


@pytest.mark.parametrize("broken", [None, psycopg_broken])
def test_a_write_refused_as_read_only_discards_the_connection(
    pg: PostgreSQL, table: str, broken: Optional[Callable[[Any, Optional[BaseException]], bool]]
) -> None:
    # A standby (or a demoted primary) refuses writes with SQLSTATE 25006,
    # which psycopg raises as an InternalError: neither rule saw it, and a pool
    # on a server now read-only kept lending it. A read-only transaction
    # gives the same SQLSTATE on the loopback server, which is not a standby.
    with Pool(pg.factory(), max_size=1, reset=psycopg_reset, broken=broken) as pool:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), pool.get() as conn:
            first = pg.session_id(conn)
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"INSERT INTO {table} VALUES (1)")
        assert pool.is_broken(conn, psycopg.errors.ReadOnlySqlTransaction())
        with pool.get() as conn:
            assert pg.session_id(conn) != first
        assert pool.stats().discarded == 1
    assert count(pg, table) == 0
