"""tools.poodle on PostgreSQL: a connection lost before any write is a 503, after one a 500.

The rule (docs/restarts.rst): with a connection that counts its possible
writes (``drivers.psycopg_connect``), a request whose connection is lost
while the count has not moved since checkout answers 503 with
``Retry-After`` (nothing was changed: a retry is safe); once a write was
sent, or when the commit fails, the outcome is unknown and it answers 500.

Each handler kills its own session from a separate admin connection (only
sessions these tests opened), at the point the test is about.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import cherrypy
import pytest
import webtest

from poodle_cherrypy import PoodlePlugin, Pool, drivers

pytestmark = pytest.mark.services


@pytest.fixture
def admin(postgres_dsn: str) -> Iterator[Any]:
    import psycopg

    conn = psycopg.connect(postgres_dsn, autocommit=True)
    yield conn
    conn.close()


class Handlers:
    """Each page runs some statements, has its own session killed, runs one more."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.table = f"poodle_lost_{uuid.uuid4().hex[:12]}"

    def kill_my_session(self) -> None:
        pid = cherrypy.request.conn.info.backend_pid
        self.admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))

    @cherrypy.expose
    def killed_before_the_first_statement(self) -> str:
        self.kill_my_session()
        cherrypy.request.conn.execute("SELECT 1")
        return "unreachable"

    @cherrypy.expose
    def killed_after_reads(self) -> str:
        conn = cherrypy.request.conn
        conn.execute("BEGIN")
        conn.execute("SELECT 1")
        conn.execute("  select 2")
        self.kill_my_session()
        conn.execute("SELECT 3")
        return "unreachable"

    @cherrypy.expose
    def killed_after_a_write(self) -> str:
        conn = cherrypy.request.conn
        conn.execute(f"CREATE TEMP TABLE {self.table} (n int)")
        self.kill_my_session()
        conn.execute("SELECT 1")
        return "unreachable"

    @cherrypy.expose
    def killed_before_the_commit(self) -> str:
        cherrypy.request.conn.execute("BEGIN")  # autocommit: the commit is a COMMIT then
        cherrypy.request.conn.execute("SELECT 1")
        self.kill_my_session()
        return "the commit will fail"

    @cherrypy.expose
    def own_oserror(self) -> str:
        # The handler's own bug, on a healthy connection: an OSError that the
        # default broken rule discards the connection for, but no loss.
        cherrypy.request.conn.execute("SELECT 1")
        with open(f"/nonexistent/{self.table}"):
            return "unreachable"

    @cherrypy.expose
    def fine(self) -> str:
        cherrypy.request.conn.execute("SELECT 1")
        return "ok"


@pytest.fixture
def app(cp_engine: Any, postgres_dsn: str, admin: Any) -> Iterator[webtest.TestApp]:
    pool: Pool[Any] = Pool(
        drivers.psycopg_connect, (postgres_dsn,),
        {"autocommit": True, "application_name": "poodle-test-lost"},
        max_size=2, reset=drivers.psycopg_reset,
    )
    PoodlePlugin(cherrypy.engine, {"default": pool}).subscribe()
    handlers = Handlers(admin)
    app = cherrypy.tree.mount(handlers, "/", {
        "/": {"tools.poodle.on": True, "tools.poodle.retry_after": 3},
        "/killed_before_the_commit": {"tools.poodle.transaction": True},
    })
    cherrypy.engine.start()
    yield webtest.TestApp(app)
    assert pool.stats().in_use == 0


@pytest.mark.parametrize("path", ["killed_before_the_first_statement", "killed_after_reads"])
def test_lost_before_any_write_is_503_with_retry_after(app: webtest.TestApp, path: str) -> None:
    response = app.get(f"/{path}", status=503)
    assert response.headers["Retry-After"] == "3"
    assert app.get("/fine").text == "ok"  # the dead connection was not reused


@pytest.mark.parametrize("path", ["killed_after_a_write", "killed_before_the_commit"])
def test_lost_after_a_write_or_at_the_commit_is_500(app: webtest.TestApp, path: str) -> None:
    response = app.get(f"/{path}", status=500)
    assert "Retry-After" not in response.headers
    assert app.get("/fine").text == "ok"


def test_a_handler_oserror_on_a_live_connection_is_500_not_503(app: webtest.TestApp) -> None:
    # Nothing was lost: a 503 with Retry-After would pass a server bug off
    # as a passing outage, to be retried.
    response = app.get("/own_oserror", status=500)
    assert "Retry-After" not in response.headers
    assert app.get("/fine").text == "ok"


def test_a_connection_that_does_not_count_gets_500(
    cp_engine: Any, postgres_dsn: str, admin: Any
) -> None:
    import psycopg

    pool: Pool[Any] = Pool(psycopg.connect, (postgres_dsn,), {"autocommit": True}, max_size=1)
    PoodlePlugin(cherrypy.engine, {"default": pool}).subscribe()
    app = cherrypy.tree.mount(Handlers(admin), "/", {"/": {"tools.poodle.on": True}})
    cherrypy.engine.start()
    webtest.TestApp(app).get("/killed_before_the_first_statement", status=500)


def test_harmless_statements_are_not_counted(postgres_dsn: str) -> None:
    conn = drivers.psycopg_connect(postgres_dsn, autocommit=True)
    try:
        for query in ("SELECT 1", " select 1", "BEGIN", "SHOW search_path", "SET x.y = 1",
                      "VALUES (1)", "START TRANSACTION", "ROLLBACK"):
            conn.execute(query)
        assert conn.poodle_writes == 1  # the ROLLBACK
        conn.execute("CREATE TEMP TABLE t (n int)")
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO t VALUES (%s)", [(1,), (2,)])
            with cursor.copy("COPY t FROM STDIN") as copy:
                copy.write_row((3,))
            list(cursor.stream("SELECT * FROM t"))
        assert conn.poodle_writes == 4
    finally:
        conn.close()
