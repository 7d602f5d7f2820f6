"""The sample app on the real PostgreSQL, under load: an outage, and a long run.

``python -m sample_app`` runs in a subprocess (cheroot on a free port, a
temporary working directory), its table in this session's schema, and client
threads in the test talk HTTP to it over keep-alive connections.

- An outage during a bounded load run: the app reaches PostgreSQL through a
  :class:`~tcpproxy.TCPProxy`, which refuses (connects refused, links cut)
  for a few seconds, then forwards again. While it is down the app must
  answer 503 with ``Retry-After``, fast (the circuit breaker), and come back
  by itself, the same process, with nothing left checked out.
- A long run (``POODLE_LOAD_SECONDS``, 60 s unless set; CI runs the full 60)
  of 64 clients against a pool of 8: no 500, nothing left checked out, and
  the process's memory flat after the warm-up.

Both print their figures (``pytest -s`` shows them).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import pytest
from appserver import Server
from conftest import wait_until, with_search_path
from tcpproxy import TCPProxy

pytestmark = [pytest.mark.services, pytest.mark.slow]

#: Seconds of the long run; set it lower to try the test locally.
LOAD_SECONDS = float(os.environ.get("POODLE_LOAD_SECONDS", "60"))
#: How long a client waits for an answer before it counts as none: past any
#: pool timeout here, so a request that hangs shows as such.
CLIENT_TIMEOUT = 60.0
#: What a join or a bounded wait allows beyond the time it should take.
GRACE = 60.0


# -- the app and its clients ---------------------------------------------------


def postgres_url(dsn: str, schema: str, port: Optional[int] = None, **params: object) -> str:
    """``dsn`` with its tables in ``schema``, to ``port`` if given, with libpq
    ``params`` (``connect_timeout=5``) added."""
    url = urlsplit(dsn)
    if port is not None:
        userinfo = url.netloc.rpartition("@")[0]
        url = url._replace(netloc=f"{userinfo}{'@' if userinfo else ''}{url.hostname}:{port}")
    text = with_search_path(urlunsplit(url), schema)  # it has a query from here on
    return text + "".join(f"&{name}={value}" for name, value in params.items())


def conf_value(value: object) -> str:
    """``value`` as a CherryPy config file writes it: a Python literal, ``%`` doubled."""
    return repr(value).replace("%", "%%")


@pytest.fixture
def schema(postgres_dsn: str, postgres_schema: str) -> str:
    """This session's schema, with no ``docs`` table in it yet."""
    import psycopg  # postgres_dsn has made sure it is there

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {postgres_schema}.docs")
    return postgres_schema


@pytest.fixture
def start_app(tmp_path: Path, free_port: int) -> Iterator[Callable[..., Server]]:
    """``start_app(config, *args)``: ``python -m sample_app`` on ``free_port`` with
    ``config`` as its ``--config`` file, started; killed at the end if still up."""
    servers: list[Server] = []

    def start(config: str, *args: str) -> Server:
        path = tmp_path / "app.conf"
        path.write_text(config)
        server = Server(["--port", str(free_port), "--config", str(path), *args], tmp_path)
        servers.append(server)
        server.wait_for("Bus STARTED")
        return server

    yield start
    for server in servers:
        server.kill()


@dataclass(frozen=True)
class Outcome:
    """One request as a client saw it."""

    method: str
    start: float
    end: float
    status: int
    """0: no answer (the connection failed, or CLIENT_TIMEOUT ran out)."""
    problem: str = ""
    """What is wrong with the answer's form (not JSON, a 503 with no Retry-After...)."""

    @property
    def latency(self) -> float:
        return self.end - self.start


class Client:
    """One keep-alive HTTP connection to the app; every request timed and its
    form checked (JSON always; a 503 with ``Retry-After`` and ``"unavailable"``)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)

    def call(self, method: str, path: str, body: Any = None) -> tuple[Outcome, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        start = time.monotonic()
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()  # the next request connects afresh
            return Outcome(method, start, time.monotonic(), 0, repr(exc)), None
        end = time.monotonic()
        problem = ""
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = None
        if response.getheader("Content-Type") != "application/json" or answer is None:
            problem = f"not JSON: {payload[:200]!r}"
        elif response.status >= 400 and "error" not in answer:
            problem = f"an error without its name: {answer!r}"
        elif response.status == 503:
            retry_after = response.getheader("Retry-After", "")
            if not (retry_after.isdigit() and int(retry_after) >= 1):
                problem = f"a 503 with Retry-After {retry_after!r}"
            elif answer["error"] != "unavailable":
                problem = f"a 503 saying {answer!r}"
        return Outcome(method, start, end, response.status, problem), answer

    def close(self) -> None:
        self.conn.close()


def pool_status(port: int) -> dict[str, Any]:
    """The pool's stats and sampled history from ``/status``."""
    client = Client(port)
    try:
        outcome, answer = client.call("GET", "/status")
    finally:
        client.close()
    assert outcome.status == 200 and not outcome.problem, (outcome, answer)
    return {
        "stats": answer["pools"]["default"],
        "history": answer["history"]["pools"].get("default", {}),
    }


