"""The sample app daemonized by ``cherryd -d -p <pidfile>`` (deploy/cherryd.conf,
``-i sample_app.daemon``), on PostgreSQL in a throwaway database.

The daemon, not the process that launched it, opens the connections (the
Daemonizer forks before the pool opens); SIGUSR1 under load recycles them all
and loses no request; a daemon killed with SIGKILL leaves a stale PID file
and no session, and a new ``cherryd`` takes over (cherryd has no master to
respawn it: that is the init system's job); SIGTERM ends it cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from deployment import (
    BIN,
    ROOT,
    Load,
    Process,
    app_env,
    backends,
    dbname,
    free_port,
    rewrite,
    seed,
    socket_holders,
    status,
    url_of,
    wait_for,
)

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.deploy]


def cherryd(tmp: Path, port: int, database: str, name: str) -> tuple[Process, Path, Path]:
    """Launch ``cherryd -d``; (the launcher, the PID file, the error log)."""
    conf = tmp / "cherryd.conf"
    error_log = tmp / "error.log"
    conf.write_text(rewrite(ROOT / "deploy" / "cherryd.conf", {
        "server.socket_port": str(port),
        "log.error_file": repr(str(error_log)),
    }))
    pidfile = tmp / "cherryd.pid"
    launcher = Process(name, [
        str(BIN / "cherryd"), "-d", "-p", str(pidfile), "-c", str(conf),
        "-i", "sample_app.daemon",
    ], tmp, app_env(url_of(database), pool_size=8))
    return launcher, pidfile, error_log


def daemon_pid(pidfile: Path, port: int, log: Path, other_than: int = 0) -> int:
    def serving() -> int:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            if pid != other_than and status(port)["pid"] == pid:
                return pid
        return 0

    pid: int = wait_for(serving, 60, "the daemon serving", log)
    return pid


def sessions(admin: str, dsn: str) -> list[tuple[int, int, int]]:
    """(backend pid, opener pid, client port) of the app's sessions."""
    return [
        (row["pid"], int(row["application_name"].rsplit(" ", 1)[1]), row["client_port"])
        for row in backends(admin, dbname(dsn))
        if row["application_name"].startswith("sample_app pid ")
    ]


def test_cherryd_daemon_pidfile_graceful_kill_and_stop(
    database: str, postgres_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    launcher, pidfile, error_log = cherryd(tmp_path, port, database, "cherryd")
    pids = []
    try:
        assert launcher.proc.wait(60) == 0, launcher.text()  # the Daemonizer's parent exits
        pid = daemon_pid(pidfile, port, error_log)
        pids.append(pid)
        assert pid != launcher.pid
        load = Load(port, clients=8, doc_ids=seed(port)).start()
        try:
            time.sleep(1)
            found = sessions(postgres_dsn, database)
            assert found and {opener for _, opener, _ in found} == {pid}
            for _, _, client_port in found:
                assert socket_holders(client_port, 5432, [pid, launcher.pid]) == [pid]

            # SIGUSR1: graceful; the pool's connections are all replaced
            old = {backend for backend, _, _ in found}
            graceful_at = time.monotonic()
            os.kill(pid, signal.SIGUSR1)
            wait_for(lambda: not old & {b for b, _, _ in sessions(postgres_dsn, database)}, 30,
                     "the old sessions to end after SIGUSR1", error_log)
            time.sleep(0.5)
            assert "recycled pool 'default'" in error_log.read_text()
            assert not load.failures(graceful_at), load.failures(graceful_at)[:5]
            assert load.count(graceful_at) > 0

            # SIGKILL: its sessions end with it; a new cherryd takes over
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not sessions(postgres_dsn, database), 30,
                     "the killed daemon's sessions to end")
            assert int(pidfile.read_text()) == pid  # stale
            second, _, _ = cherryd(tmp_path, port, database, "cherryd2")
            assert second.proc.wait(60) == 0, second.text()
            pid = daemon_pid(pidfile, port, error_log, other_than=pid)
            pids.append(pid)
            served_at = time.monotonic()
            time.sleep(1)
        finally:
            load.stop()
        assert all(kind == "error" for _, kind, _ in load.failures(killed_at))
        assert not load.failures(served_at + 0.5), load.failures(served_at + 0.5)[:5]
        assert {opener for _, opener, _ in sessions(postgres_dsn, database)} <= {pid}

        # SIGTERM: a clean exit, the PID file removed, no session left
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "the daemon to exit", error_log)
        assert not pidfile.exists()
        assert not sessions(postgres_dsn, database)
        assert "closed pool 'default'" in error_log.read_text()
    finally:
        for each in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        launcher.stop()
