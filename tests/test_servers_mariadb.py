"""MariaDB with PyMySQL: what one user leaves on a connection, and what the
next user of that same connection (same connection id) sees.

``pymysql_reset`` (ROLLBACK) promises a clean transaction only: the tests show
the rest of the session surviving it. ``pymysql_reset_session``
(COM_RESET_CONNECTION) promises a clean session with PyMySQL's own connect-time
set-up redone. Each test has a control that shows what is left without it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest
from servers import MariaDB

from poodle_cherrypy import Pool
from poodle_cherrypy.drivers import pymysql_reset, pymysql_reset_session

with contextlib.suppress(ImportError):  # mysql_params skips (or fails) each test, saying why
    import pymysql

pytestmark = pytest.mark.services


@pytest.fixture
def maria(mysql_params: dict[str, Any]) -> Iterator[MariaDB]:
    server = MariaDB(mysql_params)
    yield server
    server.close()


@pytest.fixture
def table(maria: MariaDB) -> Iterator[str]:
    name = f"poodle_{uuid.uuid4().hex[:12]}"
    maria.query(f"CREATE TABLE {name} (n int) ENGINE=InnoDB")
    yield name
    maria.query(f"DROP TABLE IF EXISTS {name}")


def one(conn: Any, sql: str, *args: Any) -> Any:
    """The first column of the first row."""
    with conn.cursor() as cursor:
        cursor.execute(sql, args or None)
        return cursor.fetchone()[0]


@pytest.mark.parametrize("reset", [pymysql_reset, pymysql_reset_session, None])
def test_next_user_sees_no_uncommitted_write(
    maria: MariaDB, table: str, reset: Optional[Callable[[Any], None]]
) -> None:
    with Pool(maria.factory(), max_size=1, reset=reset) as pool:
        with pool.get() as conn:
            first = maria.session_id(conn)
            one(conn, f"SELECT count(*) FROM {table}")
            with conn.cursor() as cursor:
                cursor.execute(f"INSERT INTO {table} VALUES (1)")  # never committed
        with pool.get() as conn:
            assert maria.session_id(conn) == first  # the same connection, reused
            # Without a reset the next user is inside the first one's transaction.
            assert one(conn, f"SELECT count(*) FROM {table}") == (1 if reset is None else 0)
            conn.rollback()
        assert pool.stats().discarded == 0
    assert maria.query(f"SELECT count(*) FROM {table}") == [(0,)]


@pytest.mark.parametrize(
    ("reset", "cleared"), [(pymysql_reset_session, True), (pymysql_reset, False)]
)
def test_reset_session_clears_session_state_rollback_does_not(
    maria: MariaDB, reset: Callable[[Any], None], cleared: bool
) -> None:
    temp = f"poodle_temp_{uuid.uuid4().hex[:12]}"
    lock = f"poodle-{uuid.uuid4().hex}"
    factory = maria.factory(init_command="SET @init = 7", sql_mode="ANSI_QUOTES")
    (global_max_len,) = maria.query("SELECT @@global.group_concat_max_len")[0]
    with Pool(factory, max_size=1, reset=reset) as pool:
        with pool.get() as conn:
            first = maria.session_id(conn)
            with conn.cursor() as cursor:
                cursor.execute("SET @user_var = 42, @init = NULL")
                cursor.execute("SET SESSION group_concat_max_len = 1234, sql_mode = ''")
                cursor.execute(f"CREATE TEMPORARY TABLE {temp} (n int)")
                cursor.execute("SELECT GET_LOCK(%s, 0)", (lock,))
                cursor.execute("SET NAMES latin1")
                cursor.execute("SET autocommit = 1")
                cursor.execute("USE information_schema")
        with pool.get() as conn:
            assert maria.session_id(conn) == first
            state = {
                "@user_var": one(conn, "SELECT @user_var"),
                "@init": one(conn, "SELECT @init"),
                "group_concat_max_len": one(conn, "SELECT @@session.group_concat_max_len"),
                "sql_mode": one(conn, "SELECT @@session.sql_mode"),
                "charset": one(conn, "SELECT @@character_set_client"),
                "autocommit": one(conn, "SELECT @@autocommit"),
                "database": one(conn, "SELECT DATABASE()"),
                "lock free": one(conn, "SELECT IS_FREE_LOCK(%s)", lock),
            }
            try:
                one(conn, f"SELECT count(*) FROM test.{temp}")
                state["temp table"] = True
            except pymysql.err.ProgrammingError:
                state["temp table"] = False
    if cleared:  # cleared, and PyMySQL's connect-time set-up done again
        assert state == {
            "@user_var": None,
            "@init": 7,
            "group_concat_max_len": global_max_len,
            "sql_mode": "ANSI_QUOTES",
            "charset": "utf8mb4",
            "autocommit": 0,
            "database": maria.params["database"],
            "lock free": 1,
            "temp table": False,
        }
    else:  # a rollback leaves all of it
        assert state == {
            "@user_var": 42,
            "@init": None,
            "group_concat_max_len": 1234,
            "sql_mode": "",
            "charset": "latin1",
            "autocommit": 1,
            "database": "information_schema",
            "lock free": 0,
            "temp table": True,
        }