def wait_for_nothing_checked_out(port: int) -> dict[str, Any]:
    """Poll ``/status`` until nothing is in use or waiting (bounded); the stats."""
    seen: list[dict[str, Any]] = []

    def settled() -> bool:
        stats = pool_status(port)["stats"]
        seen.append(stats)
        return stats["in_use"] == 0 and stats["waiting"] == 0 and stats["pending"] == 0

    wait_until(settled, 10, "nothing checked out (last seen: see the assertion below)")
    return seen[-1]


def create_docs(port: int, ids: Sequence[str]) -> None:
    client = Client(port)
    try:
        for doc_id in ids:
            outcome, answer = client.call("PUT", f"/docs/{doc_id}", {"n": 0})
            assert outcome.status == 201, (outcome, answer)
    finally:
        client.close()


def run_clients(
    count: int, work: Callable[[int, Client], None], port: int
) -> list[threading.Thread]:
    """Start ``count`` threads running ``work(i, client)``, each with its own client."""

    def target(i: int) -> None:
        client = Client(port)
        try:
            work(i, client)
        finally:
            client.close()

    threads = [
        threading.Thread(target=target, args=(i,), name=f"load-client-{i}", daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads: Sequence[threading.Thread], timeout: float) -> None:
    """Join every thread within ``timeout`` seconds in all; fail if one still runs."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [thread.name for thread in threads if thread.is_alive()]
    assert not alive, f"client threads still running after {timeout:g} s: {alive}"


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` (0 to 1) quantile of ``values`` (nearest rank); 0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid``, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def statuses(outcomes: Sequence[Outcome]) -> dict[int, int]:
    return dict(sorted(Counter(outcome.status for outcome in outcomes).items()))


def observe(port: int, seconds: float, circuits: Counter[str]) -> None:
    """Poll ``/status`` every 0.2 s for ``seconds``, counting the circuit states seen."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        circuits[pool_status(port)["stats"]["circuit"]] += 1
        time.sleep(0.2)


# -- an outage during a bounded load run -------------------------------------------

OUTAGE_CLIENTS = 8
OUTAGE_POOL_SIZE = 4  # fewer than the clients: they compete for the connections
OUTAGE_POOL_TIMEOUT = 10.0
NORMAL_SECONDS = 5.0  # of traffic before the outage
DOWN_SECONDS = 5.0
AFTER_SECONDS = 3.0  # of traffic once service is back
RECOVERY_LIMIT = 15.0
OUTAGE_DOCS = ("doc-0", "doc-1", "doc-2", "doc-3")


def outage_config(url: str) -> str:
    """The app's config file: the pool declared in the ``poodle`` namespace, its
    circuit breaker quick to open and to try again."""
    return "\n".join(
        [
            "[global]",
            "server.thread_pool = 16",  # more workers than clients: none waits for a thread
            'poodle.default.factory = "sample_app.db:connect_postgresql"',
            f"poodle.default.args = ({conf_value(url)},)",
            f"poodle.default.max_size = {OUTAGE_POOL_SIZE}",
            f"poodle.default.timeout = {OUTAGE_POOL_TIMEOUT}",
            'poodle.default.reset = "sample_app.db:rollback"',
            'poodle.default.broken = "poodle_cherrypy.drivers:psycopg_broken"',
            "poodle.default.fail_fast_after = 2",
            "poodle.default.retry_delay = 0.2",
            "poodle.default.max_retry_delay = 1.0",
            "",
        ]
    )


def test_outage_under_load_answers_503_fast_and_recovers_by_itself(
    schema: str,
    postgres_dsn: str,
    tcp_proxy: Callable[[int], TCPProxy],
    start_app: Callable[..., Server],
    free_port: int,
) -> None:
    proxy = tcp_proxy(urlsplit(postgres_dsn).port or 5432)
    url = postgres_url(postgres_dsn, schema, proxy.port, connect_timeout=5)
    server = start_app(outage_config(url))
    create_docs(free_port, OUTAGE_DOCS)

    outcomes: list[Outcome] = []  # appended to by every client (atomic in CPython)
    stop = threading.Event()
    hard_stop = time.monotonic() + NORMAL_SECONDS + DOWN_SECONDS + RECOVERY_LIMIT + GRACE

    def work(i: int, client: Client) -> None:
        n = 0
        while not stop.is_set() and time.monotonic() < hard_stop:
            doc = OUTAGE_DOCS[(i + n) % len(OUTAGE_DOCS)]
            n += 1
            outcome, answer = client.call("GET", f"/docs/{doc}")
            outcomes.append(outcome)
            if outcome.status == 200:
                outcome, _ = client.call("PUT", f"/docs/{doc}", {"_rev": answer["_rev"], "n": n})
                outcomes.append(outcome)

    circuits: Counter[str] = Counter()  # seen while down
    started = time.monotonic()
    threads = run_clients(OUTAGE_CLIENTS, work, free_port)
    try:
        observe(free_port, NORMAL_SECONDS, Counter())
        cut_at = time.monotonic()
        proxy.refuse()  # PostgreSQL is "down": connects refused, every link cut
        cut_done = time.monotonic()
        observe(free_port, DOWN_SECONDS, circuits)
        forward_at = time.monotonic()
        proxy.forward()

        def back() -> bool:
            return any(
                200 <= o.status < 300 and o.start >= forward_at for o in outcomes[-200:]
            )

        wait_until(back, RECOVERY_LIMIT + GRACE, "a 2xx after forward()")
        observe(free_port, AFTER_SECONDS, Counter())
    finally:
        stop.set()
        join_all(threads, CLIENT_TIMEOUT + GRACE)
    ended = time.monotonic()
    stats = wait_for_nothing_checked_out(free_port)
    alive = server.proc.poll() is None

    def ok(o: Outcome) -> bool:
        return 200 <= o.status < 300 or o.status == 409

    before = [o for o in outcomes if o.end < cut_at]
    at_cut = [o for o in outcomes if o.start < cut_done and o.end >= cut_at]
    failed_at_cut = [o for o in at_cut if not ok(o)]
    down = [o for o in outcomes if o.start >= cut_done and o.end <= forward_at]
    down_503 = sorted(o.latency for o in down if o.status == 503)
    recovered = min(o.end for o in outcomes if ok(o) and o.start >= forward_at)
    after = [o for o in outcomes if o.start >= recovered]
    all_statuses = statuses(outcomes)
    served = sum(1 for o in outcomes if ok(o))
    print(
        f"\noutage: {len(outcomes)} requests in {ended - started:.1f} s by {OUTAGE_CLIENTS}"
        f" clients, pool of {OUTAGE_POOL_SIZE}; down {forward_at - cut_at:.1f} s"
        f"\n  statuses        {all_statuses} ({served} served: 2xx or 409)"
        f"\n  before the cut  {statuses(before)}"
        f"\n  at the cut      {len(at_cut)} in flight, failed: {statuses(failed_at_cut)}"
        f"\n  while down      {statuses(down)}; 503 latency p50 {ms(percentile(down_503, 0.5))}"
        f", max {ms(down_503[-1] if down_503 else 0.0)}; circuit seen {dict(circuits)}"
        f"\n  recovery        first 2xx {recovered - forward_at:.2f} s after forward()"
        f"\n  after recovery  {statuses(after)}"
        f"\n  pool            created {stats['created']}, discarded {stats['discarded']},"
        f" unavailable {stats['unavailable']}, connect errors {stats['errors']},"
        f" circuit {stats['circuit']}"
    )

    assert [o for o in outcomes if o.status == 0] == [], "requests without an answer"
    assert [o for o in outcomes if o.problem] == [], "answers of the wrong form"
    assert before and all(ok(o) for o in before), statuses(before)
    # The cut fails the requests holding a connection, and each connection that
    # sat idle fails its next user, once: at most one 500 per pooled connection.
    assert all_statuses.get(500, 0) <= OUTAGE_POOL_SIZE, all_statuses
    assert set(statuses(failed_at_cut)) <= {500, 503}
    assert max((o.end - cut_at for o in failed_at_cut), default=0.0) < OUTAGE_POOL_TIMEOUT / 2
    # Down: nothing served, and the many 503s come fast, from the open circuit
    # rather than after the pool's timeout.
    assert set(statuses(down)) <= {500, 503}, statuses(down)
    assert len(down_503) >= 20, statuses(down)
    assert down_503[-1] < OUTAGE_POOL_TIMEOUT / 2
    assert percentile(down_503, 0.5) < 0.5
    assert circuits["open"] + circuits["half-open"] > 0, circuits
    # Back by itself, the same process, and stays back.
    assert recovered - forward_at < RECOVERY_LIMIT
    assert after and all(ok(o) for o in after), statuses(after)
    assert alive
    assert (stats["in_use"], stats["waiting"], stats["circuit"]) == (0, 0, "closed"), stats
    assert stats["unavailable"] > 0 and stats["created"] > 1, stats
    assert server.stop() == 0
    assert "".join(server.log).count("Bus STARTED") == 1


# -- a long run: 64 clients, a pool of 8 -------------------------------------------

LOAD_CLIENTS = 64
LOAD_POOL_SIZE = 8
LOAD_THREADS = 64  # cheroot's workers: as many as the clients, who then wait for the pool
LOAD_DOCS = tuple(f"load-{n:02d}" for n in range(32))
WARMUP_SECONDS = min(15.0, LOAD_SECONDS / 4)
RSS_SAMPLE_SECONDS = 5.0
RSS_GROWTH_LIMIT = 0.10


def test_long_run_64_clients_on_a_pool_of_8_no_500_no_leak_memory_flat(
    schema: str,
    postgres_dsn: str,
    start_app: Callable[..., Server],
    free_port: int,
) -> None:
    url = postgres_url(postgres_dsn, schema)
    server = start_app(
        f"[global]\nserver.thread_pool = {LOAD_THREADS}\n",
        "--database", url, "--pool-size", str(LOAD_POOL_SIZE),
    )
    pid = server.proc.pid
    create_docs(free_port, LOAD_DOCS)

    results: list[list[Outcome]] = [[] for _ in range(LOAD_CLIENTS)]
    started = time.monotonic()
    deadline = started + LOAD_SECONDS

    def work(i: int, client: Client) -> None:
        rng = random.Random(i)
        mine = results[i]
        while time.monotonic() < deadline:
            doc = rng.choice(LOAD_DOCS)
            outcome, answer = client.call("GET", f"/docs/{doc}")
            mine.append(outcome)
            if outcome.status == 200 and rng.random() < 0.5:
                outcome, _ = client.call("PUT", f"/docs/{doc}", {"_rev": answer["_rev"], "by": i})
                mine.append(outcome)

    threads = run_clients(LOAD_CLIENTS, work, free_port)
    rss: list[tuple[float, int]] = []  # (seconds since the start, KiB)
    try:
        at = WARMUP_SECONDS
        while at < LOAD_SECONDS:
            time.sleep(max(0.0, started + at - time.monotonic()))  # a measurement's time
            rss.append((time.monotonic() - started, rss_kib(pid)))
            at += RSS_SAMPLE_SECONDS
    finally:
        join_all(threads, max(0.0, deadline - time.monotonic()) + CLIENT_TIMEOUT + GRACE)
    rss.append((time.monotonic() - started, rss_kib(pid)))
    status = pool_status(free_port)
    stats = wait_for_nothing_checked_out(free_port)

    outcomes = [o for mine in results for o in mine]
    took = max(o.end for o in outcomes) - started
    latencies = [o.latency for o in outcomes]
    counts = statuses(outcomes)
    history = status["history"]
    warm, end = rss[0][1], rss[-1][1]
    growth = (end - warm) / warm
    print(
        f"\nload: {LOAD_CLIENTS} clients, pool of {LOAD_POOL_SIZE}, {LOAD_THREADS} server"
        f" threads, {took:.1f} s: {len(outcomes)} requests, {len(outcomes) / took:.0f}"
        f" requests/s"
        f"\n  statuses  {counts}"
        f"\n  latency   p50 {ms(percentile(latencies, 0.5))}, p99"
        f" {ms(percentile(latencies, 0.99))}, max {ms(max(latencies))}"
        f"\n  pool      peak in_use {max(history.get('in_use', [0]))}, peak waiting"
        f" {max(history.get('waiting', [0]))} (1 s samples); created {stats['created']},"
        f" checkouts {stats['checkouts']}, timeouts {stats['timeouts']}"
        f"\n  RSS       {warm} KiB after {rss[0][0]:.0f} s warm-up, {end} KiB at the end"
        f" ({growth:+.1%}); samples {[kib for _, kib in rss]}"
    )

    assert [o for o in outcomes if o.status == 0] == [], "requests without an answer"
    assert [o for o in outcomes if o.problem] == [], "answers of the wrong form"
    assert counts.get(500, 0) == 0, counts
    assert set(counts) <= {200, 201, 409, 503}, counts
    assert counts.get(200, 0) > len(outcomes) / 2, counts
    assert counts.get(503, 0) <= len(outcomes) / 100, counts  # a 30 s pool timeout ran out
    assert (stats["in_use"], stats["waiting"], stats["closed"]) == (0, 0, False), stats
    assert stats["size"] <= LOAD_POOL_SIZE, stats
    assert growth < RSS_GROWTH_LIMIT, rss
    assert server.stop() == 0
