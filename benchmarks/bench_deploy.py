#!/usr/bin/env python3
"""What sample_app's ``GET /docs/<id>`` costs under gunicorn (gthread,
``--threads`` threads, by default gunicorn.conf.py's, and a pool of as many
per worker) with 1 and with 2 workers, on PostgreSQL directly and through
PgBouncer in transaction mode: CPU per request first, requests/s and p99
second.

Four servers run at once on loopback, each idle while another is measured:

- ``w1 direct``, ``w2 direct``: ``SAMPLE_APP_DATABASE`` to PostgreSQL;
- ``w1 pgbouncer``, ``w2 pgbouncer``: deploy/sample_app-pgbouncer.conf to a
  PgBouncer (deploy/pgbouncer.ini, ``default_pool_size`` from
  ``--pgbouncer-pool``), as the deployment tests run it.

Rounds alternate the order of the four. In each, the CPU time (user + system,
from ``/proc/<pid>/stat``) is read before and after for three groups of
processes and divided by the requests served: ``app``, gunicorn's master and
its workers; ``PostgreSQL``, the backends of the server's sessions (a direct
server's, told apart by the worker pid in ``application_name``; PgBouncer's
for a PgBouncer server), a backend opened during the round counting from 0;
``PgBouncer``, its process. On a shared machine, where the load generator and
the neighbours take cores, requests/s measures them too; the CPU a request
costs is the server's own. The summary gives min/median/max over the rounds,
the scaling claim (2 workers' app CPU per request <= 1.10x one worker's: so
throughput grows with cores until the database is the limit), PgBouncer's
added CPU per request, and requests/s and p99 with their spread.

The client is Debian's ``wrk`` (``--latency``: its p99) if installed, else
this script's ``http.client`` threads (which take CPU from the server: the
requests/s then say even less). The server connections are the most seen in
``pg_stat_activity`` during a round.

    .venv/bin/python benchmarks/bench_deploy.py              # about a minute
    .venv/bin/python benchmarks/bench_deploy.py --threads 8  # 8 threads per worker
    .venv/bin/python benchmarks/bench_deploy.py --quick      # a smoke run

It reuses the deployment tests' process helpers (tests/deployment.py), so it
needs the test extra (gunicorn, psycopg, pytest) and runs as root (PgBouncer
is started as ``postgres``, and /proc of its processes and PostgreSQL's is
read). ``--dsn`` or ``POODLE_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``) is where the databases are made.
The last line is the summary as JSON (``--json`` writes it to a file too).
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import deployment  # noqa: E402  (tests/deployment.py)

DEFAULT_DSN = os.environ.get("POODLE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DOC_ID = "bench-doc"


def gunicorn_conf_threads() -> int:
    """The threads per worker sample_app/gunicorn.conf.py gives by default."""
    text = (ROOT / "sample_app" / "gunicorn.conf.py").read_text()
    found = re.search(r'GUNICORN_THREADS",\s*"(\d+)"', text)
    if found is None:
        raise SystemExit("sample_app/gunicorn.conf.py: no GUNICORN_THREADS default found")
    return int(found.group(1))


def wrk_round(wrk: str, port: int, clients: int, seconds: float) -> tuple[int, float, float]:
    """(requests, requests/s, p99 in ms) as wrk measured them; exits on any error
    or non-2xx."""
    out = subprocess.run(
        [wrk, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency",
         f"http://127.0.0.1:{port}/docs/{DOC_ID}"],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )
    text = out.stdout
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.MULTILINE)
    done = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([0-9.]+)(us|ms|s)\b", text, re.MULTILINE)
    if out.returncode != 0 or rate is None or p99 is None or done is None or "Non-2xx" in text \
            or "Socket errors" in text:
        raise SystemExit(f"wrk failed ({out.returncode}):\n{text}{out.stderr}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return int(done.group(1)), float(rate.group(1)), float(p99.group(1)) * scale


def python_round(port: int, clients: int, seconds: float) -> tuple[int, float, float]:
    """(requests, requests/s, p99 in ms) of ``clients`` keep-alive threads; exits
    on any non-200."""
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
    return len(every), len(every) / elapsed, p99


def load_client(
    parser: argparse.ArgumentParser, choice: str, clients: int, seconds: float,
) -> tuple[str, Callable[[int], tuple[int, float, float]]]:
    """The load generator for ``--client`` ``choice`` (wrk, python, or auto: wrk
    if installed): its description and ``measure(port)``, a round's (requests,
    requests/s, p99 in ms). ``--client wrk`` without wrk is a usage error."""
    wrk = shutil.which("wrk") if choice != "python" else None
    if choice == "wrk" and wrk is None:
        parser.error("--client wrk: wrk is not installed (apt-get install wrk)")
    if wrk is not None:
        return "wrk, 1 thread", lambda port: wrk_round(wrk, port, clients, seconds)
    return "http.client threads", lambda port: python_round(port, clients, seconds)


def session_pids(admin: str, database: str, master: Optional[int]) -> set[int]:
    """The backend pids of the sessions on ``database``: with ``master``, only
    those its workers opened (both direct servers share a database); without,
    all (PgBouncer's, which both PgBouncer servers share)."""
    rows = deployment.backends(admin, database)
    if master is not None:
        workers = {str(pid) for pid in deployment.workers_alive(master)}
        rows = [r for r in rows if r["application_name"].rsplit(" ", 1)[-1] in workers]
    return {int(r["pid"]) for r in rows}


def sample_sessions(admin: str, database: str, master: Optional[int], stop: threading.Event,
                    most: list[int], seen: set[int]) -> None:
    """Sample the sessions until ``stop``: the most seen at once goes in
    ``most``, every backend pid seen in ``seen``."""
    while not stop.is_set():
        pids = session_pids(admin, database, master)
        seen.update(pids)
        most[0] = max(most[0], len(pids))
        time.sleep(0.1)


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """The user + system CPU seconds each of ``pids`` has used so far (from
    /proc/<pid>/stat; a process gone is left out)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two readings; a process first seen after ``before``
    (a backend opened during the round) counts from 0."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def spread(values: list[float]) -> dict[str, float]:
    """min, median, max."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


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
    parser.add_argument("--threads", type=int, default=gunicorn_conf_threads(),
                        help="gthread threads per worker, and the pool's max_size (default: "
                             "sample_app/gunicorn.conf.py's, %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 round of 1 s each, 4 clients")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.quick:
        args.rounds, args.seconds, args.clients = 1, 1.0, 4
    client, measure = load_client(parser, args.client, args.clients, args.seconds)

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
                    workers=workers, threads=args.threads, pool_size=args.threads,
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

        print(f"GET /docs/<id> under gunicorn gthread ({args.threads} threads, pool "
              f"{args.threads} per worker), {args.clients} keep-alive connections, client: "
              f"{client}; {args.rounds} rounds of {args.seconds:g} s; PgBouncer pool "
              f"{args.pgbouncer_pool}; {os.cpu_count()} CPUs")
        names = list(servers)
        rows: dict[str, dict[str, list[float]]] = {
            name: {key: [] for key in ("rate", "p99", "app", "postgres", "pgbouncer", "total")}
            for name in names
        }
        sessions: dict[str, int] = dict.fromkeys(servers, 0)
        for n in range(args.rounds):
            order = names if n % 2 == 0 else names[::-1]
            for name in order:
                proc, port, dsn = servers[name]
                stop, most = threading.Event(), [0]
                seen: set[int] = set()
                master = proc.pid if name.endswith("direct") else None
                database = deployment.dbname(dsn)
                app_pids = [proc.pid, *deployment.workers_alive(proc.pid)]
                backends = session_pids(args.dsn, database, master)
                sampler = threading.Thread(
                    target=sample_sessions, args=(args.dsn, database, master, stop, most, seen)
                )
                # runuser runs PgBouncer as its child
                bouncer_pids = [] if master is not None else [
                    bouncer.pid, *deployment.children(bouncer.pid)]
                before = [cpu_of(app_pids), cpu_of(backends), cpu_of(bouncer_pids)]
                sampler.start()
                try:
                    done, rate, p99 = measure(port)
                finally:
                    stop.set()
                    sampler.join()
                after = [cpu_of(app_pids), cpu_of(backends | seen), cpu_of(bouncer_pids)]
                us = [spent(b, a) * 1e6 / max(1, done) for b, a in zip(before, after, strict=True)]
                row = rows[name]
                for key, value in zip(("app", "postgres", "pgbouncer"), us, strict=True):
                    row[key].append(value)
                row["total"].append(sum(us))
                row["rate"].append(rate)
                row["p99"].append(p99)
                sessions[name] = max(sessions[name], most[0])
                print(f"round {n + 1}  {name:13} {rate:7.0f} requests/s  p99 {p99:7.1f} ms  "
                      f"CPU per request: app {us[0]:6.0f} µs, PostgreSQL {us[1]:5.0f} µs, "
                      f"PgBouncer {us[2]:4.0f} µs  server connections {most[0]}", flush=True)
        figures = {name: {key: spread(values) for key, values in row.items()}
                   for name, row in rows.items()}
        for name in names:
            f = figures[name]
            print(f"{name:13} CPU µs/request (min/median/max): app "
                  f"{f['app']['min']:.0f}/{f['app']['median']:.0f}/{f['app']['max']:.0f}, "
                  f"PostgreSQL {f['postgres']['median']:.0f}, PgBouncer "
                  f"{f['pgbouncer']['median']:.0f}, all {f['total']['median']:.0f}; "
                  f"requests/s {f['rate']['min']:.0f}/{f['rate']['median']:.0f}/"
                  f"{f['rate']['max']:.0f}; p99 {f['p99']['median']:.1f} ms; "
                  f"server connections (most) {sessions[name]}")

        def med(name: str, key: str) -> float:
            return float(figures[name][key]["median"])

        ratios = {
            "cpu_workers_direct": med("w2 direct", "app") / med("w1 direct", "app"),
            "cpu_workers_pgbouncer": med("w2 pgbouncer", "app") / med("w1 pgbouncer", "app"),
            "workers_direct": med("w2 direct", "rate") / med("w1 direct", "rate"),
            "workers_pgbouncer": med("w2 pgbouncer", "rate") / med("w1 pgbouncer", "rate"),
            "pgbouncer_w1": med("w1 pgbouncer", "rate") / med("w1 direct", "rate"),
            "pgbouncer_w2": med("w2 pgbouncer", "rate") / med("w2 direct", "rate"),
        }
        added = {w: med(f"w{w} pgbouncer", "total") - med(f"w{w} direct", "total")
                 for w in (1, 2)}
        print(f"ratio    CPU per request (app processes), 2 workers / 1 worker: direct "
              f"{ratios['cpu_workers_direct']:.2f}x, through PgBouncer "
              f"{ratios['cpu_workers_pgbouncer']:.2f}x (target <= 1.10)")
        print(f"ratio    2 workers / 1 worker: direct {ratios['workers_direct']:.2f}x, "
              f"through PgBouncer {ratios['workers_pgbouncer']:.2f}x (requests/s, secondary)")
        print(f"ratio    PgBouncer / direct: 1 worker {ratios['pgbouncer_w1']:.2f}, "
              f"2 workers {ratios['pgbouncer_w2']:.2f} (requests/s, secondary)")
        print(f"PgBouncer's added CPU per request (app + PostgreSQL + PgBouncer, medians): "
              f"1 worker {added[1]:+.0f} µs, 2 workers {added[2]:+.0f} µs")
        summary = {"threads": args.threads, "rounds": args.rounds, "seconds": args.seconds,
                   "clients": args.clients, "client": client, "figures": figures,
                   "sessions": sessions, "pgbouncer_added_us": added,
                   "ratios": {k: round(v, 3) for k, v in ratios.items()}}
        if args.json is not None:
            args.json.write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
