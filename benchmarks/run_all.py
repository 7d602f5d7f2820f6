#!/usr/bin/env python3
"""Run every benchmark, keep its figures as JSON, and refresh docs/performance.rst.

    .venv/bin/python benchmarks/run_all.py                 # all, a few minutes
    .venv/bin/python benchmarks/run_all.py --quick --out /tmp/r --docs /tmp/r/performance.rst
    .venv/bin/python benchmarks/run_all.py --only deploy,callgrind

It runs, each in its own process and one after another: bench_pool.py,
bench_tool.py, callgrind_tool.py (in-process, then ``--http``), bench_app.py,
bench_deploy.py, bench_threads.py and bench_sqlalchemy.py (``--quick``
passes ``--quick`` to each: a smoke run whose figures mean nothing, and which
the docs then say so of). Each one's output goes to ``<out>/<name>.txt`` and
its figures to ``<out>/<name>.json``: the JSON a script prints or writes, else
its ``summary``, ``mixed`` and ``target`` lines; ``<out>/all.json`` holds them
all with the commands, the date and the machine (``--only`` replaces its
benchmarks' records there and keeps the others'). Then, in ``--docs`` (default
docs/performance.rst), the text between ``.. BEGIN figures:<name>`` and
``.. END figures:<name>`` is replaced by the new figures (a marker pair that is
not there is left alone; ``--no-docs`` touches nothing). The exit status is 1
when a benchmark failed; its block then says it failed, with its exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: name: (script and its arguments, whether it writes ``--json``), in the order they run.
BENCHMARKS: dict[str, tuple[tuple[str, ...], bool]] = {
    "pool": (("bench_pool.py",), False),
    "tool": (("bench_tool.py",), False),
    "callgrind": (("callgrind_tool.py",), True),
    "callgrind_http": (("callgrind_tool.py", "--http"), True),
    "app": (("bench_app.py",), False),
    "deploy": (("bench_deploy.py",), True),
    "threads": (("bench_threads.py",), True),
    "sqlalchemy": (("bench_sqlalchemy.py",), True),
}

#: The lines of a script's output kept as its figures when it prints no JSON.
KEPT = re.compile(r"^(summary:|mixed:|target|ratio|median|  poodle|  LifoQueue)")


def run(name: str, out: Path, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one benchmark; its record (command, exit status, seconds, figures)."""
    (script, *arguments), writes_json = BENCHMARKS[name]
    command = [sys.executable, str(HERE / script), *arguments]
    if quick:
        command.append("--quick")
    json_path = out / f"{name}.json"
    if writes_json:
        command += ["--json", str(json_path)]
    started = time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, stdin=subprocess.DEVNULL, check=False)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode, stderr = -1, f"timed out after {timeout:g} s"
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    seconds = time.monotonic() - started
    (out / f"{name}.txt").write_text(stdout + stderr)
    figures: Any = None
    if returncode == 0:
        if writes_json:
            figures = json.loads(json_path.read_text())
        else:
            last = stdout.strip().splitlines()[-1:] or [""]
            try:
                figures = json.loads(last[0])
            except ValueError:
                figures = None
        if not isinstance(figures, dict):
            figures = {"lines": [line for line in stdout.splitlines() if KEPT.match(line)]}
        json_path.write_text(json.dumps(figures, indent=1) + "\n")
    display = " ".join(["python", os.path.relpath(command[1], ROOT), *command[2:]])
    if writes_json:
        display = display.replace(f" --json {json_path}", "")
    return {"command": display, "returncode": returncode, "seconds": round(seconds, 1),
            "figures": figures, "error": None if returncode == 0 else (stderr or stdout)[-2000:]}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows,
                                                                            strict=False)]
    rule = "  ".join("=" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [rule, line(header), rule, *(line(r) for r in rows), rule]


def _deploy_rst(f: dict[str, Any]) -> list[str]:
    def mmm(spread: dict[str, float], fmt: str = "{:.0f}") -> str:
        return "/".join(fmt.format(spread[k]) for k in ("min", "median", "max"))

    rows = []
    for name, fig in f["figures"].items():
        rows.append([name, mmm(fig["app"]), mmm(fig["postgres"]), mmm(fig["pgbouncer"]),
                     mmm(fig["rate"]), mmm(fig["p99"], "{:.1f}")])
    r = f["ratios"]
    added = f["pgbouncer_added_us"]
    return [
        f"gunicorn gthread, {f['threads']} threads and a pool of {f['threads']} per worker, "
        f"{f['clients']} keep-alive clients ({f['client']}), {f['rounds']} alternated rounds "
        f"of {f['seconds']:g} s; CPU µs per request (min/median/max over the rounds), from "
        f"``/proc/<pid>/stat``:",
        "",
        *_table(["server", "app CPU µs", "PostgreSQL µs", "PgBouncer µs", "requests/s",
                 "p99 ms"], rows),
        "",
        f"- 2 workers' CPU per request / 1 worker's (app processes, medians): direct "
        f"**{r['cpu_workers_direct']:.2f}x**, through PgBouncer "
        f"**{r['cpu_workers_pgbouncer']:.2f}x** (target <= 1.10).",
        f"- PgBouncer's added CPU per request (app + PostgreSQL + PgBouncer): 1 worker "
        f"{added['1']:+.0f} µs, 2 workers {added['2']:+.0f} µs.",
        f"- requests/s, 2 workers / 1: direct {r['workers_direct']:.2f}x, through PgBouncer "
        f"{r['workers_pgbouncer']:.2f}x (secondary: the load generator shares the cores).",
    ]


def _threads_rst(f: dict[str, Any]) -> list[str]:
    kinds = [f"gunicorn w{w}" for w in f["workers"]] + (
        ["cheroot"] if any(name.startswith("cheroot") for name in f["figures"]) else [])
    header = ["threads"]
    for kind in kinds:
        header += [f"{kind} CPU µs", f"{kind} p99 ms"]
    rows = []
    for threads in f["threads"]:
        row = [str(threads)]
        for kind in kinds:
            fig = f["figures"][f"{kind} t{threads}"]
            row += [f"{fig['app']['median']:.0f}", f"{fig['p99']['median']:.1f}"]
        rows.append(row)
    return [
        f"A pool of as many connections as threads per process, {f['clients']} keep-alive "
        f"clients ({f['client']}), {f['rounds']} alternated rounds of {f['seconds']:g} s; "
        f"app CPU µs per request and p99, medians over the rounds:",
        "",
        *_table(header, rows),
        "",
        "- fewest CPU µs per request: " + "; ".join(
            f"{kind} at {f['best'][kind]} thread(s)" for kind in kinds) + ".",
    ]


def _callgrind_rst(f: dict[str, Any]) -> list[str]:
    where = ("served over HTTP (cheroot, server side)" if f.get("http")
             else "in-process (WSGI, no HTTP parsing)")
    return [
        f"Instructions per hello request {where}, counted by callgrind (runs of "
        f"{f['n']} and {2 * f['n']} requests, the difference over {f['n']}): tool off "
        f"{f['instructions_off']:,}, tool on {f['instructions_on']:,}: the tool costs "
        f"**{f['tool_percent']:.2f}%** (target <= 3%).",
    ]


def _sqlalchemy_rst(f: dict[str, Any]) -> list[str]:
    def mmm(spread: dict[str, float], fmt: str = "{:.0f}") -> str:
        return "/".join(fmt.format(spread[k]) for k in ("min", "median", "max"))

    c, o, r = f["cpu_phase"], f["overload_phase"], f["ratios"]
    return [
        f"{f['rounds']} alternated rounds of {f['seconds']:g} s per configuration and phase, "
        f"client {f['client']}; min/median/max over the rounds:",
        "",
        f"- server CPU µs per ``session.get`` request ({c['threads']} threads, pool of "
        f"{c['pool_size']}, {c['clients']} clients): poodle {mmm(f['cpu_us']['poodle'])}, "
        f"QueuePool {mmm(f['cpu_us']['queuepool'])}; poodle/QueuePool **{r['cpu']:.3f}** "
        f"(target <= 1.05).",
        f"- worst wait, pool of {o['pool_size']} and {o['clients']} clients, "
        f"pg_sleep({o['sleep_ms'] / 1000:g}) per request, each round's max latency in ms: "
        f"poodle {mmm(f['overload_max_ms']['poodle'], '{:.1f}')}, QueuePool "
        f"{mmm(f['overload_max_ms']['queuepool'], '{:.1f}')}; poodle/QueuePool "
        f"**{r['worst_wait']:.3f}** (target <= 0.5); p99 ratio {r['p99']:.3f}.",
    ]


def _lines_rst(f: dict[str, Any]) -> list[str]:
    if "lines" in f:
        return ["::", "", *(f"    {line}" for line in f["lines"])] if f["lines"] else [
            "(no summary lines)"]
    return ["::", "", f"    {json.dumps(f)}"]


RENDER: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "deploy": _deploy_rst, "threads": _threads_rst, "callgrind": _callgrind_rst,
    "callgrind_http": _callgrind_rst, "sqlalchemy": _sqlalchemy_rst,
}


