#!/usr/bin/env python3
"""SQLAlchemy on poodle against SQLAlchemy's own QueuePool, behind CherryPy:
the server's CPU per request, and the worst wait when the pool is overloaded.

Two configurations of the same app, each a cheroot server (``cherrypy.server``,
``environment = "production"``, no logs) in a subprocess of this script, on
127.0.0.1, with the same number of server threads, against the PostgreSQL on
loopback:

- ``poodle``: an Engine of ``poodle_cherrypy.sqlalchemy.create_engine(url,
  poodle={"max_size": N, "timeout": 30})`` given to ``PoodlePlugin``, and
  ``tools.poodle.on`` with ``tools.poodle.transaction``: the request's
  ``sqlalchemy.orm.Session`` is ``cherrypy.request.db``, committed or rolled
  back by the tool and closed at the end of the request;
- ``queuepool``: the classic SAEnginePlugin/SATool recipe, a plain
  ``sqlalchemy.create_engine(url, pool_size=N, max_overflow=0,
  pool_timeout=30)`` (QueuePool) and a small tool of this script's own that
  puts a new ``Session(bind=engine)`` on ``cherrypy.request.db`` before the
  handler, commits it before the response is finalized if the status is below
  400 (else rolls back), rolls back what is left and closes it at
  ``on_end_request``.

The handlers read one row of a table in a schema of the script's own
(``poodle_bench_sa_<hex>``, created at the start and dropped at the end):
``GET /item`` is ``session.get(Item, 1)``; ``GET /slow`` first runs ``SELECT
pg_sleep(<--sleep-ms>)``, so that each request holds its connection for a few
milliseconds.

Phase 1, CPU per request: ``--threads`` server threads (default 8) and a pool
of as many connections, ``--clients`` keep-alive clients (default 8) on ``GET
/item``. The rounds alternate the two configurations (poodle, queuepool,
queuepool, poodle, ...) so that a shared machine's drift hurts both alike. The
CPU time of each server process (user + system, all its threads, from
``/proc/<pid>/stat``) is read before and after each round and divided by the
requests it answered; the summary gives min/median/max over the rounds and the
ratio of the medians, poodle / QueuePool (target <= 1.05).

Phase 2, overload: ``--overload-pool`` connections (default 4),
``--overload-clients`` keep-alive clients (default 32, 8x the pool) and as
many server threads, so that the clients queue in the pool, not in cheroot,
on ``GET /slow``. The client times every request; a round's figures are its
slowest request (``max``) and its 99th percentile (``p99``). The figure the
target is on is the worst wait: each round's max, the median over the rounds,
poodle / QueuePool (target <= 0.5: poodle's FIFO hand-off against the queue
that lets a newcomer take a connection a waiter was woken for); the p99 ratio
is printed beside it.

The client is Debian's ``wrk`` (``apt-get install wrk``; one thread,
``--latency``: its max and p99) if it is on the PATH, else (or with
``--client python``) this script's ``http.client`` threads in its own
process, which take CPU the servers could use (the CPU per request stays the
server's own). The script says which.

    .venv/bin/python benchmarks/bench_sqlalchemy.py                 # about 2 minutes
    .venv/bin/python benchmarks/bench_sqlalchemy.py --client python # without wrk
    .venv/bin/python benchmarks/bench_sqlalchemy.py --quick         # a smoke run, a few seconds

The PostgreSQL URL comes from ``--dsn`` or ``POODLE_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``; SQLAlchemy reaches it with
psycopg 3). The last line is the summary as JSON (``--json PATH`` writes it
to a file too). A missed target is reported, not failed; the exit status is 1
when a request failed or a server did not come up.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Optional

# Run as a plain script from a checkout: import the poodle next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_DSN = os.environ.get("POODLE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

#: The targets: CPU per request, poodle / QueuePool; worst wait, poodle / QueuePool.
CPU_TARGET = 1.05
WAIT_TARGET = 0.5

#: The two configurations, in the order of the first round.
MODES = ("poodle", "queuepool")
LABELS = {"poodle": "poodle", "queuepool": "QueuePool"}

#: Prefix of the lines a server subprocess writes for this script.
REPLY = "bench-sqlalchemy-server "

#: Seconds a server may take to start; a checkout's wait for a connection.
SERVER_TIMEOUT = 60.0
CHECKOUT_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0

ITEM_NAME = "benchmark item"
ROWS = 10


# -- the server (in a subprocess) ----------------------------------------------


def sqlalchemy_url(dsn: str) -> str:
    """``dsn`` (postgresql://...) with SQLAlchemy's psycopg 3 driver named."""
    scheme, rest = dsn.split("://", 1)
    if "+" in scheme:
        return dsn
    return f"postgresql+psycopg://{rest}"


def serve(mode: str, port: int, threads: int, pool_size: int, dsn: str, schema: str,
          sleep_ms: float) -> int:
    """Serve ``/item`` and ``/slow`` on 127.0.0.1:port until stdin closes."""
    import cherrypy
    from cherrypy.lib import httputil
    from sqlalchemy import Column, Integer, String, text
    from sqlalchemy import create_engine as sa_create_engine
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "items"
        __table_args__ = {"schema": schema}  # noqa: RUF012  (SQLAlchemy's own attribute)
        # Columns without Mapped[] annotations: this module's annotations are
        # strings (from __future__), which SQLAlchemy cannot resolve in a function.
        id = Column(Integer, primary_key=True)
        name = Column(String, nullable=False)

    sleep = text("SELECT pg_sleep(:seconds)").bindparams(seconds=sleep_ms / 1000)

    class Root:
        @cherrypy.expose  # type: ignore[untyped-decorator]  # cherrypy is untyped
        def item(self) -> str:
            row = cherrypy.request.db.get(Item, 1)
            return str(row.name)

        @cherrypy.expose  # type: ignore[untyped-decorator]
        def slow(self) -> str:
            session = cherrypy.request.db
            session.execute(sleep)
            return str(session.get(Item, 1).name)

    url = sqlalchemy_url(dsn)
    if mode == "poodle":
        import poodle_cherrypy  # noqa: F401  (registers tools.poodle)
        from poodle_cherrypy import PoodlePlugin
        from poodle_cherrypy.sqlalchemy import create_engine

        engine = create_engine(url, poodle={"max_size": pool_size, "timeout": CHECKOUT_TIMEOUT})
        # Typed Any: PoodlePlugin's pools= annotation names Pools and dicts
        # only, though it takes an Engine (as PoodlePlugin.add does).
        pools: dict[str, Any] = {"default": engine}
        PoodlePlugin(cherrypy.engine, pools).subscribe()
        conf = {"/": {"tools.poodle.on": True, "tools.poodle.transaction": True}}
    else:
        engine = sa_create_engine(url, pool_size=pool_size, max_overflow=0,
                                  pool_timeout=CHECKOUT_TIMEOUT)

        class SessionTool(cherrypy.Tool):  # type: ignore[misc]  # cherrypy is untyped
            """The classic recipe: a Session per request on a plain Engine."""

            def __init__(self) -> None:
                super().__init__("before_handler", self.open, priority=95)

            def open(self) -> None:
                request = cherrypy.serving.request
                request.db = Session(bind=engine)
                request.sa_decided = False
                request.hooks.attach("before_finalize", self.commit, priority=95)
                request.hooks.attach("on_end_request", self.close, failsafe=True, priority=80)

            def commit(self) -> None:
                request = cherrypy.serving.request
                try:
                    code = httputil.valid_status(cherrypy.serving.response.status)[0]
                except ValueError:
                    code = 500
                request.sa_decided = True
                if code < 400:
                    request.db.commit()
                else:
                    request.db.rollback()

            def close(self) -> None:
                request = cherrypy.serving.request
                session = request.__dict__.pop("db", None)
                if session is None:
                    return
                try:
                    if not request.sa_decided:
                        session.rollback()
                finally:
                    session.close()

        cherrypy.tools.sa_session = SessionTool()
        conf = {"/": {"tools.sa_session.on": True}}

    cherrypy.config.update({
        "environment": "production",
        "log.screen": False,
        "log.access_file": "",
        "log.error_file": "",
        "server.socket_host": "127.0.0.1",
        "server.socket_port": port,
        "server.thread_pool": threads,
        "server.socket_queue_size": max(threads, 64),
        "server.shutdown_timeout": 1,
    })
    cherrypy.tree.mount(Root(), "", conf)
    cherrypy.engine.start()
    if cherrypy.engine.state != cherrypy.engine.states.STARTED:
        return 1
    # cheroot stops keeping connections alive beyond 10 open ones (its
    # keep_alive_conn_limit): the overload phase's 32 clients would reconnect
    # for each request.
    cherrypy.server.httpserver.keep_alive_conn_limit = None
    sys.stdout.write(REPLY + "ready\n")
    sys.stdout.flush()
    try:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
    finally:
        cherrypy.engine.exit()
        engine.dispose()
    return 0


class Server:
    """A server subprocess of one configuration."""

    def __init__(self, mode: str, threads: int, pool_size: int, dsn: str, schema: str,
                 sleep_ms: float) -> None:
        self.mode = mode
        self.port = _free_port()
        self.threads = threads
        self.pool_size = pool_size
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode, "--port", str(self.port),
             "--threads", str(threads), "--pool-size", str(pool_size), "--dsn", dsn,
             "--schema", schema, "--sleep-ms", str(sleep_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )

    def wait_ready(self) -> None:
        out: IO[str] = self.proc.stdout  # type: ignore[assignment]
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                raise RuntimeError(f"the {self.mode} server (pid {self.proc.pid}) did not start")
            line = out.readline()
            if not line:
                raise RuntimeError(
                    f"the {self.mode} server (pid {self.proc.pid}) exited with status "
                    f"{self.proc.wait()}"
                )
            if line.startswith(REPLY) and line[len(REPLY):].strip() == "ready":
                return
            sys.stderr.write(line)

    def cpu(self) -> float:
        """The server's CPU seconds so far (user + system, all threads)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state (field 3): utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Stop the server (once); kill it if it does not go."""
        if self.proc.returncode is not None:
            return
        try:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.close()
            self.proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the schema ----------------------------------------------------------------


def prepare(dsn: str, schema: str) -> None:
    """The schema and its table of ROWS items."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.items (id integer PRIMARY KEY, name text NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.items (id, name) VALUES (%s, %s)",
                            [(i, ITEM_NAME if i == 1 else f"item {i}") for i in range(1, ROWS + 1)])


def drop(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- load generators -----------------------------------------------------------


@dataclass
class Load:
    """What a load generator saw in one round."""

    requests: int  # answers with status 200 and the item's name
    seconds: float
    errors: int = 0
    first_error: str = ""
    max_ms: float = math.nan  # the slowest request
    p99_ms: float = math.nan
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def _wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    words = (out.stdout + out.stderr).split()
    return " ".join(words[:2]) if words else "wrk"


def wrk_load(wrk: str, url: str, seconds: float, connections: int) -> Load:
    """wrk on ``url`` for whole seconds: 1 thread, ``connections`` keep-alive connections."""
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "--timeout", f"{REQUEST_TIMEOUT:g}s", url],
        capture_output=True, text=True, timeout=seconds + REQUEST_TIMEOUT + 30, check=False,
    )
    text = out.stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
    latency = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)\b", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\b", text, re.MULTILINE)
    if out.returncode != 0 or done is None or latency is None or p99 is None:
        return Load(0, seconds, 1, f"wrk exited {out.returncode}: {text}{out.stderr}".strip())
    elapsed = _ms(done.group(2), done.group(3)) / 1e3
    errors, first = 0, ""
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
        first = sockets.group(0)
    statuses = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    bad = int(statuses.group(1)) if statuses else 0
    if statuses:
        errors += bad
        first = first or statuses.group(0)
    return Load(int(done.group(1)) - bad, elapsed, errors, first,
                _ms(*latency.groups()), _ms(*p99.groups()))


class _Client(threading.Thread):
    """One keep-alive connection, sending GETs until the deadline, timing each."""

    def __init__(self, port: int, path: str, start: threading.Barrier, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.path = path
        self.start_line = start
        self.seconds = seconds
        self.requests = 0
        self.errors = 0
        self.first_error = ""
        self.latencies: list[float] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        self.start_line.wait(SERVER_TIMEOUT)
        deadline = time.perf_counter() + self.seconds
        expected = ITEM_NAME.encode()
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read()
                if response.status == 200 and body == expected:
                    self.latencies.append((time.perf_counter() - t0) * 1e3)
                    self.requests += 1
                    continue
                problem = f"{self.path}: status {response.status}, {body[:80]!r}"
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{self.path}: {exc!r}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            self.errors += 1
            self.first_error = self.first_error or problem
        conn.close()


def python_load(port: int, path: str, seconds: float, connections: int) -> Load:
    """``connections`` threads, each a keep-alive http.client connection, for ``seconds``."""
    start = threading.Barrier(connections + 1)
    clients = [_Client(port, path, start, seconds) for _ in range(connections)]
    for client in clients:
        client.start()
    start.wait(SERVER_TIMEOUT)
    t0 = time.perf_counter()
    for client in clients:
        client.join(seconds + REQUEST_TIMEOUT + 10)
    elapsed = time.perf_counter() - t0
    stuck = sum(client.is_alive() for client in clients)
    first = next((c.first_error for c in clients if c.first_error), "")
    latencies = sorted(ms for c in clients for ms in c.latencies)
    load = Load(
        sum(c.requests for c in clients), elapsed, sum(c.errors for c in clients) + stuck,
        first or (f"{stuck} client thread(s) still running" if stuck else ""),
        latencies=latencies,
    )
    if latencies:
        load.max_ms = latencies[-1]
        load.p99_ms = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
    return load


# -- rounds --------------------------------------------------------------------


@dataclass
class Round:
    load: Load
    cpu: float  # the server's CPU seconds during the round

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per request answered."""
        return self.cpu / self.load.requests * 1e6 if self.load.requests else math.nan


def run_round(server: Server, load: Callable[[Server], Load]) -> Round:
    before = server.cpu()
    seen = load(server)
    return Round(seen, server.cpu() - before)


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _mmm(s: dict[str, float], fmt: str) -> str:
    return "/".join(fmt.format(s[k]) for k in ("min", "median", "max"))


def _verdict(held: bool) -> str:
    return "held" if held else "MISSED"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _bounded(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not within {low:g}..{high:g}")
        return value

    return parse


def alternate(servers: dict[str, Server], rounds: int, load: Callable[[Server], Load],
              show: Callable[[int, str, Round], str]) -> tuple[dict[str, list[Round]], bool]:
    """``rounds`` rounds of each server, the order swapped every round; (rounds, failed)."""
    results: dict[str, list[Round]] = {mode: [] for mode in servers}
    failed = False
    for n in range(rounds):
        order = MODES if n % 2 == 0 else MODES[::-1]
        for mode in order:
            r = run_round(servers[mode], load)
            results[mode].append(r)
            line = show(n + 1, mode, r)
            if r.load.errors or not r.load.requests:
                failed = True
                line += f"  FAILED: {r.load.errors} error(s), {r.load.first_error}"
            print(line, flush=True)
    return results, failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL URL (postgresql://...)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 rounds of 1 s per phase, fewer clients")
    parser.add_argument("--rounds", type=_bounded(int, 1, 50),
                        help="rounds of each configuration in each phase (6)")
    parser.add_argument("--seconds", type=_bounded(float, 0.5, 60), help="per round (3)")
    parser.add_argument("--threads", type=_bounded(int, 1, 256),
                        help="phase 1: server threads and pool size (8)")
    parser.add_argument("--clients", type=_bounded(int, 1, 256),
                        help="phase 1: keep-alive clients (8)")
    parser.add_argument("--overload-pool", type=_bounded(int, 1, 64),
                        help="phase 2: pool size (4)")
    parser.add_argument("--overload-clients", type=_bounded(int, 1, 256),
                        help="phase 2: keep-alive clients, and server threads (32)")
    parser.add_argument("--sleep-ms", type=_bounded(float, 0, 1000), default=5.0,
                        help="phase 2: pg_sleep of each request, ms (5)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="wrk if it is on the PATH (auto), or this script's http.client "
                             "threads")
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pool-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve, args.port, args.threads, args.pool_size, args.dsn,
                     args.schema, args.sleep_ms)
    quick = args.quick
    rounds = args.rounds or (2 if quick else 6)
    seconds = args.seconds or (1.0 if quick else 3.0)
    threads = args.threads or (4 if quick else 8)
    clients = args.clients or (4 if quick else 8)
    overload_pool = args.overload_pool or (2 if quick else 4)
    overload_clients = args.overload_clients or (8 if quick else 32)
    warmup = 0.5 if quick else 1.0
    if not args.dsn.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        parser.error("--dsn must be a postgresql:// URL")

    wrk = shutil.which("wrk") if args.client != "python" else None
    if args.client == "wrk" and wrk is None:
        parser.error("--client wrk: wrk is not on the PATH (apt-get install wrk)")
    if wrk is not None:
        client = f"{_wrk_version(wrk)}, 1 thread"

        def load_of(path: str, secs: float, n: int) -> Callable[[Server], Load]:
            return lambda s: wrk_load(wrk, f"http://127.0.0.1:{s.port}{path}", secs, n)
    else:
        client = "http.client threads" + (" (wrk is not on the PATH)" if args.client == "auto"
                                          else "")

        def load_of(path: str, secs: float, n: int) -> Callable[[Server], Load]:
            return lambda s: python_load(s.port, path, secs, n)

    print(
        f"poodle_cherrypy SQLAlchemy benchmark, {datetime.date.today().isoformat()}; "
        f"Python {platform.python_version()}, SQLAlchemy {_version('SQLAlchemy')}, "
        f"psycopg {_version('psycopg')}, CherryPy {_version('CherryPy')}, "
        f"cheroot {_version('cheroot')} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPU(s); client: {client}"
        + ("; a --quick smoke run, its figures mean nothing" if quick else "")
    )
    schema = f"poodle_bench_sa_{uuid.uuid4().hex[:12]}"
    prepare(args.dsn, schema)
    failed = False
    servers: list[Server] = []
    summary: dict[str, Any] = {}
    try:
        # Phase 1: CPU per request.
        cpu_servers = {mode: Server(mode, threads, threads, args.dsn, schema, args.sleep_ms)
                       for mode in MODES}
        servers.extend(cpu_servers.values())
        for server in cpu_servers.values():
            server.wait_ready()
        item = load_of("/item", seconds, clients)
        for server in cpu_servers.values():
            warm = load_of("/item", warmup, clients)(server)
            if warm.errors or not warm.requests:
                print(f"FAILED: warm-up of {server.mode}: {warm.errors} error(s), "
                      f"{warm.first_error}")
                return 1
        print()
        print(f"phase 1, CPU per request: GET /item (session.get(Item, 1)), {threads} server "
              f"threads, pool of {threads}, {clients} keep-alive clients; {rounds} rounds of "
              f"{seconds:g} s each, alternated")
        cpu_rounds, bad = alternate(
            cpu_servers, rounds, item,
            lambda n, mode, r: (f"round {n:2}  {mode:9}  {r.load.rps:7.0f} requests/s  "
                                f"{r.cpu_us:7.1f} us CPU/request  ({r.load.requests} requests, "
                                f"{r.cpu:.2f} s CPU)"),
        )
        failed = failed or bad
        for server in cpu_servers.values():
            server.close()

        # Phase 2: the worst wait under overload.
        slow_servers = {mode: Server(mode, overload_clients, overload_pool, args.dsn, schema,
                                     args.sleep_ms) for mode in MODES}
        servers.extend(slow_servers.values())
        for server in slow_servers.values():
            server.wait_ready()
        slow = load_of("/slow", seconds, overload_clients)
        for server in slow_servers.values():
            warm = load_of("/slow", warmup, overload_clients)(server)
            if warm.errors or not warm.requests:
                print(f"FAILED: warm-up of {server.mode}: {warm.errors} error(s), "
                      f"{warm.first_error}")
                return 1
        print()
        print(f"phase 2, overload: GET /slow (pg_sleep({args.sleep_ms / 1000:g}) then "
              f"session.get), pool of {overload_pool}, {overload_clients} keep-alive clients "
              f"({overload_clients / overload_pool:g}x) and as many server threads; {rounds} "
              f"rounds of {seconds:g} s each, alternated; latency per request at the client")
        slow_rounds, bad = alternate(
            slow_servers, rounds, slow,
            lambda n, mode, r: (f"round {n:2}  {mode:9}  {r.load.rps:7.0f} requests/s  "
                                f"max {r.load.max_ms:8.1f} ms  p99 {r.load.p99_ms:8.1f} ms  "
                                f"({r.load.requests} requests)"),
        )
        failed = failed or bad
    except RuntimeError as exc:
        print(f"FAILED: {exc}")
        return 1
    finally:
        for server in servers:
            server.close()
        drop(args.dsn, schema)

    print()
    cpu = {mode: spread([r.cpu_us for r in rs]) for mode, rs in cpu_rounds.items()}
    rps = {mode: spread([r.load.rps for r in rs]) for mode, rs in cpu_rounds.items()}
    worst = {mode: spread([r.load.max_ms for r in rs]) for mode, rs in slow_rounds.items()}
    p99 = {mode: spread([r.load.p99_ms for r in rs]) for mode, rs in slow_rounds.items()}
    slow_rps = {mode: spread([r.load.rps for r in rs]) for mode, rs in slow_rounds.items()}
    for mode in MODES:
        print(f"cpu      {mode:9}  {_mmm(cpu[mode], '{:.1f}')} us/request (min/median/max of "
              f"{rounds} rounds), {_mmm(rps[mode], '{:.0f}')} requests/s")
    for mode in MODES:
        print(f"overload {mode:9}  max {_mmm(worst[mode], '{:.1f}')} ms, p99 "
              f"{_mmm(p99[mode], '{:.1f}')} ms (min/median/max of {rounds} rounds), "
              f"{_mmm(slow_rps[mode], '{:.0f}')} requests/s")
    cpu_ratio = cpu["poodle"]["median"] / cpu["queuepool"]["median"]
    wait_ratio = worst["poodle"]["median"] / worst["queuepool"]["median"]
    p99_ratio = p99["poodle"]["median"] / p99["queuepool"]["median"]
    print(f"ratio CPU per request, poodle/QueuePool (medians): {cpu_ratio:.3f}")
    print(f"ratio worst wait (each round's max latency, medians), poodle/QueuePool: "
          f"{wait_ratio:.3f}; p99 latency: {p99_ratio:.3f}")
    print(f"target, CPU per request poodle/QueuePool <= {CPU_TARGET:.2f}: "
          f"{_verdict(cpu_ratio <= CPU_TARGET)} ({cpu_ratio:.3f})")
    print(f"target, worst wait poodle/QueuePool <= {WAIT_TARGET:.2f}: "
          f"{_verdict(wait_ratio <= WAIT_TARGET)} ({wait_ratio:.3f})")
    summary = {
        "quick": quick,
        "client": client,
        "rounds": rounds,
        "seconds": seconds,
        "cpu_phase": {"threads": threads, "pool_size": threads, "clients": clients},
        "overload_phase": {"threads": overload_clients, "pool_size": overload_pool,
                           "clients": overload_clients, "sleep_ms": args.sleep_ms},
        "cpu_us": cpu,
        "rps": rps,
        "overload_max_ms": worst,
        "overload_p99_ms": p99,
        "overload_rps": slow_rps,
        "ratios": {"cpu": round(cpu_ratio, 4), "worst_wait": round(wait_ratio, 4),
                   "p99": round(p99_ratio, 4)},
        "targets": {"cpu": cpu_ratio <= CPU_TARGET, "worst_wait": wait_ratio <= WAIT_TARGET},
        "failed": failed,
    }
    if failed:
        print("FAILED: some requests failed (see the rounds)")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
