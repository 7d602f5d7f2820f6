"""Real process managers, PgBouncer and HAProxy on loopback, for the deployment tests.

Each runs as a subprocess on free ports in a temporary directory, its output
in a log file there (shown when a test fails), and is stopped by the test.
The database is a throwaway one in the PostgreSQL on loopback, made and
dropped by :func:`throwaway_database`: the main server's config is never
touched.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0  # a loaded 2-core machine imports slowly
STOP_TIMEOUT = 40.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Any, timeout: float, what: Any, log: Optional[Path] = None) -> Any:
    """Poll ``predicate`` every 50 ms until it returns something true; fail after
    ``timeout`` seconds, showing ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-6000:] if log and log.exists() else ""
            text = "\n".join(line for line in text.splitlines() if '"GET /' not in line)
            what = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{text}")
        time.sleep(0.05)


# -- PostgreSQL ---------------------------------------------------------------


@contextlib.contextmanager
def throwaway_database(admin_dsn: str) -> Iterator[str]:
    """A new database in the server of ``admin_dsn``; yields its DSN, drops it after."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"poodle_deploy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def backends(admin_dsn: str, database: str) -> list[dict[str, Any]]:
    """The sessions connected to ``database``: pid, application_name, client_port."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(admin_dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT pid, application_name, client_port FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()


def dbname(dsn: str) -> str:
    """The database name of ``dsn``."""
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn)["dbname"])


def url_of(dsn: str, port: Optional[int] = None) -> str:
    """``dsn`` as a postgresql:// URL (optionally to another port), for SAMPLE_APP_DATABASE."""
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(dsn)
    return (
        f"postgresql://{p.get('user', 'postgres')}@{p.get('host', '127.0.0.1')}:"
        f"{port or p.get('port', 5432)}/{p['dbname']}"
    )


