"""Benchmark what ``tools.poodle`` costs per request, behind CherryPy's own HTTP server.

Run it from the repository root::

    python benchmarks/bench_tool.py            # the full run, about a minute
    python benchmarks/bench_tool.py --quick    # a smoke run of a few seconds
    apt-get install wrk                        # optional: the load generator it prefers

The same hello handler is mounted at ``/off/`` and at ``/on/``, with
``tools.poodle.on`` set for ``/on/`` only; that handler reads
``cherrypy.request.conn``, so the request uses what the tool checked out. The
pool is ``Pool(object, max_size=<server threads>)``: a connection that costs
nothing to make or give back and never runs out, so what differs between the
two URLs is the tool's own work.

The server is cheroot as ``cherrypy.server`` runs it (``environment =
"production"``, no log files) on 127.0.0.1 and a free port, in a subprocess
of this script: on a small machine that keeps the load generator off the
server's GIL and out of the server's CPU figures. Asked on its stdin, the
subprocess reports its own CPU time (``resource.getrusage``: user + system,
all threads, microsecond resolution), before and after each round.

The load generator is ``wrk`` (one thread, a fixed number of keep-alive
connections, whole seconds) when it is on the PATH, else a pool of Python
threads, each with one keep-alive ``http.client`` connection; the report
says which. The Python client takes much more of the machine's CPU than wrk,
CPU the server could have used, so its requests/s say less about the server
(the server's CPU per request is its own either way).

Rounds: after a warm-up of each URL, rounds of ``--seconds`` hit ``/off/``
and ``/on/`` in turn, the order swapping every round (off-on, on-off, ...) so
that a drift on a shared machine hurts both alike. Each round prints
requests/s, the server's CPU microseconds per request (its CPU time over the
responses served), the server's CPU use (100%: one core busy) and, for
``on``, the cost against the same round's ``off``. The ``summary:`` line
compares the medians over all rounds, and gives the min/median/max of each
round's own cost (how far one round can be trusted here); two ``target``
lines say whether the tool cost at most 3% of the throughput and of the
server CPU per request.

Mixed: on a shared machine a neighbour's burst can move one round by 10% or
more, more than the tool costs. So for a last ``--mixed`` seconds the requests
alternate between twin URLs (``/timed-on/``, ``/timed-off/``) on the same
connections, which therefore run under the same conditions, and the
server times each one with its thread's CPU clock (``time.thread_time_ns``,
from the WSGI call to the body's close, so the tool's give-back counts). The
``mixed:`` line gives the mean and median CPU per request of each, the
difference (the tool's own cost), and that difference as a share of the
server's whole CPU per request in the same phase (HTTP parsing and the
kernel's socket work included), with the difference's standard error
(Welch's, from the spread of the requests' own figures) and the share's 95%
interval.

``--check``: the pool also has a ``check`` (a stand-in round trip: it sleeps
1 ms, and is counted) with the default ``check_after`` (0.5 s), so the figures
are what a pool that validates connections pays on a busy server: the
skipped checks' clock reads and bookkeeping (issue 13). The server reports
how many checks ran.

A missed target is reported, not failed; the exit status is 1 only when a
request failed or the server did not come up.
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
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Optional

# Run as a plain script from a checkout: import the poodle next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: The issue's target: the tool costs at most this share.
TARGET = 0.03

#: Prefix of the lines the server subprocess writes for this script.
REPLY = "bench-tool-server "

#: Seconds the server may take to start, or to answer a question.
SERVER_TIMEOUT = 30.0

#: Limits on the command line, so that a typo cannot run for hours.
MAX_ROUNDS = 50
MAX_SECONDS = 60.0
MAX_CONNECTIONS = 256

BODY = "Hello, world!"

#: The URLs of the rounds, and the twin URLs of the mixed phase.
PATHS = {"off": "/off/", "on": "/on/"}
TIMED = {"off": "/timed-off/", "on": "/timed-on/"}

#: wrk's script for the mixed phase: each connection alternates the twins.
MIXED_LUA = """\
local paths = {{"{off}", "{on}"}}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, paths[i % 2 + 1])
end
""".format(**TIMED)


# -- the server (in a subprocess) ----------------------------------------------


class _Timed:
    """WSGI middleware: each request's thread CPU nanoseconds, appended to ``spent``."""

    def __init__(self, nextapp: Any, spent: list[int]) -> None:
        self.nextapp = nextapp
        self.spent = spent

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        t0 = time.thread_time_ns()
        return _TimedBody(self.nextapp(environ, start_response), t0, self.spent)


