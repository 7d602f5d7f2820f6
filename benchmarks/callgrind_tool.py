#!/usr/bin/env python3
"""What ``tools.poodle`` costs per request in instructions, counted by callgrind.

On a shared machine wall-clock figures measure the neighbours too; the
instructions a request executes do not. This runs a process that serves
``n`` requests in-process (CherryPy's WSGI app called directly, no socket:
the hello handler of bench_tool.py, with and without ``tools.poodle.on``, on
a ``Pool(object)`` with its timing histograms) under ``valgrind
--tool=callgrind``, once with ``n`` and once with ``2n`` requests, and takes
the difference over ``n``: the start-up and shut-down instructions cancel
out. The tool's cost is ``on - off`` as a share of ``off``. The denominator
has no HTTP parsing (cheroot's), so the share is larger than against a
request served over a socket.

    .venv/bin/python benchmarks/callgrind_tool.py           # n = 2000, a minute or two
    .venv/bin/python benchmarks/callgrind_tool.py --quick   # n = 100
    .venv/bin/python benchmarks/callgrind_tool.py --annotate  # also callgrind_annotate's top

It prints each count, the two per-request figures and the share, then a line
of JSON. Without valgrind it says so and exits 1.
"""

from __future__ import annotations

import argparse
import http.client as http_client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
BODY = b"Hello, world!"


def serve_in_process(n: int, tool: bool, http: bool = False) -> int:
    """Serve ``n`` requests to the hello app (with the tool or without) in-process;
    with ``http``, serve them over HTTP instead (cheroot, on a free port it
    prints, until stdin closes)."""
    import cherrypy

    sys.path.insert(0, str(ROOT))
    from poodle_cherrypy import PoodlePlugin, Pool

    class Hello:
        @cherrypy.expose  # type: ignore[untyped-decorator]  # cherrypy is untyped
        def index(self) -> str:
            return "Hello, world!"

    class HelloConn:
        @cherrypy.expose  # type: ignore[untyped-decorator]
        def index(self) -> str:
            conn = cherrypy.request.conn
            return "Hello, world!" if conn is not None else "no connection"

    pool: Pool[object] = Pool(object, name="bench", max_size=4)
    PoodlePlugin(cherrypy.engine, {"default": pool}).subscribe()
    cherrypy.config.update({
        "environment": "production", "log.screen": False,
        "log.access_file": "", "log.error_file": "",
    })
    if http:
        cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": 0,
                                "server.thread_pool": 1, "server.shutdown_timeout": 1})
    else:
        cherrypy.server.unsubscribe()
    root = HelloConn() if tool else Hello()
    cherrypy.tree.mount(root, "/app", {"/": {"tools.poodle.on": tool}})
    cherrypy.engine.start()
    if http:
        try:
            print(f"port {cherrypy.server.bound_addr[1]}", flush=True)
            sys.stdin.read()
            checkouts = pool.stats().checkouts
        finally:
            cherrypy.engine.exit()
        if tool and checkouts != n:
            print(f"{checkouts} checkouts for {n} requests", file=sys.stderr)
            return 1
        return 0
    status: list[str] = []

    def start_response(code: str, headers: Any, exc_info: Any = None) -> None:
        status.append(code)

    try:
        for _ in range(n):
            environ = {
                "REQUEST_METHOD": "GET", "PATH_INFO": "/app/", "SCRIPT_NAME": "",
                "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
                "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1:8080",
                "REMOTE_ADDR": "127.0.0.1",
                "REMOTE_PORT": "50000", "wsgi.url_scheme": "http", "wsgi.input": _Empty(),
                "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
            }
            body = cherrypy.tree(environ, start_response)
            try:
                data = b"".join(body)
            finally:
                getattr(body, "close", lambda: None)()
            if data != BODY or status[-1][:3] != "200":
                print(f"unexpected answer {status[-1]} {data!r}", file=sys.stderr)
                return 1
        if tool and pool.stats().checkouts != n:
            print(f"{pool.stats().checkouts} checkouts for {n} requests", file=sys.stderr)
            return 1
    finally:
        cherrypy.engine.exit()
    return 0


