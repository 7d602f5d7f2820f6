#!/usr/bin/env python3
"""What sample_app's ``GET /docs/<id>`` costs by threads per process: gunicorn
gthread with 1 and 2 workers, and the app's own cheroot server (``python -m
sample_app``, ``server.thread_pool``), each with a pool of as many connections
as threads, directly on PostgreSQL: CPU per request first, p99 second.

Every server of the sweep runs at once on loopback, each idle while another
is measured; rounds alternate their order. In each round the CPU time (user +
system, from ``/proc/<pid>/stat``) of the server's processes (gunicorn's
master and workers; the one cheroot process) is read before and after and
divided by the requests served, as bench_deploy.py does. The summary gives,
for each server and thread count, min/median/max CPU per request over the
rounds, the median p99 and requests/s, and for each kind of server the
thread count whose median CPU per request was lowest. The defaults of
sample_app/gunicorn.conf.py, deploy/uwsgi.ini and ``python -m sample_app``
come from this sweep (docs/deployment.rst, "Threads per worker").

    .venv/bin/python benchmarks/bench_threads.py              # 12 servers: 3 minutes
    .venv/bin/python benchmarks/bench_threads.py --threads 2,4 --workers 2 --no-cheroot
    .venv/bin/python benchmarks/bench_threads.py --quick      # a smoke run

The client is Debian's ``wrk`` if installed (one thread, ``--clients``
keep-alive connections), else ``http.client`` threads. It reuses the
deployment tests' process helpers (tests/deployment.py), so it needs the test
extra (gunicorn, psycopg, pytest). ``--dsn`` or ``POODLE_POSTGRES_DSN``
(default ``postgresql://postgres@127.0.0.1:5432/test``) is where its
throwaway database is made. The last line is the summary as JSON (``--json``
writes it to a file too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_deploy  # noqa: E402  (its client, CPU reading and helpers)
import deployment  # noqa: E402  (tests/deployment.py, which bench_deploy put on sys.path)
from bench_deploy import DOC_ID, cpu_of, spent, spread  # noqa: E402


def _counts(text: str) -> list[int]:
    """``"1,2,4"`` as ``[1, 2, 4]``; each a whole number >= 1."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be whole numbers >= 1 separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"must be whole numbers >= 1 separated by commas, got {text!r}")
    return values


def cheroot(tmp: Path, port: int, database_url: str, threads: int) -> deployment.Process:
    """``python -m sample_app`` with ``server.thread_pool = threads`` and a pool of as many."""
    name = f"cheroot-t{threads}"
    conf = tmp / f"{name}.conf"
    conf.write_text(f"[global]\nserver.thread_pool = {threads}\n")
    args = [sys.executable, "-m", "sample_app", "--port", str(port), "--database",
            database_url, "--pool-size", str(threads), "--config", str(conf)]
    return deployment.Process(name, args, tmp, {"PYTHONPATH": str(deployment.ROOT)})


