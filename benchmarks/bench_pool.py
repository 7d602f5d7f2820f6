"""Benchmark poodle's ``Pool`` against a bare ``queue.LifoQueue`` and other Python pools.

Run it from the repository root, with the benchmark extra installed::

    pip install -e '.[benchmark]'
    python benchmarks/bench_pool.py            # the full run, well under 2 minutes
    python benchmarks/bench_pool.py --quick    # a smoke run of a few seconds

Every contender runs in this one process, on the same machine, in the same run:

- ``queue.LifoQueue`` get/put: the baseline (ratio 1.0);
- poodle: ``with pool.get() as conn:``;
- psycopg_pool ``ConnectionPool``: ``with pool.connection() as conn:``;
- SQLAlchemy ``QueuePool``: ``with pool.connect() as conn:``;
- DBUtils ``PooledDB``: ``with pool.dedicated_connection() as conn:``;
- redis-py ``BlockingConnectionPool``: ``get_connection()`` / ``release()``.

No server is involved: each pool gets a stand-in connection that only fakes
the I/O, so what is timed is the pool's own checkout/return machinery with
its default options (SQLAlchemy and DBUtils roll back on return, psycopg_pool
commits on leaving the block, redis-py checks the connection on checkout:
each of those runs for real and costs no I/O). A library that is not
installed is reported as skipped; one that fails makes the exit status 1.

Two scenarios, each printed as a table:

1. One thread: nanoseconds per checkout/return cycle, the best of several
   repeats (``time.perf_counter_ns``; the repeats of all contenders are
   interleaved so that a noisy neighbour hurts them alike), and the ratio to
   the LifoQueue (lower is better). The loop overhead is included everywhere.
2. Many threads (16) sharing few connections (4) for a fixed window, each
   releasing the GIL inside the block (``time.sleep(0)``). The window is cut
   into slices that take turns across the pools (fresh threads each slice),
   so that a noisy moment does not land on one pool alone. Throughput and its
   ratio to the LifoQueue (higher is better), the median, 99th percentile
   and maximum wait to get a connection (timed around the checkout), and the
   spread of the per-thread cycle counts (the largest deviation from the
   mean, in %). A pool that lets a returning thread take its connection
   straight back starves the others: their one wait lasts the whole slice.

Then one line per poodle target says whether it held in this run: one
thread at most 1.0x the LifoQueue, and at most 0.85x (the pool's timing
histograms are always on: this is the cost they may add); no starved thread (every thread's count
within 20% of the mean); a max wait no worse than psycopg_pool's; a
throughput at least psycopg_pool's. Missed targets are reported, not failed:
on a shared machine a single run can miss by noise, so compare several runs.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

# Run as a plain script from a checkout: import the poodle next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from poodle_cherrypy import Pool

#: Seconds any contender may block for a connection: far beyond any window,
#: so hitting it means a stall, which is reported.
TIMEOUT = 10.0

SINGLE_HEADER = "Scenario 1: one thread, checkout/return cycle"
THREADS_HEADER = "Scenario 2: threads sharing connections, sleep(0) inside the block"

#: The largest deviation of a thread's cycle count from the mean that still
#: counts as fair, for the "no starved thread" target.
FAIR_SPREAD = 0.20

#: The one-thread target with the pool timing every checkout and return
#: (issue 12): the wait, use and connect-time histograms are always on.
TIMED_RATIO = 0.85


# -- stand-in connections: no server, no I/O ---------------------------------


class StandInConnection:
    """A DB-API 2 connection with nothing behind it: what a pool sees of one."""

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


class StandInDBAPI:
    """A DB-API 2 module as DBUtils inspects one (``threadsafety``, ``connect``)."""

    apilevel = "2.0"
    threadsafety = 1
    paramstyle = "qmark"

    class Error(Exception):
        pass

    class InterfaceError(Error):
        pass

    class OperationalError(Error):
        pass

    class InternalError(Error):
        pass

    @staticmethod
    def connect() -> StandInConnection:
        return StandInConnection()


# -- the contenders ----------------------------------------------------------


@dataclass
class Contender:
    """One pool, and the calls that check a connection out and back in.

    Either ``lease`` (a context manager factory: ``with lease() as conn:``) or
    ``acquire`` and ``release`` (``conn = acquire(); release(conn)``) is set.
    """

    name: str
    usage: str
    lease: Optional[Callable[[], AbstractContextManager[Any]]] = None
    acquire: Optional[Callable[[], Any]] = None
    release: Optional[Callable[[Any], Any]] = None
    close: Callable[[], Any] = lambda: None


def lifo_queue(size: int) -> Contender:
    q: queue.LifoQueue[StandInConnection] = queue.LifoQueue(maxsize=size)
    for _ in range(size):
        q.put(StandInConnection())
    return Contender(
        "LifoQueue",
        "q.get(); q.put(conn)",
        acquire=lambda: q.get(timeout=TIMEOUT),
        release=q.put,
    )


def poodle(size: int) -> Contender:
    pool: Pool[StandInConnection] = Pool(
        StandInConnection, name="bench", min_size=size, max_size=size, timeout=TIMEOUT
    )
    pool.open(wait=True)
    return Contender("poodle", "with pool.get()", lease=pool.get, close=pool.close)


def psycopg_pool(size: int) -> Contender:
    import psycopg
    import psycopg_pool
    from psycopg import pq

    class StandInPGconn:
        """The libpq connection object, idle and connected, with no socket."""

        status = pq.ConnStatus.OK
        transaction_status = pq.TransactionStatus.IDLE
        socket = -1
        notice_handler: Any = None
        notify_handler: Any = None

        def finish(self) -> None:
            self.status = pq.ConnStatus.BAD

    class StandInPgConnection(psycopg.Connection[Any]):
        """A real psycopg Connection on a fake libpq object: commit() on an idle
        connection returns before any I/O, as it does with a server."""

        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> StandInPgConnection:
            return cls(StandInPGconn())  # type: ignore[arg-type]

    pool = psycopg_pool.ConnectionPool(
        "",
        connection_class=StandInPgConnection,
        min_size=size,
        max_size=size,
        timeout=TIMEOUT,
        open=True,
    )
    pool.wait(timeout=TIMEOUT)
    return Contender(
        "psycopg_pool", "with pool.connection()", lease=pool.connection, close=pool.close
    )


def sqlalchemy_queue_pool(size: int) -> Contender:
    from sqlalchemy.pool import QueuePool

    creator: Any = StandInConnection  # a DB-API connection by duck typing only
    pool = QueuePool(creator, pool_size=size, max_overflow=0, timeout=TIMEOUT)
    held = [pool.connect() for _ in range(size)]
    for conn in held:
        conn.close()
    return Contender("SQLAlchemy", "with pool.connect()", lease=pool.connect, close=pool.dispose)


def dbutils_pooled_db(size: int) -> Contender:
    from dbutils.pooled_db import PooledDB

    pool = PooledDB(
        StandInDBAPI, mincached=size, maxcached=size, maxconnections=size, blocking=True
    )
    return Contender(
        "DBUtils",
        "with pool.dedicated_connection()",
        lease=pool.dedicated_connection,
        close=pool.close,
    )


def redis_blocking_pool(size: int) -> Contender:
    from redis.connection import BlockingConnectionPool, Connection

    class StandInRedisConnection(Connection):
        """A redis-py Connection that counts as connected and has nothing to read."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._sock = object()  # type: ignore[assignment]

        def can_read(self, timeout: float = 0) -> bool:
            return False

        def disconnect(self, *args: Any, **kwargs: Any) -> None:
            self._sock = None

    pool = BlockingConnectionPool(
        max_connections=size, timeout=TIMEOUT, connection_class=StandInRedisConnection
    )
    held = [pool.get_connection() for _ in range(size)]
    for conn in held:
        pool.release(conn)
    return Contender(
        "redis-py",
        "get_connection(); release(conn)",
        acquire=pool.get_connection,
        release=pool.release,
        close=pool.disconnect,
    )


