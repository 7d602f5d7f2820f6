"""The sample app under uWSGI (deploy/uwsgi.ini: 3 processes x 8 threads,
``enable-threads``), with and without ``lazy-apps``: real processes on
loopback, PostgreSQL in a throwaway database.

Each worker opens its own connections (every session's ``application_name``
names a live worker, and its socket is held by that worker alone); a worker
killed with SIGKILL under load is respawned and the new one serves; a graceful
reload (``touch-reload``) loses no request and leaves no session behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from deployment import (
    Load,
    app_sessions,
    assert_own_connections,
    free_port,
    only_sessions_of,
    pids_answering,
    seed,
    url_of,
    uwsgi,
    wait_for,
    workers_alive,
    workers_serving,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.deploy]

PROCESSES = 3


def replaced(master: int, gone: set[int]) -> list[int] | None:
    now = workers_alive(master)
    return now if len(now) == PROCESSES and not gone & set(now) else None


@pytest.mark.parametrize("lazy_apps", [False, True], ids=["master-imports", "lazy-apps"])
def test_uwsgi_workers_own_connections_respawn_and_reload(
    lazy_apps: bool, database: str, postgres_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    server, reload = uwsgi(tmp_path, port, url_of(database), processes=PROCESSES, threads=8,
                           lazy_apps=lazy_apps)
    try:
        workers = workers_serving(server.pid, port, PROCESSES, log=server.log)
        pids_answering(port, set(workers), log=server.log)
        assert all(opener != server.pid for _, opener, _ in app_sessions(postgres_dsn, database))
        load = Load(port, clients=16, doc_ids=seed(port)).start()
        try:
            time.sleep(2)
            assert_own_connections(postgres_dsn, database, server.pid, workers)
            assert not load.failures(), load.failures()[:5]

            victim = workers[0]
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            workers = wait_for(lambda: replaced(server.pid, {victim}), 30,
                               "a respawned worker", server.log)
            pids_answering(port, set(workers), log=server.log)
            settled = time.monotonic()
            time.sleep(1)
            failures = load.failures(killed_at)
            assert len(failures) <= load.clients, failures
            assert all(kind == "error" for _, kind, _ in failures), failures
            assert not load.failures(settled), load.failures(settled)
            wait_for(lambda: only_sessions_of(postgres_dsn, database, workers), 30,
                     "the killed worker's sessions to end", server.log)

            reload_at = time.monotonic()
            old = set(workers)
            reload.touch()
            workers = wait_for(lambda: replaced(server.pid, old), 60,
                               "new workers after touch-reload", server.log)
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
        server.stop()
    assert "closed pool 'default'" in server.text()
    assert "max_size" not in server.text()  # no sizing line: CherryPy's server is unused
    wait_for(lambda: not app_sessions(postgres_dsn, database), 30, "no session left")
