"""Throwaway servers that a test may stop, kill and restart: never the machine's own.

Each one lives in a fresh temporary directory, listens on 127.0.0.1 and a
free port (its unix socket, if any, in that directory), and is removed by
:meth:`Throwaway.remove`. The binaries are Debian's:

- :class:`ThrowawayPostgres`: ``initdb`` and ``pg_ctl`` from
  ``/usr/lib/postgresql/<version>/bin``, run as the ``postgres`` user (they
  refuse root), trust authentication, no fsync (a killed server loses nothing
  the OS has: only a machine crash would);
- :class:`ThrowawayRedis`: ``redis-server`` with no persistence;
- :class:`ThrowawayMariaDB`: ``mariadb-install-db`` into its own data
  directory, then ``mariadbd`` as the ``mysql`` user.

``stop(mode)`` takes ``"fast"`` (a clean shutdown: PostgreSQL's ``-m fast``,
SIGTERM for the others) or ``"immediate"`` (PostgreSQL's ``-m immediate``,
SIGKILL for the others); ``start()`` returns once the server accepts
connections, and returns that moment (``time.monotonic()``).

Replication (issue 19): ``ThrowawayPostgres(primary=other)`` is a streaming
standby of ``other`` (``pg_basebackup -R``, so it starts in recovery and
follows the primary), with ``promote()`` (``pg_ctl promote``);
:func:`postgres_pair` starts a primary and its standby, waits until the
standby streams (synchronously, if asked) and removes both after.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

#: How long a server may take to start or stop on a loaded 2-core machine.
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _as_user(user: Optional[str], argv: list[str]) -> list[str]:
    if user is None or os.geteuid() != 0:
        return argv
    return ["runuser", "-u", user, "--", *argv]


class Throwaway:
    """A server of our own in a temporary directory."""

    #: The system user that runs it when the tests run as root.
    user: Optional[str] = None

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"poodle-{type(self).__name__.lower()}-"))
        if self.user is not None and os.geteuid() == 0:
            shutil.chown(self.dir, self.user, self.user)
        self.port = free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def run(self, argv: list[str]) -> None:
        """Run a set-up command as the server's user; fail with its output."""
        result = subprocess.run(
            _as_user(self.user, argv), capture_output=True, timeout=START_TIMEOUT, check=False
        )
        if result.returncode:
            raise RuntimeError(
                f"{argv[0]} failed ({result.returncode}): "
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
            )

    def ready(self) -> bool:
        """Whether the server answers a client now (a connect and a trivial command)."""
        return accepts(self.port)

    def wait_accepting(self) -> float:
        """Poll (every 5 ms) until the server answers a client; the moment it did."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{type(self).__name__} exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start on port {self.port}")
            time.sleep(0.005)
        return time.monotonic()

    def start(self) -> float:
        raise NotImplementedError

    def stop(self, mode: str = "fast") -> None:
        """Stop the server process (``"fast"``: SIGTERM, ``"immediate"``: SIGKILL)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM if mode == "fast" else signal.SIGKILL)
        self.proc.wait(START_TIMEOUT)
        self.proc = None

    def remove(self) -> None:
        """Stop it (immediately) and delete its directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class ThrowawayPostgres(Throwaway):
    """A PostgreSQL cluster of our own; ``dsn`` reaches its ``postgres`` database.

    With ``primary``, a streaming standby of that (running) cluster:
    ``pg_basebackup -R`` copies it and writes ``primary_conninfo`` and
    ``standby.signal``, so it starts in recovery (read-only, hot standby).
    ``settings`` are ``-c name=value`` options added at every start (a
    test may change them before a restart).
    """

    user = "postgres"

    def __init__(
        self,
        primary: Optional[ThrowawayPostgres] = None,
        settings: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__()
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not versions:
            raise RuntimeError("no /usr/lib/postgresql/<version>/bin/pg_ctl")
        self.bin = Path(versions[-1]).parent
        self.data = self.dir / "data"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.settings = dict(settings or {})
        if primary is None:
            # initdb's pg_hba.conf lets 127.0.0.1 replicate too (with -A trust).
            self.run([
                str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                "-A", "trust", "--no-sync", "--no-instructions",
            ])
        else:
            self.run([
                str(self.bin / "pg_basebackup"), "-D", str(self.data), "-R",
                "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                "-X", "stream", "-c", "fast", "--no-sync",
            ])

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _ctl(self, *args: str) -> None:
        self.run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-s", *args])

    def start(self) -> float:
        """Start the cluster (returns when the port accepts, not when pg_ctl says so)."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
            "-c fsync=off -c full_page_writes=off "
            "-c max_connections=100 -c shared_buffers=16MB"
        )
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        self._ctl("-l", str(self.dir / "log"), "-o", options, "-W", "start")
        return self.wait_accepting()

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` or ``-m immediate``, waiting for it to end."""
        if (self.data / "postmaster.pid").exists():
            self._ctl("-m", mode, "-w", "-t", str(int(START_TIMEOUT)), "stop")

    def promote(self) -> float:
        """``pg_ctl promote -w``: a standby becomes a primary (read-write);
        returns the moment pg_ctl said it is done."""
        self._ctl("-w", "-t", str(int(START_TIMEOUT)), "promote")
        return time.monotonic()

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """The rows of ``sql``, run in autocommit on a connection of its own."""
        import psycopg

        with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
            return conn.execute(sql).fetchall()

    def in_recovery(self) -> bool:
        """``pg_is_in_recovery()``: whether it is a standby (read-only) now."""
        return bool(self.query("SELECT pg_is_in_recovery()")[0][0])

    def replicas(self) -> list[tuple[str, str]]:
        """(state, sync_state) of each standby connected to this primary."""
        return [(str(state), str(sync)) for state, sync in
                self.query("SELECT state, sync_state FROM pg_stat_replication")]

    def log(self) -> str:
        """The server's log so far."""
        try:
            return (self.dir / "log").read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def postgres_pair(
    synchronous: bool = False,
) -> Iterator[tuple[ThrowawayPostgres, ThrowawayPostgres]]:
    """A throwaway primary and its streaming standby, both started; removed after.

    ``synchronous``: the primary has ``synchronous_standby_names = '*'`` (and
    the default ``synchronous_commit = on``), so a commit returns only once
    the standby has flushed it. Returns once the standby is in recovery and
    streams (as ``sync``, if asked), within :data:`START_TIMEOUT`.
    """
    primary = ThrowawayPostgres(
        settings={"synchronous_standby_names": "'*'"} if synchronous else None
    )
    standby: Optional[ThrowawayPostgres] = None
    try:
        primary.start()
        standby = ThrowawayPostgres(primary=primary)
        standby.start()
        want = "sync" if synchronous else "async"
        deadline = time.monotonic() + START_TIMEOUT
        while not (standby.in_recovery() and ("streaming", want) in primary.replicas()):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the standby on {standby.port} does not stream ({want}) from the primary "
                    f"on {primary.port}: {primary.replicas()}\n{standby.log()[-3000:]}"
                )
            time.sleep(0.05)
        yield primary, standby
    finally:
        try:
            if standby is not None:
                standby.remove()
        finally:
            primary.remove()


class ThrowawayRedis(Throwaway):
    """A redis-server of our own; ``url`` reaches database 0. No persistence,
    unless ``persist``: then an append-only file, fsynced before every reply,
    so that a restart keeps every acknowledged write. ``options`` are added
    to its command line (``["--key-load-delay", "5000"]``)."""

    def __init__(self, persist: bool = False, options: Sequence[str] = ()) -> None:
        super().__init__()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.persist = persist
        self.options = list(options)

    def ready(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()

    def start(self, wait: bool = True) -> float:
        """Start it; return once it answers ``PING`` (with ``wait=False``, once it
        accepts TCP connections: it may still be loading its dataset)."""
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--dir", str(self.dir),
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.persist
                  else ["--appendonly", "no"]),
                "--logfile", str(self.dir / "log"),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if wait:
            return self.wait_accepting()
        deadline = time.monotonic() + START_TIMEOUT
        while not accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not listen on port {self.port}")
            time.sleep(0.005)
        return time.monotonic()


class ThrowawayMariaDB(Throwaway):
    """A MariaDB of our own (root without a password); ``params`` are PyMySQL's."""

    user = "mysql"

    def __init__(self) -> None:
        super().__init__()
        self.data = self.dir / "data"
        self.params = {"host": "127.0.0.1", "port": self.port, "user": "root", "password": ""}
        self.run([
            "mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
            "--auth-root-authentication-method=normal", "--skip-test-db",
            "--skip-name-resolve",
        ])

    def ready(self) -> bool:
        import pymysql

        try:
            pymysql.connect(**self.params, connect_timeout=2, read_timeout=2).close()
        except pymysql.err.MySQLError:
            return False
        return True

    def start(self) -> float:
        # As root, mariadbd switches to --user itself: the process we signal
        # is the server's own (runuser would not pass on a SIGKILL).
        user = [f"--user={self.user}"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [
                shutil.which("mariadbd") or "/usr/sbin/mariadbd", "--no-defaults", *user,
                f"--datadir={self.data}",
                f"--port={self.port}", "--bind-address=127.0.0.1",
                f"--socket={self.dir / 'sock'}", f"--pid-file={self.dir / 'pid'}",
                "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
                "--innodb-flush-log-at-trx-commit=2", "--max-connections=100",
                f"--log-error={self.dir / 'log'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.wait_accepting()