#: Row order; the first is the baseline.
BUILDERS: list[tuple[str, Optional[str], Callable[[int], Contender]]] = [
    ("LifoQueue", None, lifo_queue),
    ("poodle", None, poodle),
    ("psycopg_pool", "psycopg-pool", psycopg_pool),
    ("SQLAlchemy", "sqlalchemy", sqlalchemy_queue_pool),
    ("DBUtils", "dbutils", dbutils_pooled_db),
    ("redis-py", "redis", redis_blocking_pool),
]


# -- scenario 1: one thread --------------------------------------------------


def time_cycles(contender: Contender, cycles: int) -> int:
    """Nanoseconds that ``cycles`` checkout/return cycles take in this thread."""
    clock = time.perf_counter_ns
    if contender.lease is not None:
        lease = contender.lease
        start = clock()
        for _ in range(cycles):
            with lease():
                pass
        return clock() - start
    acquire, release = contender.acquire, contender.release
    assert acquire is not None and release is not None
    start = clock()
    for _ in range(cycles):
        conn = acquire()
        release(conn)
    return clock() - start


def single_thread(contenders: Sequence[Contender], cycles: int, repeats: int) -> dict[str, float]:
    """Best nanoseconds per cycle of each contender; the repeats interleave."""
    best = {c.name: float("inf") for c in contenders}
    for c in contenders:
        time_cycles(c, max(1, cycles // 10))  # warm up
    for _ in range(repeats):
        for c in contenders:
            gc.collect()
            best[c.name] = min(best[c.name], time_cycles(c, cycles) / cycles)
    return best


# -- scenario 2: threads -----------------------------------------------------


@dataclass
class _Worker:
    cycles: int = 0
    waits: list[int] = field(default_factory=list)
    error: Optional[BaseException] = None


def _churn(
    contender: Contender,
    worker: _Worker,
    start: threading.Barrier,
    stop: threading.Event,
    max_cycles: int,
) -> None:
    clock = time.perf_counter_ns
    sleep = time.sleep
    waits = worker.waits
    cycles = 0
    try:
        start.wait(TIMEOUT)
        if contender.lease is not None:
            lease = contender.lease
            while cycles < max_cycles and not stop.is_set():
                t0 = clock()
                with lease():
                    t1 = clock()
                    sleep(0)  # the work: releases the GIL while holding the connection
                waits.append(t1 - t0)
                cycles += 1
        else:
            acquire, release = contender.acquire, contender.release
            assert acquire is not None and release is not None
            while cycles < max_cycles and not stop.is_set():
                t0 = clock()
                conn = acquire()
                t1 = clock()
                try:
                    sleep(0)
                finally:
                    release(conn)
                waits.append(t1 - t0)
                cycles += 1
    except BaseException as exc:
        worker.error = exc
    finally:
        worker.cycles = cycles


@dataclass
class _Slice:
    """What one pool did in one slice of the window."""

    elapsed: float
    counts: list[int]  # cycles per thread
    waits: list[int]  # nanoseconds, every checkout of every thread
    errors: list[str]


def churn_slice(contender: Contender, threads: int, seconds: float, max_cycles: int) -> _Slice:
    """``threads`` fresh threads churn the pool for ``seconds``."""
    start = threading.Barrier(threads + 1)
    stop = threading.Event()
    workers = [_Worker() for _ in range(threads)]
    runners = [
        threading.Thread(
            target=_churn,
            args=(contender, worker, start, stop, max_cycles),
            name=f"bench-{contender.name}-{i}",
            daemon=True,
        )
        for i, worker in enumerate(workers)
    ]
    gc.collect()
    for runner in runners:
        runner.start()
    start.wait(TIMEOUT)
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for runner in runners:
        runner.join(TIMEOUT + 5.0)
    elapsed = time.perf_counter() - t0
    errors = [f"{runner.name} still running" for runner in runners if runner.is_alive()]
    errors += [repr(w.error) for w in workers if w.error is not None]
    return _Slice(
        elapsed,
        [w.cycles for w in workers],
        [wait for w in workers for wait in w.waits],
        errors,
    )


@dataclass
class ThreadResult:
    """One pool's slices, summed up."""

    throughput: float  # cycles per second, all threads together
    median_wait_us: float
    p99_wait_us: float
    max_wait_ms: float
    min_share: float  # the least busy thread's count over the mean, worst slice
    max_share: float  # the busiest thread's count over the mean, worst slice
    errors: list[str]

    @property
    def spread(self) -> float:
        """The largest deviation of a thread's count from the mean, as a fraction."""
        return max(1.0 - self.min_share, self.max_share - 1.0)

    @classmethod
    def of(cls, slices: Sequence[_Slice]) -> ThreadResult:
        waits = sorted(wait for s in slices for wait in s.waits) or [0]
        # Threads are fresh in each slice, so fairness is judged slice by slice.
        shares = [
            (min(s.counts) / mean, max(s.counts) / mean)
            for s in slices
            if (mean := sum(s.counts) / len(s.counts))
        ] or [(0.0, 0.0)]
        return cls(
            throughput=sum(sum(s.counts) for s in slices) / sum(s.elapsed for s in slices),
            median_wait_us=waits[len(waits) // 2] / 1e3,
            p99_wait_us=waits[len(waits) * 99 // 100] / 1e3,
            max_wait_ms=waits[-1] / 1e6,
            min_share=min(low for low, _ in shares),
            max_share=max(high for _, high in shares),
            errors=[error for s in slices for error in s.errors],
        )


# -- report ------------------------------------------------------------------


def _version(dist: Optional[str]) -> str:
    if dist is None:
        return ""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _verdict(held: bool) -> str:
    return "held" if held else "MISSED"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--cycles", type=int, help="cycles per repeat in scenario 1")
    parser.add_argument("--repeats", type=int, help="repeats in scenario 1 (the best counts)")
    parser.add_argument("--window", type=float, help="seconds each pool runs in scenario 2")
    parser.add_argument(
        "--slices", type=int, help="scenario 2's window, cut into interleaved slices"
    )
    parser.add_argument("--threads", type=int, default=16, help="threads in scenario 2")
    parser.add_argument("--size", type=int, default=4, help="connections in each pool")
    args = parser.parse_args(argv)
    cycles = args.cycles or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (3 if args.quick else 7)
    window = args.window or (0.3 if args.quick else 2.0)
    slices = args.slices or (1 if args.quick else 4)
    max_cycles = 10_000_000  # per thread: bounds scenario 2 even with a huge window

    print(
        f"poodle_cherrypy pool benchmark, {datetime.date.today().isoformat()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}) "
        f"on {platform.system()} {platform.machine()}, {os.cpu_count()} CPU(s)"
    )
    print("stand-in connections, no server: pool machinery only")

    contenders: list[Contender] = []
    failed = False
    for name, dist, build in BUILDERS:
        version = _version(dist)
        if version == "not installed":
            print(f"  {name:<13} skipped: {dist} is not installed (pip install -e '.[benchmark]')")
            continue
        try:
            contender = build(args.size)
        except Exception as exc:
            print(f"  {name:<13} FAILED to set up: {exc!r}")
            failed = True
            continue
        contenders.append(contender)
        print(f"  {name:<13} {version:<9} {contender.usage}")
    baseline = contenders[0]

    # Scenario 1
    print()
    print(f"{SINGLE_HEADER} (best of {repeats} x {cycles} cycles)")
    print(f"  {'pool':<13} {'ns/cycle':>9} {'x LifoQueue':>12}")
    try:
        ns = single_thread(contenders, cycles, repeats)
    except Exception as exc:
        print(f"  FAILED: {exc!r}")
        ns = {}
        failed = True
    for c in contenders:
        if c.name in ns:
            print(f"  {c.name:<13} {ns[c.name]:>9.0f} {ns[c.name] / ns[baseline.name]:>11.2f}x")

    # Scenario 2
    print()
    print(
        f"{THREADS_HEADER} ({args.threads} threads, {args.size} connections, "
        f"{window:g} s per pool in {slices} interleaved slice(s) of {window / slices:g} s)"
    )
    print(
        f"  {'pool':<13} {'cycles/s':>9} {'x LifoQueue':>12} {'median wait':>12} "
        f"{'p99 wait':>12} {'max wait':>11} {'thread min..max':>16} {'max dev':>8}"
    )
    done: dict[str, list[_Slice]] = {c.name: [] for c in contenders}
    for _ in range(slices):
        for c in contenders:
            done[c.name].append(churn_slice(c, args.threads, window / slices, max_cycles))
    results = {name: ThreadResult.of(s) for name, s in done.items()}
    for c in contenders:
        r = results[c.name]
        line = (
            f"  {c.name:<13} {r.throughput:>9.0f} "
            f"{r.throughput / results[baseline.name].throughput:>11.2f}x "
            f"{r.median_wait_us:>9.1f} us {r.p99_wait_us:>9.1f} us {r.max_wait_ms:>8.2f} ms "
            f"{r.min_share:>8.0%}..{r.max_share:<6.0%} {r.spread:>8.1%}"
        )
        if r.errors:
            failed = True
            line += f"  ERRORS: {len(r.errors)}, first: {r.errors[0]}"
        print(line)
    print(
        "  (thread min..max: the least and the busiest thread's cycles over the mean, "
        "in the worst slice)"
    )

    for c in contenders:
        c.close()

    # Targets
    print()
    if "poodle" in ns:
        ratio = ns["poodle"] / ns[baseline.name]
        print(
            f"target, one thread, poodle <= 1.00x LifoQueue: {_verdict(ratio <= 1.0)} "
            f"({ratio:.2f}x)"
        )
        print(
            f"target, one thread, poodle with its timing histograms <= "
            f"{TIMED_RATIO:.2f}x LifoQueue: {_verdict(ratio <= TIMED_RATIO)} ({ratio:.2f}x)"
        )
    p = results["poodle"]
    print(
        f"target, no starved poodle thread (each within {FAIR_SPREAD:.0%} of the mean): "
        f"{_verdict(p.spread <= FAIR_SPREAD and not p.errors)} (max deviation {p.spread:.1%})"
    )
    pg = results.get("psycopg_pool")
    if pg is None:
        print("target, poodle vs psycopg_pool: not checked, psycopg_pool did not run")
    else:
        print(
            f"target, poodle max wait <= psycopg_pool's: "
            f"{_verdict(p.max_wait_ms <= pg.max_wait_ms)} "
            f"({p.max_wait_ms:.2f} ms vs {pg.max_wait_ms:.2f} ms)"
        )
        print(
            f"target, poodle throughput >= psycopg_pool's: "
            f"{_verdict(p.throughput >= pg.throughput)} "
            f"({p.throughput:.0f}/s vs {pg.throughput:.0f}/s)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
