"""The sample app through PgBouncer in transaction mode (deploy/pgbouncer.ini,
deploy/sample_app-pgbouncer.conf, poodle_cherrypy.drivers.psycopg_pgbouncer_connect):
3 gunicorn workers x max_size 8 = 24 client connections onto a PgBouncer pool
of 4 server connections, under 64 clients. No 5xx, every acknowledged write
is in the database afterwards, and PostgreSQL never sees more than 4 sessions.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from deployment import (
    Load,
    PgBouncer,
    backends,
    dbname,
    free_port,
    gunicorn,
    pgbouncer_app_config,
    seed,
    workers_serving,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.deploy]

LOAD_SECONDS = 10.0


@pytest.mark.parametrize("recipe", [True, False], ids=["recipe", "psycopg-defaults"])
def test_prepared_statements_are_off_through_pgbouncer(
    recipe: bool, database: str, tmp_path: Path
) -> None:
    """psycopg prepares a query at its 6th run; its 7th run then names that
    statement, and here lands on the other of PgBouncer's two server sessions
    (another client holds, in a transaction, the one it was prepared on)."""
    import psycopg

    from poodle_cherrypy.drivers import psycopg_pgbouncer_connect

    bouncer = PgBouncer(tmp_path, database, pool_size=2)
    url = f"postgresql://postgres@127.0.0.1:{bouncer.port}/{dbname(database)}"
    try:
        other = psycopg.connect(url, autocommit=True)
        third = psycopg.connect(url, autocommit=True)
        conn = (psycopg_pgbouncer_connect(url, autocommit=True) if recipe
                else psycopg.connect(url, autocommit=True))
        try:
            with other.transaction(), third.transaction():  # two server sessions exist
                other.execute("SELECT 1")
                third.execute("SELECT 2")
            for n in range(6):
                assert conn.execute("SELECT %s::int", (n,)).fetchone() == (n,)
            # PgBouncer lends the session released last: the one conn just used
            with other.transaction():
                other.execute("SELECT 3")
                if recipe:
                    assert conn.execute("SELECT %s::int", (6,)).fetchone() == (6,)
                else:
                    with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                        conn.execute("SELECT %s::int", (6,))
        finally:
            for each in (conn, other, third):
                each.close()
    finally:
        bouncer.stop()


def test_three_workers_through_a_pgbouncer_pool_of_four(
    database: str, postgres_dsn: str, tmp_path: Path
) -> None:
    import psycopg

    bouncer = PgBouncer(tmp_path, database, pool_size=4)
    port = free_port()
    config = pgbouncer_app_config(tmp_path, bouncer.port, dbname(database))
    server = gunicorn(tmp_path, port, None, workers=3, threads=8, config=config)
    most = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            most[0] = max(most[0], len(backends(postgres_dsn, dbname(database))))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        workers_serving(server.pid, port, 3, log=server.log)
        sampler.start()
        load = Load(port, clients=64, doc_ids=seed(port)).start()
        try:
            time.sleep(LOAD_SECONDS)
        finally:
            load.stop()
        sampling.set()
        sampler.join(10)
        assert load.count() > 100
        bad = load.failures()
        assert not bad, (len(bad), bad[:5], server.text()[-3000:])
        assert load.written
        with psycopg.connect(database) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM docs")}
        assert set(load.written) <= stored
        # the app's 24 client connections were all in use at some point, yet
        # PostgreSQL saw at most PgBouncer's pool
        assert 1 <= most[0] <= 4, most[0]
        # not a prepared statement in sight: "does not exist" would be a 500
        assert "prepared statement" not in server.text()
    finally:
        sampling.set()
        server.stop()
        bouncer.stop()
