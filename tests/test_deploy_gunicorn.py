"""The sample app under gunicorn (gthread, 3 workers x 8 threads), with and
without ``--preload``: real processes on loopback, PostgreSQL in a throwaway
database.

Each worker opens its own connections: every server session's
``application_name`` names a live worker, and its socket is held by that
worker alone (read from /proc), never by the master nor by two processes. A
worker killed with SIGKILL under load is replaced and the replacement serves;
a graceful reload (HUP) loses no request and leaves no session behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from deployment import (
    Load,
    Process,
    app_sessions,
    assert_own_connections,
    free_port,
    gunicorn,
    only_sessions_of,
    pids_answering,
    seed,
    url_of,
    wait_for,
    workers_alive,
    workers_serving,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.deploy]

WORKERS = 3


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
def test_gunicorn_workers_own_connections_respawn_and_reload(
    preload: bool, database: str, postgres_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    server: Process = gunicorn(tmp_path, port, url_of(database), workers=WORKERS, threads=8,
                               preload=preload)
    try:
        workers = workers_serving(server.pid, port, WORKERS, log=server.log)
        pids_answering(port, set(workers), log=server.log)
        # the master opened nothing, even with --preload (it imported the app)
        assert all(opener != server.pid for _, opener, _ in app_sessions(postgres_dsn, database))
        load = Load(port, clients=16, doc_ids=seed(port)).start()
        try:
            time.sleep(2)
            assert_own_connections(postgres_dsn, database, server.pid, workers)
            assert not load.failures(), load.failures()[:5]

            # SIGKILL one worker under load: a new one replaces it and serves.
            victim = workers[0]
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            workers = wait_for(
                lambda: (lambda now: now if len(now) == WORKERS and victim not in now else None)(
                    workers_alive(server.pid)
                ),
                30, "a replacement worker", server.log,
            )
            pids_answering(port, set(workers), log=server.log)
            settled = time.monotonic()
            time.sleep(1)
            failures = load.failures(killed_at)
            # only requests in flight (or accepted) by the killed worker are lost
            assert len(failures) <= load.clients, failures
            assert all(kind == "error" for _, kind, _ in failures), failures
            assert not load.failures(settled), load.failures(settled)
            wait_for(lambda: only_sessions_of(postgres_dsn, database, workers), 30,
                     "the killed worker's sessions to end", server.log)

            # HUP: new workers, the old ones stop gracefully; nothing is lost.
            reload_at = time.monotonic()
            server.send(signal.SIGHUP)
            old = set(workers)
            workers = wait_for(
                lambda: (lambda now: now if len(now) == WORKERS and not (old & set(now))
                         else None)(workers_alive(server.pid)),
                60, "new workers after HUP", server.log,
            )
            pids_answering(port, set(workers), log=server.log)
            time.sleep(1)
        finally:
            load.stop()
        assert not load.failures(reload_at), load.failures(reload_at)[:5]
        assert load.count(reload_at) > 0
        wait_for(lambda: only_sessions_of(postgres_dsn, database, workers), 30,
                 "the old workers' sessions to end", server.log)
        assert_own_connections(postgres_dsn, database, server.pid, workers)
    finally:
        code = server.stop()
    assert code == 0, server.text()[-4000:]
    assert "closed pool 'default'" in server.text()
    assert "max_size" not in server.text()  # no sizing line: CherryPy's server is unused
    wait_for(lambda: not app_sessions(postgres_dsn, database), 30, "no session left")

