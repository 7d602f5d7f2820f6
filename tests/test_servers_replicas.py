"""Read replicas per request (issue 19): the sample app with two pools, its
writes on the primary and its reads on a streaming standby of our own
(tests/throwaway.py, ``postgres_pair``). Never the machine's own server.

``tools.poodle.read_pool = "replica"`` on ``/docs``: a GET gets a connection
of pool ``replica`` (``drivers.psycopg_replica_connect`` to the standby,
``target_session_attrs=standby``), a PUT one of ``default`` (the primary).
With the standby stopped, a GET falls back to the primary
(``tools.poodle.read_fallback``, the default) or, with it False, answers 503
with ``Retry-After``. Real HTTP, real servers; the figures are printed.
"""

from __future__ import annotations

import glob
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require_module, unavailable
from throwaway import ThrowawayPostgres, postgres_pair

from poodle_cherrypy import drivers

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.restart]

POOL_SIZE = 4


@pytest.fixture(autouse=True)
def _binaries() -> None:
    require_module("psycopg")
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_basebackup"):
        unavailable("no /usr/lib/postgresql/<version>/bin/pg_basebackup for a throwaway standby")


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """One request on a connection of its own: status, headers, JSON body (or None)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return response.status, dict(response.getheaders()), parsed
    finally:
        conn.close()


@pytest.fixture
def pair() -> Iterator[tuple[ThrowawayPostgres, ThrowawayPostgres]]:
    with postgres_pair() as servers:
        yield servers


@pytest.fixture
def app(cp_server: str, pair: tuple[ThrowawayPostgres, ThrowawayPostgres]) -> Iterator[Any]:
    """The sample app on the pair: ``default`` on the primary, ``replica`` on the
    standby, GETs of ``/docs`` on ``replica``. Yields (base URL, the Application)."""
    import cherrypy

    from poodle_cherrypy import PoodlePlugin
    from sample_app import SampleApp, db

    primary, standby = pair
    pools = {
        "default": {
            "factory": drivers.psycopg_failover_connect,
            "args": (f"host=127.0.0.1 port={primary.port} user=postgres dbname=postgres",),
            "kwargs": {"autocommit": True},
            "max_size": POOL_SIZE, "timeout": 10.0, "reset": db.rollback,
            "check": drivers.psycopg_primary_check, "broken": drivers.psycopg_primary_broken,
        },
        "replica": {
            "factory": drivers.psycopg_replica_connect,
            "args": (
                f"host=127.0.0.1 port={standby.port} user=postgres dbname=postgres "
                "target_session_attrs=standby",
            ),
            "kwargs": {"autocommit": True},
            "max_size": POOL_SIZE, "timeout": 10.0, "reset": db.rollback,
            "check": drivers.psycopg_check, "broken": drivers.psycopg_broken,
        },
    }
    PoodlePlugin(cherrypy.engine, pools).subscribe()
    sample = SampleApp(cherrypy.engine)
    application = sample.mount(config={"/docs": {"tools.poodle.read_pool": "replica"}})
    sample.subscribe()
    cherrypy.engine.start()
    try:
        yield cp_server, application
    finally:
        cherrypy.engine.stop()
        sample.unsubscribe()


def checkouts(name: str) -> int:
    import cherrypy

    from poodle_cherrypy import get_pool

    return get_pool(name, cherrypy.engine).stats().checkouts


def read_until_found(base: str, path: str) -> tuple[int, float]:
    """GET ``path`` until it is found (the standby replays the write within
    milliseconds on loopback; at most 10 s): its status and how long it took."""
    start = time.monotonic()
    while True:
        status, _, _ = call(base, "GET", path)
        if status != 404 or time.monotonic() - start > 10:
            return status, time.monotonic() - start
        time.sleep(0.01)


def test_reads_go_to_the_standby_and_writes_to_the_primary(
    app: tuple[str, Any],
    pair: tuple[ThrowawayPostgres, ThrowawayPostgres],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import cherrypy

    from poodle_cherrypy import get_pool

    base, _ = app
    _, standby = pair
    with get_pool("replica", cherrypy.engine).get() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
    with get_pool("default", cherrypy.engine).get() as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    before = checkouts("default"), checkouts("replica")
    status, _, _ = call(base, "PUT", "/docs/r1", {"title": "on the primary"})
    assert status == 201
    after_write = checkouts("default"), checkouts("replica")
    assert after_write == (before[0] + 1, before[1])  # the write: the primary's pool only
    status, lag = read_until_found(base, "/docs/r1")
    assert status == 200
    reads = checkouts("replica") - after_write[1]
    assert reads >= 1 and checkouts("default") == after_write[0]  # the reads: the standby's
    # The standby holds the row (replayed from the primary): what the GET read.
    import psycopg

    with psycopg.connect(standby.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM docs WHERE id = 'r1'").fetchone()[0] == 1
    with capsys.disabled():
        print(
            f"\n[replicas] PUT on the primary, then GET on the standby: found after "
            f"{lag * 1000:.0f} ms ({reads} GETs on pool 'replica', 0 on 'default')"
        )


def test_a_standby_down_falls_back_to_the_primary_or_answers_503(
    app: tuple[str, Any],
    pair: tuple[ThrowawayPostgres, ThrowawayPostgres],
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, application = app
    _, standby = pair
    assert call(base, "PUT", "/docs/r2", {"title": "kept"})[0] == 201
    assert read_until_found(base, "/docs/r2")[0] == 200
    standby.stop("fast")
    time.sleep(0.6)  # past check_after: the idle standby connections are checked first
    primary_before = checkouts("default")
    fallback = [call(base, "GET", "/docs/r2")[0] for _ in range(5)]
    served_by_primary = checkouts("default") - primary_before
    application.merge({"/docs": {"tools.poodle.read_fallback": False}})
    refused = [call(base, "GET", "/docs/r2") for _ in range(3)]
    with capsys.disabled():
        print(
            f"\n[replicas] the standby stopped: 5 GETs with read_fallback {fallback} "
            f"({served_by_primary} served by the primary's pool), 3 without it "
            f"{[status for status, _, _ in refused]}"
        )
    assert fallback == [200] * 5
    assert served_by_primary == 5
    assert [status for status, _, _ in refused] == [503] * 3
    assert all(headers.get("Retry-After", "").isdigit() for _, headers, _ in refused)
    assert call(base, "PUT", "/docs/r3", {"title": "still writable"})[0] == 201