def socket_holders(client_port: int, server_port: int, pids: list[int]) -> list[int]:
    """Which of ``pids`` hold the loopback TCP socket from ``client_port`` to
    ``server_port`` (read from /proc): a socket that crossed a fork is held by two."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                cols = line.split()
                local, remote, inode = cols[1], cols[2], cols[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == client_port
                    and int(remote.rsplit(":", 1)[1], 16) == server_port
                ):
                    inodes.add(f"socket:[{inode}]")
    holders = []
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        holders.append(pid)
                        break
    return holders


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(each) for each in text.split()]
    return []


def workers_alive(master: int) -> list[int]:
    """The children of ``master`` that are alive (not zombies)."""
    alive = []
    for pid in children(master):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def app_sessions(admin_dsn: str, dsn: str) -> list[tuple[int, int, int]]:
    """(backend pid, the pid in its application_name, client port) of the sample
    app's sessions in ``dsn``'s database."""
    rows = []
    for row in backends(admin_dsn, dbname(dsn)):
        name = row["application_name"]
        if name.startswith("sample_app pid "):
            rows.append((row["pid"], int(name.rsplit(" ", 1)[1]), row["client_port"]))
    return rows


def assert_own_connections(admin_dsn: str, dsn: str, master: int, workers: list[int]) -> None:
    """Every app session was opened by a live worker, and its socket is held by
    that worker only; more than one worker has sessions, and no two share one."""
    sessions = app_sessions(admin_dsn, dsn)
    assert sessions, "no sessions"
    by_worker: dict[int, set[int]] = {}
    for backend, opener, client_port in sessions:
        assert opener in workers, (opener, workers, master)
        assert socket_holders(client_port, 5432, [master, *workers]) == [opener]
        by_worker.setdefault(opener, set()).add(backend)
    assert len(by_worker) >= 2, by_worker
    seen: set[int] = set()
    for pids in by_worker.values():
        assert not (pids & seen)
        seen |= pids


def only_sessions_of(admin_dsn: str, dsn: str, workers: list[int]) -> bool:
    """Whether every app session belongs to one of ``workers``."""
    return all(opener in workers for _, opener, _ in app_sessions(admin_dsn, dsn))


# -- HTTP ----------------------------------------------------------------------


def request(
    port: int, method: str, path: str, body: Optional[bytes] = None, timeout: float = 30.0,
    host: str = "127.0.0.1",
) -> tuple[int, bytes]:
    """One request on a new connection: (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def status(port: int) -> dict[str, Any]:
    """``GET /status`` as JSON."""
    code, body = request(port, "GET", "/status")
    assert code == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


@dataclass
class Load:
    """Clients sending requests in threads until stopped: GETs of known documents
    and PUTs of new ones, one connection per request, every outcome recorded."""

    port: int
    clients: int = 16
    host: str = "127.0.0.1"
    doc_ids: list[str] = field(default_factory=list)
    results: list[tuple[float, str, Any]] = field(default_factory=list)  # (time, kind, what)
    written: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        """Start the clients."""
        for n in range(self.clients):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                if i % 4 == 0:
                    doc_id = f"c{n}-{i}-{uuid.uuid4().hex[:6]}"
                    code, body = request(
                        self.port, "PUT", f"/docs/{doc_id}", json.dumps({"n": i}).encode(),
                        host=self.host,
                    )
                    if code in (200, 201):
                        with self._lock:
                            self.written.append(doc_id)
                elif i % 16 == 1:
                    code, body = request(self.port, "GET", "/status", host=self.host)
                    if code == 200:
                        with self._lock:
                            self.pids.add(json.loads(body)["pid"])
                else:
                    doc_id = self.doc_ids[i % len(self.doc_ids)] if self.doc_ids else "none"
                    code, body = request(self.port, "GET", f"/docs/{doc_id}", host=self.host)
                # 200 (a read, /status, an update), 201 (a new document)
                ok = code in (200, 201) or (code == 404 and not self.doc_ids)
                self.results.append((time.monotonic(), "ok" if ok else "bad", code))
            except (OSError, http.client.HTTPException) as exc:
                self.results.append((time.monotonic(), "error", repr(exc)))

    def stop(self) -> Load:
        """Stop the clients, each after its current request."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self

    def failures(self, since: float = 0.0) -> list[tuple[float, str, Any]]:
        """Every request after ``since`` (a monotonic time) that was not answered well."""
        return [r for r in self.results if r[1] != "ok" and r[0] >= since]

    def count(self, since: float = 0.0) -> int:
        """How many requests ended after ``since``."""
        return sum(1 for r in self.results if r[0] >= since)


def seed(port: int, n: int = 20) -> list[str]:
    """PUT ``n`` documents; their ids."""
    ids = []
    for i in range(n):
        doc_id = f"seed-{i}"
        code, body = request(port, "PUT", f"/docs/{doc_id}", json.dumps({"i": i}).encode())
        assert code == 201, body
        ids.append(doc_id)
    return ids


# -- processes -----------------------------------------------------------------


class Process:
    """A subprocess whose output goes to ``<tmp>/<name>.log``."""

    def __init__(
        self, name: str, args: list[str], tmp: Path, env: Optional[dict[str, str]] = None,
        user: Optional[str] = None,
    ) -> None:
        self.log = tmp / f"{name}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLE_APP_")}
        environ.update(env or {})
        if user is not None:
            args = ["runuser", "-u", user, "--", *args]
        self._log_file = open(self.log, "ab")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            args, cwd=tmp, env=environ, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def text(self) -> str:
        """The log so far."""
        return self.log.read_text(errors="replace")

    def send(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """Send ``signum`` and wait; kill the whole group if it lingers. The exit status."""
        code: Optional[int] = None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                self._log_file.close()
                pytest.fail(f"{self.log.name}: still running {timeout} s after "
                            f"{signal.Signals(signum).name}\n{self.text()[-6000:]}")
        else:
            code = self.proc.returncode
        with contextlib.suppress(ProcessLookupError):  # anything left in its group
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log_file.close()
        return code


def app_env(database_url: Optional[str], pool_size: int = 8,
            config: Optional[Path] = None) -> dict[str, str]:
    """The sample app's environment for a WSGI server: a database URL and pool
    size, or a config file declaring the pool."""
    env = {"PYTHONPATH": str(ROOT)}
    if config is not None:
        env["SAMPLE_APP_CONFIG"] = str(config)
    else:
        assert database_url is not None
        env.update(SAMPLE_APP_DATABASE=database_url, SAMPLE_APP_POOL_SIZE=str(pool_size))
    return env


def gunicorn(
    tmp: Path, port: int, database_url: Optional[str], *, workers: int = 3, threads: int = 8,
    preload: bool = False, pool_size: int = 8, name: str = "gunicorn",
    config: Optional[Path] = None,
) -> Process:
    """gunicorn, gthread workers, with the sample app's gunicorn.conf.py."""
    args = [
        str(BIN / "gunicorn"), "-c", str(ROOT / "sample_app" / "gunicorn.conf.py"),
        "-b", f"127.0.0.1:{port}", "-w", str(workers), "--threads", str(threads),
        "--pid", str(tmp / f"{name}.pid"),
    ]
    if preload:
        args.append("--preload")
    if _gunicorn_has_control_socket():
        args.append("--no-control-socket")  # its default path is per user: tests would share it
    args.append("sample_app.wsgi:application")
    return Process(name, args, tmp, app_env(database_url, pool_size, config))


def uwsgi(
    tmp: Path, port: int, database_url: str, *, processes: int = 3, threads: int = 8,
    lazy_apps: bool = False, pool_size: int = 8, name: str = "uwsgi",
) -> tuple[Process, Path]:
    """uWSGI as deploy/uwsgi.ini configures it; (the process, its touch-reload file)."""
    reload = tmp / f"{name}.reload"
    reload.touch()
    ini = tmp / f"{name}.ini"
    ini.write_text(rewrite(ROOT / "deploy" / "uwsgi.ini", {
        "http-socket": f"127.0.0.1:{port}",
        "processes": str(processes),
        "threads": str(threads),
        "lazy-apps": "true" if lazy_apps else "false",
        "touch-reload": str(reload),
        "pidfile": str(tmp / f"{name}.pid"),
    }))
    return Process(name, [str(BIN / "uwsgi"), "--ini", str(ini)], tmp,
                   app_env(database_url, pool_size)), reload


@functools.cache
def _gunicorn_has_control_socket() -> bool:
    out = subprocess.run([str(BIN / "gunicorn"), "--help"], capture_output=True, text=True,
                         timeout=60)
    return "--no-control-socket" in out.stdout


def workers_serving(master: int, port: int, count: int, timeout: float = START_TIMEOUT,
                    log: Optional[Path] = None) -> list[int]:
    """Wait until ``master`` has ``count`` children and the app answers; their pids."""
    def ready() -> Optional[list[int]]:
        pids = workers_alive(master)
        if len(pids) != count:
            return None
        try:
            status(port)
        except (OSError, http.client.HTTPException, AssertionError):
            return None
        return pids

    result: list[int] = wait_for(ready, timeout, f"{count} workers serving on {port}", log)
    return result


def pids_answering(port: int, expected: set[int], timeout: float = 30.0,
                   log: Optional[Path] = None) -> set[int]:
    """Ask ``/status`` until every pid in ``expected`` has answered; the pids seen."""
    seen: set[int] = set()
    errors: list[str] = []

    def all_seen() -> bool:
        try:
            seen.add(status(port)["pid"])
        except (OSError, http.client.HTTPException, AssertionError) as exc:
            errors[:] = [repr(exc)[:300]]
        return expected <= seen

    wait_for(all_seen, timeout,
             lambda: f"answers from each of {sorted(expected)} (seen {seen}, last error {errors})",
             log)
    return seen


# -- PgBouncer -------------------------------------------------------------------


def rewrite(template: Path, values: dict[str, str]) -> str:
    """The lines of ``template`` with each ``key = value`` whose key is in
    ``values`` given that value instead (the key's first occurrence)."""
    lines = []
    for line in template.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith((";", "#")) and key in values:
            line = f"{key} = {values.pop(key)}"
        lines.append(line)
    assert not values, f"not in {template.name}: {sorted(values)}"
    return "\n".join(lines) + "\n"


class PgBouncer(Process):
    """PgBouncer as deploy/pgbouncer.ini configures it (transaction mode), on a
    free port, in front of ``dsn``'s database.

    Run as root, it runs as ``postgres`` (PgBouncer refuses root), in a
    directory owned by ``postgres``.
    """

    def __init__(self, tmp: Path, dsn: str, *, pool_size: int = 4, name: str = "pgbouncer",
                 port: Optional[int] = None) -> None:
        from psycopg.conninfo import conninfo_to_dict

        target = conninfo_to_dict(dsn)
        self.port = port or free_port()
        # pytest's tmp_path is private to root, and PgBouncer runs as postgres
        self.dir = Path(tempfile.mkdtemp(prefix=f"poodle-{name}-"))
        ini = self.dir / "pgbouncer.ini"
        text = rewrite(ROOT / "deploy" / "pgbouncer.ini", {
            "test": f"host={target.get('host', '127.0.0.1')} port={target.get('port', 5432)} "
                    f"dbname={target['dbname']}",
            "listen_port": str(self.port),
            "unix_socket_dir": str(self.dir),
            "auth_file": str(self.dir / "users.txt"),
            "default_pool_size": str(pool_size),
            "logfile": str(self.dir / "pgbouncer.log"),
        })
        ini.write_text(text.replace("\ntest = ", f"\n{target['dbname']} = ", 1))
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        user = None
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            user = "postgres"
            shutil.chown(self.dir, user)
            for each in self.dir.iterdir():
                shutil.chown(each, user)
        super().__init__(name, ["/usr/sbin/pgbouncer", str(ini)], tmp, user=user)
        wait_for(self._accepts, START_TIMEOUT, f"PgBouncer on {self.port}", self.log)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """Stop it (SIGTERM: at once, closing every connection) and remove its directory."""
        try:
            return super().stop(signum, timeout)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _accepts(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"PgBouncer exited ({self.proc.returncode}):\n{self.text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False


def pgbouncer_app_config(tmp: Path, pgbouncer_port: int, database: str,
                         name: str = "app.conf") -> Path:
    """deploy/sample_app-pgbouncer.conf, to ``pgbouncer_port`` and ``database``."""
    path = tmp / name
    path.write_text(rewrite(ROOT / "deploy" / "sample_app-pgbouncer.conf", {
        "poodle.default.args": f'("postgresql://postgres@127.0.0.1:{pgbouncer_port}/{database}",)',
    }))
    return path


# -- HAProxy ---------------------------------------------------------------------


class HAProxy(Process):
    """HAProxy as deploy/haproxy.cfg configures it, on a free port, balancing
    over ``backend_ports``; its stats socket in a directory of its own."""

    def __init__(self, tmp: Path, backend_ports: list[int]) -> None:
        self.port = free_port()
        self.dir = tmp / "haproxy"
        self.dir.mkdir()
        self.stats_socket = self.dir / "stats.sock"
        template = (ROOT / "deploy" / "haproxy.cfg").read_text()
        servers = "".join(
            f"    server app{n} 127.0.0.1:{port}\n" for n, port in enumerate(backend_ports)
        )
        text = re.sub(r"(?m)^    server app\d+ .*\n", "", template).rstrip("\n") + "\n" + servers
        text = text.replace("/run/haproxy/admin.sock", str(self.stats_socket))
        text = text.replace("bind 127.0.0.1:8080", f"bind 127.0.0.1:{self.port}")
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(text)
        super().__init__("haproxy", ["/usr/sbin/haproxy", "-db", "-f", str(cfg)], tmp)
        wait_for(self.stats_socket.exists, START_TIMEOUT, "HAProxy's stats socket", self.log)

    def server_states(self) -> dict[str, str]:
        """Each server's state as HAProxy sees it (``UP``, ``DOWN``, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        states = {}
        for line in data.decode().splitlines():
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "app" and re.match(r"app\d+$", cols[1]):
                states[cols[1]] = cols[17].split()[0]
        return states
