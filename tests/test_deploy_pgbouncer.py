"""The sample app through PgBouncer in transaction mode (deploy/pgbouncer.ini,
deploy/sample_app-pgbouncer.conf, poodle_cherrypy.drivers.psycopg_pgbouncer_connect):
3 gunicorn workers x max_size 8 = 24 client connections onto a PgBouncer pool
of 4 server connections, under 64 clients. No 5xx, every acknowledged write
is in the database afterwards, and PostgreSQL never sees more than 4 sessions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
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
    throwaway_database,
    workers_serving,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.deploy]

LOAD_SECONDS = 10.0


@pytest.fixture
def database(postgres_dsn: str) -> Iterator[str]:
    """A throwaway database's DSN."""
    with throwaway_database(postgres_dsn) as dsn:
        yield dsn


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