class _TimedBody:
    """The response body; ``close`` (where CherryPy ends the request) stops the clock."""

    def __init__(self, body: Iterable[bytes], t0: int, spent: list[int]) -> None:
        self.body = body
        self.t0 = t0
        self.spent = spent

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        try:
            if close is not None:
                close()
        finally:
            # list.append is atomic under the GIL: no lock, no lost requests.
            self.spent.append(time.thread_time_ns() - self.t0)


CHECKS = [0]  # how many times the stand-in check ran (--check)


def stand_in_check(conn: object) -> None:
    """A check that costs what a round trip to a database on loopback might."""
    CHECKS[0] += 1
    time.sleep(0.001)


def serve(port: int, threads: int, check: bool = False) -> int:
    """Serve the benchmark's URLs on 127.0.0.1:port until stdin closes.

    Answers ``stats`` on stdin with a line of JSON: CPU seconds so far, the
    pool's checkouts, and the CPU nanoseconds of each timed request since the
    last ``stats``.
    """
    import cherrypy

    from poodle_cherrypy import PoodlePlugin, Pool

    class Hello:
        @cherrypy.expose  # type: ignore[untyped-decorator]  # cherrypy is untyped
        def index(self) -> str:
            return BODY

    class HelloConn:
        @cherrypy.expose  # type: ignore[untyped-decorator]
        def index(self) -> str:
            conn = cherrypy.request.conn
            return BODY if conn is not None else "no connection"

    pool: Pool[object] = Pool(
        object, name="bench", max_size=threads, check=stand_in_check if check else None
    )
    PoodlePlugin(cherrypy.engine, {"default": pool}).subscribe()
    cherrypy.config.update(
        {
            "environment": "production",
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
            "server.socket_host": "127.0.0.1",
            "server.socket_port": port,
            "server.thread_pool": threads,
            "server.shutdown_timeout": 1,
        }
    )
    spent: dict[str, list[int]] = {"off": [], "on": []}
    for which, root in (("off", Hello()), ("on", HelloConn())):
        conf = {"/": {"tools.poodle.on": which == "on"}}
        cherrypy.tree.mount(root, PATHS[which].rstrip("/"), conf)
        app = cherrypy.tree.mount(type(root)(), TIMED[which].rstrip("/"), conf)
        app.wsgiapp.pipeline.insert(
            0, ("bench_timer", lambda nextapp, s=spent[which]: _Timed(nextapp, s))
        )
    cherrypy.engine.start()
    if cherrypy.engine.state != cherrypy.engine.states.STARTED:
        return 1

    def say(what: str) -> None:
        sys.stdout.write(REPLY + what + "\n")
        sys.stdout.flush()

    say("ready")
    try:
        for line in sys.stdin:
            if line.strip() == "stats":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                timed = {}
                for which, times in spent.items():
                    timed[which], times[:] = times[:], []
                say(json.dumps({
                    "cpu": usage.ru_utime + usage.ru_stime,
                    "checkouts": pool.stats().checkouts,
                    "checks": CHECKS[0],
                    "timed": timed,
                }))
            elif line.strip() == "stop":
                break
    finally:
        cherrypy.engine.exit()
    return 0


@dataclass
class ServerStats:
    """One answer to ``stats``."""

    cpu: float  # seconds, since the server started
    checkouts: int
    checks: int
    timed: dict[str, list[int]]  # thread CPU ns of each timed request since the last answer