class _Empty:
    """An empty ``wsgi.input``."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""


def count(valgrind: str, n: int, tool: bool, out_dir: Path,
          http: bool = False) -> tuple[int, Path]:
    """(instructions, callgrind output file) of a process serving ``n`` requests
    (over HTTP: this process is their client, one keep-alive connection)."""
    out = out_dir / f"callgrind.{'on' if tool else 'off'}.{n}"
    command = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}",
               sys.executable, __file__, "--serve", str(n), "--tool", "on" if tool else "off"]
    if http:
        command.append("--http")
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "0"}) as proc:
        try:
            if http:
                assert proc.stdout is not None and proc.stdin is not None
                line = proc.stdout.readline()
                if not line.startswith("port "):
                    raise SystemExit(f"the server did not start: {line!r}")
                conn = http_client.HTTPConnection("127.0.0.1", int(line.split()[1]), timeout=120)
                for _ in range(n):
                    conn.request("GET", "/app/")
                    response = conn.getresponse()
                    body = response.read()
                    if response.status != 200 or body != BODY:
                        raise SystemExit(f"unexpected answer {response.status} {body!r}")
                conn.close()
            _, stderr = proc.communicate(timeout=1800)
        finally:
            if proc.poll() is None:
                proc.kill()
    found = re.search(r"Collected\s*:\s*(\d+)", stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({proc.returncode}):\n{stderr[-3000:]}")
    return int(found.group(1)), out


def annotate(small: Path, large: Path, n: int, top: int) -> str:
    """callgrind_annotate's inclusive top of the ``large`` run (the ``n`` extra
    requests are most of its difference with ``small``)."""
    tool = shutil.which("callgrind_annotate")
    if tool is None:
        return "callgrind_annotate is not installed"
    out = subprocess.run([tool, "--inclusive=yes", str(large)], capture_output=True,
                         text=True, timeout=600, check=False)
    return "\n".join(out.stdout.splitlines()[:top + 25])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the measurement; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="requests of the smaller run")
    parser.add_argument("--quick", action="store_true", help="n = 100: a smoke run")
    parser.add_argument("--annotate", type=int, nargs="?", const=40, default=0,
                        metavar="LINES", help="print callgrind_annotate's top of each")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--http", action="store_true",
                        help="serve over HTTP (cheroot, 1 thread; the client is this process)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tool", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve_in_process(args.serve, args.tool == "on", args.http)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    n = 100 if args.quick else args.n
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    where = "over HTTP (cheroot, server side)" if args.http else "in-process (WSGI)"
    print(f"callgrind: instructions per hello request {where}, tool off and on; "
          f"runs of {n} and {2 * n} requests, the difference over {n}")
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tool in (False, True):
            which = "on" if tool else "off"
            small, small_out = count(valgrind, n, tool, Path(tmp), args.http)
            large, large_out = count(valgrind, 2 * n, tool, Path(tmp), args.http)
            per[which] = (large - small) / n
            print(f"tool {which:3}: {small:,} instructions for {n}, {large:,} for {2 * n}: "
                  f"{per[which]:,.0f} per request", flush=True)
            if args.annotate:
                print(annotate(small_out, large_out, n, args.annotate))
    share = (per["on"] - per["off"]) / per["off"] * 100
    print(f"tool's cost: {per['on'] - per['off']:,.0f} instructions per request, "
          f"{share:.2f}% of a hello request (target <= 3%: "
          f"{'met' if share <= 3 else 'missed'})")
    figures = {"n": n, "http": args.http, "instructions_off": round(per["off"]),
               "instructions_on": round(per["on"]), "tool_percent": round(share, 2)}
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