def block(name: str, record: dict[str, Any], stamp: str, quick: bool) -> str:
    """The reStructuredText that goes between ``name``'s markers."""
    head = [f"*{stamp}*, ``{record['command']}`` ({record['seconds']:g} s)"
            + (": a ``--quick`` smoke run, its figures mean nothing." if quick else ":"), ""]
    if record["returncode"] != 0:
        return "\n".join([*head, f"The run failed (exit status {record['returncode']})."])
    return "\n".join([*head, *RENDER.get(name, _lines_rst)(record["figures"])])


def _between(body: str) -> Callable[[re.Match[str]], str]:
    def sub(match: re.Match[str]) -> str:
        return f"{match.group(1)}\n{body}\n\n{match.group(2)}"

    return sub


def refresh(doc: Path, blocks: dict[str, str]) -> list[str]:
    """Replace each named block of ``doc`` between its markers; the names replaced."""
    text = doc.read_text()
    done = []
    for name, body in blocks.items():
        pattern = re.compile(
            rf"(^\.\. BEGIN figures:{re.escape(name)}\n).*?(^\.\. END figures:{re.escape(name)}$)",
            re.MULTILINE | re.DOTALL,
        )
        text, count = pattern.subn(_between(body), text)
        if count:
            done.append(name)
    doc.write_text(text)
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmarks; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="where the figures go (default benchmarks/results)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "performance.rst",
                        help="the page whose figure blocks are refreshed")
    parser.add_argument("--no-docs", action="store_true", help="leave the docs alone")
    parser.add_argument("--only", help=f"a comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds each benchmark may take (default 1800)")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown or not names:
            parser.error(f"--only: unknown benchmark(s) {unknown or args.only!r}; "
                         f"the benchmarks are {', '.join(BENCHMARKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = (f"{datetime.date.today().isoformat()}, {platform.node() or 'this machine'}, "
             f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    records: dict[str, Any] = {}
    for name in names:
        print(f"running {name} ...", flush=True)
        records[name] = record = run(name, args.out, args.quick, args.timeout)
        status = "ok" if record["returncode"] == 0 else f"FAILED ({record['returncode']})"
        print(f"  {name}: {status} in {record['seconds']:g} s; output in "
              f"{args.out / (name + '.txt')}", flush=True)
    everything = args.out / "all.json"
    kept: dict[str, Any] = {}
    if args.only and everything.exists():
        # --only refreshes its benchmarks' records and keeps the others'.
        with contextlib.suppress(ValueError, KeyError, TypeError):
            kept = dict(json.loads(everything.read_text())["benchmarks"])
    everything.write_text(json.dumps(
        {"stamp": stamp, "quick": args.quick, "benchmarks": {**kept, **records}},
        indent=1) + "\n")
    if not args.no_docs:
        done = refresh(args.docs, {n: block(n, r, stamp, args.quick) for n, r in records.items()})
        print(f"refreshed {args.docs}: {', '.join(done) or 'no figure markers found'}")
    return 0 if all(r["returncode"] == 0 for r in records.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