def main(argv: Optional[list[str]] = None) -> int:
    """Run the sweep; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=bench_deploy.DEFAULT_DSN,
                        help="PostgreSQL (admin) DSN")
    parser.add_argument("--threads", type=_counts, default=[1, 2, 4, 8],
                        help="thread counts to sweep (default 1,2,4,8)")
    parser.add_argument("--workers", type=_counts, default=[1, 2],
                        help="gunicorn worker counts (default 1,2)")
    parser.add_argument("--no-cheroot", action="store_true",
                        help="leave out python -m sample_app (cheroot)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per round (default 3)")
    parser.add_argument("--clients", type=int, default=16,
                        help="keep-alive connections (default 16)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="wrk, http.client threads, or wrk if installed (auto)")
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: threads 1,2, 1 round of 1 s each, 4 clients")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.quick:
        args.threads, args.rounds, args.seconds, args.clients = [1, 2], 1, 1.0, 4
    client, measure = bench_deploy.load_client(parser, args.client, args.clients, args.seconds)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        dsn = stack.enter_context(deployment.throwaway_database(args.dsn))
        url = deployment.url_of(dsn)
        # name: (process, port, gunicorn workers or 0 for cheroot, threads)
        servers: dict[str, tuple[Any, int, int, int]] = {}
        for workers in args.workers:
            for threads in args.threads:
                name = f"gunicorn w{workers} t{threads}"
                port = deployment.free_port()
                proc = deployment.gunicorn(tmp, port, url, workers=workers, threads=threads,
                                           pool_size=threads, name=name.replace(" ", "-"))
                stack.callback(proc.stop)
                servers[name] = (proc, port, workers, threads)
        if not args.no_cheroot:
            for threads in args.threads:
                port = deployment.free_port()
                proc = cheroot(tmp, port, url, threads)
                stack.callback(proc.stop)
                servers[f"cheroot t{threads}"] = (proc, port, 0, threads)
        for proc, port, workers, _ in servers.values():
            if workers:
                deployment.workers_serving(proc.pid, port, workers, log=proc.log)
            else:
                deployment.pids_answering(port, {proc.pid}, log=proc.log)
        code, body = deployment.request(servers[next(iter(servers))][1], "PUT",
                                        f"/docs/{DOC_ID}", b'{"x": 1}')
        assert code == 201, body
        if not args.quick:
            for _, port, _, _ in servers.values():
                measure(port)  # warm up: every worker's pool, imports

        print(f"GET /docs/<id>, a pool of as many connections as threads per process, "
              f"{args.clients} keep-alive connections, client: {client}; {args.rounds} "
              f"rounds of {args.seconds:g} s; {os.cpu_count()} CPUs")
        names = list(servers)
        rows: dict[str, dict[str, list[float]]] = {
            name: {"app": [], "rate": [], "p99": []} for name in names}
        for n in range(args.rounds):
            for name in names if n % 2 == 0 else names[::-1]:
                proc, port, workers, _ = servers[name]
                pids = [proc.pid, *deployment.workers_alive(proc.pid)] if workers else [proc.pid]
                before = cpu_of(pids)
                done, rate, p99 = measure(port)
                us = spent(before, cpu_of(pids)) * 1e6 / max(1, done)
                rows[name]["app"].append(us)
                rows[name]["rate"].append(rate)
                rows[name]["p99"].append(p99)
                print(f"round {n + 1}  {name:20} {rate:7.0f} requests/s  p99 {p99:7.1f} ms  "
                      f"CPU per request {us:6.0f} µs", flush=True)
        figures = {name: {key: spread(values) for key, values in row.items()}
                   for name, row in rows.items()}
        for name in names:
            f = figures[name]
            print(f"{name:20} CPU µs/request (min/median/max) {f['app']['min']:.0f}/"
                  f"{f['app']['median']:.0f}/{f['app']['max']:.0f}; p99 "
                  f"{f['p99']['median']:.1f} ms; requests/s {f['rate']['median']:.0f}")
        best: dict[str, int] = {}
        kinds = [f"gunicorn w{w}" for w in args.workers] + ([] if args.no_cheroot else ["cheroot"])
        for kind in kinds:
            cells = {servers[name][3]: figures[name]["app"]["median"]
                     for name in names if name.rsplit(" ", 1)[0] == kind}
            best[kind] = min(cells, key=lambda t: cells[t])
            print(f"best     {kind}: {best[kind]} thread(s), "
                  f"{cells[best[kind]]:.0f} µs CPU per request (median); "
                  + ", ".join(f"{t}: {us:.0f}" for t, us in sorted(cells.items())))
        summary = {"threads": args.threads, "workers": args.workers, "rounds": args.rounds,
                   "seconds": args.seconds, "clients": args.clients, "client": client,
                   "figures": figures, "best": best}
        if args.json is not None:
            args.json.write_text(json.dumps(summary, indent=1) + "\n")
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
