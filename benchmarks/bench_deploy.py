#!/usr/bin/env python3
"""Requests per second and p99 of sample_app's ``GET /docs/<id>`` under gunicorn
(gthread, 8 threads per worker, a pool of 8 per worker) with 1 and with 2
workers, on PostgreSQL directly and through PgBouncer in transaction mode.

Four servers run at once on loopback, each idle while another is measured:

- ``w1 direct``, ``w2 direct``: ``SAMPLE_APP_DATABASE`` to PostgreSQL;
- ``w1 pgbouncer``, ``w2 pgbouncer``: deploy/sample_app-pgbouncer.conf to a
  PgBouncer (deploy/pgbouncer.ini, ``default_pool_size`` from
  ``--pgbouncer-pool``), as the deployment tests run it.

Direct and PgBouncer servers use two throwaway databases; the server
connections are the most seen in ``pg_stat_activity`` during a round: for a
direct server, those its workers opened; through PgBouncer, PgBouncer's.
Rounds alternate the order of the four. The client is Debian's ``wrk``
(``--latency``: its p99) if installed, else this script's ``http.client``
threads. Each round also gives the CPU time the server's processes (and
PgBouncer's) spent per request, read from ``/proc``: on a shared machine,
where other processes take cores, requests/s says little about scaling, and
CPU per request shows what a request costs each way. It prints each round,
the medians, and the ratios the targets are about: 2 workers / 1 worker
(target >= 1.7) and PgBouncer / direct (target >= 0.85, a cost <= 15%).

    .venv/bin/python benchmarks/bench_deploy.py            # about a minute
    .venv/bin/python benchmarks/bench_deploy.py --quick    # a smoke run

It reuses the deployment tests' process helpers (tests/deployment.py), so it
needs the test extra (gunicorn, psycopg, pytest) and runs as root (PgBouncer
is started as ``postgres``). ``--dsn`` or ``POODLE_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``) is where the databases are made.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import deployment  # noqa: E402  (tests/deployment.py)

DEFAULT_DSN = os.environ.get("POODLE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DOC_ID = "bench-doc"


def wrk_round(wrk: str, port: int, clients: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 in ms) as wrk measured them; exits on any error or non-2xx."""
    out = subprocess.run(
        [wrk, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency",
         f"http://127.0.0.1:{port}/docs/{DOC_ID}"],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )
    text = out.stdout
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s)\b", text, re.MULTILINE)
    if out.returncode != 0 or rate is None or p99 is None or "Non-2xx" in text \
            or "Socket errors" in text:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{text}{out.stderr}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return float(rate.group(1)), float(p99.group(1)) * scale


def python_round(port: int, clients: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 in ms) of ``clients`` keep-alive threads; exits on any non-200."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    stop_at = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                conn.request("GET", f"/docs/{DOC_ID}")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors.append(str(response.status))
                    return
                latencies[i].append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    if errors:
        raise SystemExit(f"requests failed: {errors[:5]}")
    every = sorted(t for each in latencies for t in each)
    p99 = every[min(len(every) - 1, int(len(every) * 0.99))] * 1000 if every else 0.0
    return len(every) / elapsed, p99


def most_sessions(admin: str, database: str, master: Optional[int], stop: threading.Event,
                  out: list[int]) -> None:
    """Sample the sessions on ``database`` until ``stop``; the most seen goes in
    ``out``. With ``master``, only the sessions its workers opened (both direct
    servers share a database); without, all (PgBouncer's, which both PgBouncer
    servers share: the figure is PgBouncer's, not one server's)."""
    while not stop.is_set():
        rows = deployment.backends(admin, database)
        if master is not None:
            workers = {str(pid) for pid in deployment.workers_alive(master)}
            rows = [r for r in rows if r["application_name"].rsplit(" ", 1)[-1] in workers]
        out[0] = max(out[0], len(rows))
        time.sleep(0.1)


