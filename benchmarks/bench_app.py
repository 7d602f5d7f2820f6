#!/usr/bin/env python3
"""Requests per second of sample_app's ``GET /docs/<id>`` on PostgreSQL, with
the pool against a new connection per request.

Two ``python -m sample_app`` servers run on loopback (cheroot), on the same
PostgreSQL schema and document:

- ``pooled``: the pool as the app ships it (``--pool-size``);
- ``connect``: the same app whose pool retires each connection after one use
  (``max_uses = 1``, declared in a generated ``--config`` file), so that every
  request opens a new connection, as an app without a pool would.

The rounds alternate between the two (pooled, connect, connect, pooled, ...)
so that both see the same background load. The client keeps a fixed number of
keep-alive connections busy for a fixed time. It is Debian's ``wrk`` (``apt-get
install wrk``) when that is installed: written in C, it leaves the CPU to the
server. Without wrk (or with ``--client python``) it is this script's own:
one thread per connection, each with ``http.client``, in a process apart from
the servers but needing a CPU of its own, which lowers the figures of a
2-core machine. The script says which client it used, and prints each round,
the medians and their ratio.

    .venv/bin/python benchmarks/bench_app.py                  # about 40 s
    .venv/bin/python benchmarks/bench_app.py --client python  # without wrk
    .venv/bin/python benchmarks/bench_app.py --quick          # a smoke run, a few seconds

The PostgreSQL URL comes from ``--dsn`` or ``POODLE_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the script works in a schema of
its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

# sample_app is not installed (the wheel carries poodle_cherrypy only): this
# script and its servers import it from the checkout.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DSN = os.environ.get("POODLE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DOC_ID = "bench-doc"
STARTUP_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


class Server:
    """``python -m sample_app`` in a subprocess, ready once "Bus STARTED" is logged."""

    def __init__(self, name: str, args: list[str], cwd: str) -> None:
        self.name = name
        self.port = free_port()
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLE_APP_")}
        path = [str(ROOT), environ.get("PYTHONPATH", "")]
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sample_app", "--port", str(self.port), *args],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the access log
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def wait_started(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise SystemExit(f"{self.name} server did not start:\n{''.join(self.log)}")
            self.log.append(line)
            if "Bus STARTED" in line:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def prepare(dsn: str, schema: str) -> None:
    """The schema, its table and the one document the benchmark reads."""
    import psycopg

    from sample_app import db, store

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    with db.connect_postgresql(with_search_path(dsn, schema)) as conn:
        store.ensure_schema(conn)
        store.create(conn, DOC_ID, store.encode({"title": "benchmark", "n": list(range(20))}))
        conn.commit()


def drop(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run_round_wrk(wrk: str, port: int, clients: int, seconds: float) -> float:
    """Requests per second that ``wrk`` measured; raises on any error or non-2xx answer."""
    command = [wrk, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s",
               f"http://127.0.0.1:{port}/docs/{DOC_ID}"]
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=seconds + REQUEST_TIMEOUT + 10, check=False)
    out = result.stdout
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.MULTILINE)
    if result.returncode != 0 or rate is None or "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk failed ({result.returncode}):\n{out}{result.stderr}")
    return float(rate.group(1))


def run_round(port: int, clients: int, seconds: float) -> float:
    """Requests per second of ``clients`` threads for ``seconds``; raises on any non-200."""
    path = f"/docs/{DOC_ID}"
    counts = [0] * clients
    errors: list[str] = []
    start = threading.Barrier(clients + 1, timeout=STARTUP_TIMEOUT)
    stop_at = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            conn.connect()
            start.wait()
            while time.monotonic() < stop_at[0]:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    errors.append(f"{response.status} {body[:200]!r}")
                    return
                counts[i] += 1
        except Exception as exc:
            errors.append(repr(exc))
            start.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT + 10)
    elapsed = time.monotonic() - began
    if errors:
        raise SystemExit(f"requests failed: {errors[:3]}")
    return sum(counts) / elapsed


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL URL (postgresql://...)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each (default 4)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per round (default 4)")
    parser.add_argument("--clients", type=int, default=8,
                        help="keep-alive connections (default 8; cheroot closes "
                             "keep-alive connections beyond 10)")
    parser.add_argument("--pool-size", type=int, default=8, help="pool max_size (default 8)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="wrk, this script's http.client threads, or wrk if it is "
                             "installed (auto, the default)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 round of 1 s each, 2 clients")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.clients = 1, 1.0, 2
    wrk = shutil.which("wrk") if args.client != "python" else None
    if args.client == "wrk" and wrk is None:
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    if wrk is not None:
        client = f"wrk ({wrk}), 1 thread"

        def measure(port: int) -> float:
            return run_round_wrk(wrk, port, args.clients, args.seconds)
    else:
        client = "http.client threads" + (" (wrk is not installed)" if args.client == "auto"
                                          else "")

        def measure(port: int) -> float:
            return run_round(port, args.clients, args.seconds)
    if not args.dsn.startswith(("postgresql://", "postgres://")):
        parser.error("--dsn must be a postgresql:// URL")

    schema = f"poodle_bench_{uuid.uuid4().hex[:12]}"
    url = with_search_path(args.dsn, schema)
    prepare(args.dsn, schema)
    servers: list[Server] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp) / "connect.conf"
            conf.write_text(
                "[global]\n"
                'poodle.default.factory = "sample_app.db:connect_postgresql"\n'
                # A config file's values are interpolated: "%" is written "%%".
                f"poodle.default.args = ({url.replace('%', '%%')!r},)\n"
                f"poodle.default.max_size = {args.pool_size}\n"
                "poodle.default.max_uses = 1\n"
                'poodle.default.reset = "sample_app.db:rollback"\n',
                encoding="utf-8",
            )
            pooled = Server("pooled", ["--database", url, "--pool-size", str(args.pool_size)], tmp)
            servers.append(pooled)
            connect = Server("connect", ["--config", str(conf)], tmp)
            servers.append(connect)
            for server in servers:
                server.wait_started()
            for server in servers:  # warm up: imports, first connections
                run_round(server.port, args.clients, min(0.5, args.seconds))

            print(
                f"GET /docs/<id> on PostgreSQL, {args.clients} keep-alive connections, "
                f"client: {client}; {args.rounds} rounds of {args.seconds:g} s each, "
                f"pool max_size={args.pool_size}; {os.cpu_count()} CPUs"
            )
            results: dict[str, list[float]] = {"pooled": [], "connect": []}
            for n in range(args.rounds):
                order = (pooled, connect) if n % 2 == 0 else (connect, pooled)
                for server in order:
                    rate = measure(server.port)
                    results[server.name].append(rate)
                    print(f"round {n + 1}  {server.name:8} {rate:8.0f} requests/s", flush=True)
            medians = {name: statistics.median(rates) for name, rates in results.items()}
            ratio = medians["pooled"] / medians["connect"]
            print(f"median   pooled   {medians['pooled']:8.0f} requests/s")
            print(f"median   connect  {medians['connect']:8.0f} requests/s "
                  "(a new connection per request)")
            print(f"ratio    {ratio:.1f}x")
            print(json.dumps({"pooled": medians["pooled"], "connect": medians["connect"],
                              "ratio": round(ratio, 2)}))
    finally:
        for server in servers:
            server.stop()
        drop(args.dsn, schema)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