class Server:
    """The server subprocess, and the questions this script asks it."""

    def __init__(self, port: int, threads: int, check: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), "--threads", str(threads)]
            + (["--check"] if check else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        try:
            self._read()  # "ready"
        except RuntimeError:
            self.close()
            raise

    def _read(self) -> str:
        """The next line the server wrote for us (others are passed on to stderr)."""
        out: IO[str] = self.proc.stdout  # type: ignore[assignment]
        deadline = time.monotonic() + SERVER_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                raise RuntimeError(f"the server (pid {self.proc.pid}) did not answer in time")
            line = out.readline()
            if not line:
                raise RuntimeError(
                    f"the server (pid {self.proc.pid}) exited with status {self.proc.wait()}"
                )
            if line.startswith(REPLY):
                return line[len(REPLY):].strip()
            sys.stderr.write(line)

    def stats(self) -> ServerStats:
        stdin: IO[str] = self.proc.stdin  # type: ignore[assignment]
        stdin.write("stats\n")
        stdin.flush()
        reply = json.loads(self._read())
        return ServerStats(
            float(reply["cpu"]), int(reply["checkouts"]), int(reply["checks"]), reply["timed"]
        )

    def close(self) -> None:
        """Stop the server; kill it if it does not go."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- load generators -----------------------------------------------------------


@dataclass
class Load:
    """What a load generator saw."""

    requests: int  # responses with status 200
    seconds: float
    errors: int  # socket errors and other statuses
    first_error: str = ""


def _wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    words = (out.stdout + out.stderr).split()
    return " ".join(words[:2]) if words else "wrk"


def wrk_load(
    wrk: str, url: str, seconds: float, connections: int, script: Optional[str] = None
) -> Load:
    """wrk on url for whole seconds: one thread, ``connections`` keep-alive connections."""
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s"]
    if script is not None:
        command += ["-s", script]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 30
    )
    text = out.stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
    if out.returncode != 0 or done is None:
        return Load(0, seconds, 1, f"wrk exited {out.returncode}: {text}{out.stderr}".strip())
    elapsed = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
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
    return Load(int(done.group(1)) - bad, elapsed, errors, first)  # wrk counts the bad too


class _Client(threading.Thread):
    """One keep-alive connection, sending GETs (taking ``paths`` in turn) until the deadline."""

    def __init__(
        self, port: int, paths: Sequence[str], start: threading.Barrier, seconds: float
    ) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.paths = paths
        self.start_line = start
        self.seconds = seconds
        self.requests = 0
        self.errors = 0
        self.first_error = ""

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        self.start_line.wait(SERVER_TIMEOUT)
        deadline = time.perf_counter() + self.seconds
        limit = int(self.seconds * 1_000_000)  # bounds the loop whatever the clock does
        expected = BODY.encode()
        n = 0
        while time.perf_counter() < deadline and n < limit:
            path = self.paths[n % len(self.paths)]
            n += 1
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status == 200 and body == expected:
                    self.requests += 1
                    continue
                problem = f"{path}: status {response.status}, {body[:80]!r}"
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{path}: {exc!r}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self.errors += 1
            self.first_error = self.first_error or problem
        conn.close()


def python_load(port: int, paths: Sequence[str], seconds: float, connections: int) -> Load:
    """``connections`` threads, each a keep-alive http.client connection, for ``seconds``."""
    start = threading.Barrier(connections + 1)
    clients = [_Client(port, paths, start, seconds) for _ in range(connections)]
    for client in clients:
        client.start()
    start.wait(SERVER_TIMEOUT)
    t0 = time.perf_counter()
    for client in clients:
        client.join(seconds + 30)
    elapsed = time.perf_counter() - t0
    stuck = sum(client.is_alive() for client in clients)
    first = next((c.first_error for c in clients if c.first_error), "")
    return Load(
        sum(c.requests for c in clients),
        elapsed,
        sum(c.errors for c in clients) + stuck,
        first or (f"{stuck} client thread(s) still running" if stuck else ""),
    )


# -- rounds ----------------------------------------------------------------------


@dataclass
class Round:
    """One URL's share of a round, or the mixed phase."""

    requests: int
    seconds: float
    cpu: float  # server CPU seconds
    errors: int
    first_error: str
    timed: dict[str, list[int]]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per request served."""
        return self.cpu / self.requests * 1e6 if self.requests else float("nan")

    @property
    def cpu_share(self) -> float:
        """Server CPU time over wall time (1.0: one core busy)."""
        return self.cpu / self.seconds if self.seconds else 0.0


def run_round(server: Server, load: Callable[[], Load]) -> Round:
    before = server.stats()
    seen = load()
    after = server.stats()
    return Round(
        seen.requests, seen.seconds, after.cpu - before.cpu, seen.errors, seen.first_error,
        after.timed,
    )


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument(
        "--rounds", type=_bounded(int, 1, MAX_ROUNDS), help="rounds of each URL (6)"
    )
    parser.add_argument(
        "--seconds", type=_bounded(float, 0.1, MAX_SECONDS), help="seconds per URL per round (3)"
    )
    parser.add_argument(
        "--mixed", type=_bounded(float, 0.1, MAX_SECONDS), help="seconds of the mixed phase (10)"
    )
    parser.add_argument(
        "--connections", type=_bounded(int, 1, MAX_CONNECTIONS), default=8,
        help="keep-alive connections of the load generator (8)",
    )
    parser.add_argument(
        "--threads", type=_bounded(int, 1, MAX_CONNECTIONS), default=10,
        help="server threads, and the pool's max_size (10)",
    )
    parser.add_argument(
        "--client", choices=("auto", "wrk", "python"), default="auto",
        help="the load generator: wrk if it is on the PATH (auto), or the Python one",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="give the pool a check (a 1 ms stand-in) with the default check_after",
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve, args.threads, args.check)
    rounds = args.rounds or (2 if args.quick else 6)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    mixed = args.mixed or (1.0 if args.quick else 10.0)
    warmup = 1.0
    connections = args.connections

    wrk = shutil.which("wrk") if args.client != "python" else None
    if args.client == "wrk" and wrk is None:
        parser.error("--client wrk: wrk is not on the PATH (apt-get install wrk)")

    print(
        f"poodle_cherrypy tool benchmark, {datetime.date.today().isoformat()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"CherryPy {_version('CherryPy')}, cheroot {_version('cheroot')} "
        f"on {platform.system()} {platform.machine()}, {os.cpu_count()} CPU(s)"
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        server = Server(port, args.threads, args.check)
    except RuntimeError as exc:
        print(f"FAILED: {exc}")
        return 1
    print(
        f"server: cheroot on {base} in a subprocess (pid {server.proc.pid}), "
        f"{args.threads} threads; pool: Pool(object, max_size={args.threads}"
        + (", check=<1 ms stand-in>, check_after=0.5)" if args.check else ")")
    )
    if wrk is not None:
        print(f"load: {_wrk_version(wrk)}, 1 thread, {connections} keep-alive connections")
    else:
        print(
            f"load: Python http.client, {connections} threads, one keep-alive connection "
            f"each ({'--client python' if args.client == 'python' else 'wrk is not on the PATH'})"
        )
    print(
        f"{rounds} round(s) of {seconds:g} s per URL, off and on in turn (the order swapped "
        f"every round), after a {warmup:g} s warm-up of each; then {mixed:g} s mixed"
    )

    workdir = tempfile.TemporaryDirectory(prefix="bench_tool-")
    lua = os.path.join(workdir.name, "mixed.lua")
    with open(lua, "w") as f:
        f.write(MIXED_LUA)

    def load(paths: Sequence[str], secs: float) -> Callable[[], Load]:
        if wrk is None:
            return lambda: python_load(port, paths, secs, connections)
        if len(paths) == 1:
            return lambda: wrk_load(wrk, base + paths[0], secs, connections)
        return lambda: wrk_load(wrk, base + "/", secs, connections, script=lua)

    failed = False
    results: dict[str, list[Round]] = {"off": [], "on": []}
    # Each round's on against the same round's off: how far one round's
    # figure can be trusted on this machine (the medians below pool them).
    paired: list[float] = []
    try:
        for paths in ([PATHS["off"]], [PATHS["on"]], [TIMED["off"], TIMED["on"]]):
            warm = run_round(server, load(paths, warmup))
            if warm.errors or not warm.requests:
                print(f"FAILED: warm-up of {' and '.join(paths)}: {warm.errors} error(s), "
                      f"{warm.first_error}")
                return 1
        print()
        print(
            f"  {'round':>5} {'tool':>4} {'requests/s':>11} {'CPU us/req':>11} "
            f"{'server CPU':>11} {'requests':>9} {'errors':>7} {'cost vs off':>22}"
        )
        checkouts = server.stats().checkouts
        for i in range(rounds):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            done: dict[str, Round] = {}
            for which in order:
                done[which] = run_round(server, load([PATHS[which]], seconds))
                results[which].append(done[which])
            for which in order:
                r = done[which]
                cost = ""
                off = done["off"]
                if which == "on" and r.requests and off.requests:
                    paired.append(r.cpu_us / off.cpu_us - 1)
                    cost = f"{1 - r.rps / off.rps:+.1%} rps, {paired[-1]:+.1%} CPU"
                line = (
                    f"  {i + 1:>5} {which:>4} {r.rps:>11.0f} {r.cpu_us:>11.1f} "
                    f"{r.cpu_share:>11.0%} {r.requests:>9} {r.errors:>7} {cost:>22}"
                )
                if r.errors:
                    failed = True
                    line += f"  first error: {r.first_error}"
                print(line)
        after = server.stats()
        checkouts = after.checkouts - checkouts
        checks = after.checks
        mix = run_round(server, load([TIMED["off"], TIMED["on"]], mixed))
        if mix.errors:
            failed = True
    finally:
        server.close()
        workdir.cleanup()
    on_requests = sum(r.requests for r in results["on"])
    print(
        f"  (cost vs off: the throughput lost and the CPU per request added against the "
        f"same round's off; the pool's checkouts in the rounds: {checkouts}, for "
        f"{on_requests} on requests served"
        + (f"; checks run: {checks} since the server started)" if args.check else ")")
    )

    off_rps = statistics.median(r.rps for r in results["off"])
    on_rps = statistics.median(r.rps for r in results["on"])
    off_us = statistics.median(r.cpu_us for r in results["off"])
    on_us = statistics.median(r.cpu_us for r in results["on"])
    rps_cost = 1 - on_rps / off_rps
    us_cost = on_us / off_us - 1
    paired.sort()
    rounds_spread = (
        f"; each round's own, min/median/max {paired[0]:+.1%}/"
        f"{statistics.median(paired):+.1%}/{paired[-1]:+.1%}" if paired else ""
    )
    print()
    print(
        f"summary: tool on vs off, median of {rounds} round(s): {on_rps:.0f} vs {off_rps:.0f} "
        f"requests/s (throughput cost {rps_cost:.1%}); server CPU {on_us:.1f} vs {off_us:.1f} "
        f"us/request ({on_us - off_us:+.1f} us, {us_cost:+.1%}{rounds_spread})"
    )
    spent = {which: [ns / 1e3 for ns in mix.timed[which]] for which in ("off", "on")}
    mixed_share: Optional[float] = None
    mixed_interval = ""
    if mix.errors or not all(spent.values()):
        print(f"mixed: FAILED: {mix.errors} error(s), {mix.first_error or 'no timed requests'}")
    else:
        mean = {which: statistics.fmean(us) for which, us in spent.items()}
        median = {which: statistics.median(us) for which, us in spent.items()}
        tool_us = mean["on"] - mean["off"]
        denominator = mix.cpu_us - tool_us / 2  # a request without the tool
        mixed_share = tool_us / denominator
        # The difference of two means of many requests: its standard error
        # (Welch's), and the share's 95% interval, from the requests' spread.
        error = (
            math.sqrt(sum(statistics.variance(us) / len(us) for us in spent.values()))
            if all(len(us) > 1 for us in spent.values()) else math.nan
        )
        low, high = (tool_us - 1.96 * error) / denominator, (tool_us + 1.96 * error) / denominator
        mixed_interval = f"{low:+.1%} to {high:+.1%}"
        print(
            f"mixed: {mix.requests} requests in {mix.seconds:.1f} s ({mix.rps:.0f}/s), on and "
            f"off alternating; worker thread CPU per request, mean {mean['on']:.1f} vs "
            f"{mean['off']:.1f} us (median {median['on']:.1f} vs {median['off']:.1f}): the "
            f"tool costs {tool_us:+.1f} us (standard error {error:.1f} us), {mixed_share:+.1%} "
            f"of the whole request's server CPU ({mix.cpu_us:.1f} us/request in this phase; "
            f"95% interval {mixed_interval})"
        )
    print(
        f"target, tool costs <= {TARGET:.0%} of throughput: "
        f"{_verdict(rps_cost <= TARGET)} ({rps_cost:.1%})"
    )
    print(
        f"target, tool costs <= {TARGET:.0%} of server CPU per request: "
        f"{_verdict(us_cost <= TARGET)} ({us_cost:+.1%}) in the rounds"
        + (f" ({len(paired)} rounds' own from {paired[0]:+.1%} to {paired[-1]:+.1%}); "
           if paired else "; ")
        + (
            f"{_verdict(mixed_share <= TARGET)} ({mixed_share:+.1%}, 95% interval "
            f"{mixed_interval}) mixed"
            if mixed_share is not None
            else "not measured mixed"
        )
    )
    if failed:
        print("FAILED: some requests failed (see the errors)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