def cpu_seconds(pids: list[int]) -> float:
    """The user + system CPU seconds ``pids`` have used so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL (admin) DSN")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per round (default 4)")
    parser.add_argument("--clients", type=int, default=16,
                        help="keep-alive connections (default 16)")
    parser.add_argument("--pgbouncer-pool", type=int, default=4,
                        help="PgBouncer's default_pool_size (default 4)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="wrk, http.client threads, or wrk if installed (auto)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 round of 1 s each, 4 clients")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.clients = 1, 1.0, 4
    wrk = shutil.which("wrk") if args.client != "python" else None
    if args.client == "wrk" and wrk is None:
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    measure: Callable[[int], tuple[float, float]]
    if wrk is not None:
        client = "wrk, 1 thread"

        def measure(port: int) -> tuple[float, float]:
            return wrk_round(wrk, port, args.clients, args.seconds)
    else:
        client = "http.client threads"

        def measure(port: int) -> tuple[float, float]:
            return python_round(port, args.clients, args.seconds)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        direct_dsn = stack.enter_context(deployment.throwaway_database(args.dsn))
        bounced_dsn = stack.enter_context(deployment.throwaway_database(args.dsn))
        bouncer = deployment.PgBouncer(tmp, bounced_dsn, pool_size=args.pgbouncer_pool)
        stack.callback(bouncer.stop)
        config = deployment.pgbouncer_app_config(tmp, bouncer.port,
                                                 deployment.dbname(bounced_dsn))
        servers: dict[str, tuple[Any, int, str]] = {}
        for workers in (1, 2):
            for mode in ("direct", "pgbouncer"):
                name = f"w{workers} {mode}"
                port = deployment.free_port()
                proc = deployment.gunicorn(
                    tmp, port, deployment.url_of(direct_dsn) if mode == "direct" else None,
                    workers=workers, threads=8, pool_size=8,
                    config=None if mode == "direct" else config, name=name.replace(" ", "-"),
                )
                stack.callback(proc.stop)
                servers[name] = (proc, port, direct_dsn if mode == "direct" else bounced_dsn)
        for name, (proc, port, _) in servers.items():
            deployment.workers_serving(proc.pid, port, int(name[1]), log=proc.log)
        seeded: set[str] = set()
        for _, port, dsn in servers.values():
            if dsn not in seeded:
                code, body = deployment.request(port, "PUT", f"/docs/{DOC_ID}", b'{"x": 1}')
                assert code == 201, body
                seeded.add(dsn)
            if not args.quick:
                measure(port)  # warm up: every worker's pool, imports

        print(f"GET /docs/<id> under gunicorn gthread (8 threads, pool 8 per worker), "
              f"{args.clients} keep-alive connections, client: {client}; {args.rounds} "
              f"rounds of {args.seconds:g} s; PgBouncer pool {args.pgbouncer_pool}; "
              f"{os.cpu_count()} CPUs")
        rates: dict[str, list[float]] = {name: [] for name in servers}
        p99s: dict[str, list[float]] = {name: [] for name in servers}
        sessions: dict[str, int] = dict.fromkeys(servers, 0)
        cpus: dict[str, list[float]] = {name: [] for name in servers}
        names = list(servers)
        for n in range(args.rounds):
            order = names if n % 2 == 0 else names[::-1]
            for name in order:
                proc, port, dsn = servers[name]
                stop, most = threading.Event(), [0]
                master = proc.pid if name.endswith("direct") else None
                sampler = threading.Thread(
                    target=most_sessions,
                    args=(args.dsn, deployment.dbname(dsn), master, stop, most),
                )
                sampler.start()
                pids = [proc.pid, *deployment.workers_alive(proc.pid)]
                if master is None:
                    pids.append(bouncer.pid)
                cpu_before = cpu_seconds(pids)
                try:
                    rate, p99 = measure(port)
                finally:
                    stop.set()
                    sampler.join()
                cpu_ms = (cpu_seconds(pids) - cpu_before) * 1000 / max(1.0, rate * args.seconds)
                cpus[name].append(cpu_ms)
                rates[name].append(rate)
                p99s[name].append(p99)
                sessions[name] = max(sessions[name], most[0])
                print(f"round {n + 1}  {name:13} {rate:8.0f} requests/s  p99 {p99:7.1f} ms  "
                      f"CPU {cpu_ms:5.2f} ms/request  server connections {most[0]}", flush=True)
        med = {name: statistics.median(values) for name, values in rates.items()}
        for name in names:
            print(f"median   {name:13} {med[name]:8.0f} requests/s  "
                  f"p99 {statistics.median(p99s[name]):7.1f} ms  "
                  f"CPU {statistics.median(cpus[name]):5.2f} ms/request  "
                  f"server connections (most) {sessions[name]}")
        ratios = {
            "workers_direct": med["w2 direct"] / med["w1 direct"],
            "workers_pgbouncer": med["w2 pgbouncer"] / med["w1 pgbouncer"],
            "pgbouncer_w1": med["w1 pgbouncer"] / med["w1 direct"],
            "pgbouncer_w2": med["w2 pgbouncer"] / med["w2 direct"],
        }
        print(f"ratio    2 workers / 1 worker: direct {ratios['workers_direct']:.2f}x, "
              f"through PgBouncer {ratios['workers_pgbouncer']:.2f}x (target >= 1.7)")
        print(f"ratio    PgBouncer / direct: 1 worker {ratios['pgbouncer_w1']:.2f}, "
              f"2 workers {ratios['pgbouncer_w2']:.2f} (target >= 0.85)")
        cpu = {name: round(statistics.median(values), 3) for name, values in cpus.items()}
        print(f"ratio    CPU per request, PgBouncer / direct: 1 worker "
              f"{cpu['w1 pgbouncer'] / cpu['w1 direct']:.2f}, 2 workers "
              f"{cpu['w2 pgbouncer'] / cpu['w2 direct']:.2f} (server and PgBouncer processes)")
        print(json.dumps({"medians": med, "sessions": sessions, "cpu_ms": cpu,
                          "ratios": {k: round(v, 3) for k, v in ratios.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
