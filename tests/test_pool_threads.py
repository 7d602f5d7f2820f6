"""The pool under real threads: exclusive holders, balanced counts, no starvation.

Loops are bounded (a fixed number of cycles per thread) and every thread has a
join timeout, so a deadlock or a starved thread fails the test instead of
hanging it; nothing here asserts on speed.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import pytest

from poodle_cherrypy import Pool, PoolClosed, PoolTimeout

JOIN = 60.0


class Conn:
    """A connection that knows how many threads hold it right now."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.closed = False
        self.holders = 0
        self.max_holders = 0
        self.lock = threading.Lock()
        self.resets = 0

    def enter(self) -> None:
        with self.lock:
            self.holders += 1
            self.max_holders = max(self.max_holders, self.holders)

    def leave(self) -> None:
        with self.lock:
            self.holders -= 1

    def close(self) -> None:
        assert self.holders == 0, "closed while held"
        self.closed = True


class Factory:
    def __init__(self) -> None:
        self.made: list[Conn] = []
        self.lock = threading.Lock()

    def __call__(self) -> Conn:
        conn = Conn()
        with self.lock:
            self.made.append(conn)
        return conn


def run_all(n: int, body: Callable[[int], None]) -> None:
    """Run ``body(i)`` in n threads started together; all must finish, none raise."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(JOIN)
            body(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + JOIN
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads did not finish in {JOIN} s: {stuck}"
    assert not errors, errors[:3]


def reset(conn: Conn) -> None:
    conn.resets += 1


CONFIGS: dict[str, dict[str, Any]] = {
    # The inlined hot path: no options that need the slow path.
    "plain": {},
    # Every option that routes checkout and return through the slow path.
    "full": {"check": lambda c: not c.closed, "reset": reset, "max_uses": 50},
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_stress_no_connection_has_two_holders_and_counts_balance(config: str) -> None:
    threads, cycles, size = 32, 1000, 4
    factory = Factory()
    pool = Pool(factory, max_size=size, timeout=JOIN, **CONFIGS[config])
    in_use = 0
    max_in_use = 0
    gauge = threading.Lock()
    broken = [0] * threads

    def body(i: int) -> None:
        nonlocal in_use, max_in_use
        rng = random.Random(i)
        for n in range(cycles):
            try:
                with pool.get() as conn:
                    assert not conn.closed, "a disposed connection was handed out"
                    conn.enter()
                    with gauge:
                        in_use += 1
                        max_in_use = max(max_in_use, in_use)
                    try:
                        if n % 7 == 0:
                            with pool.get() as again:  # reentrant: same holder
                                assert again is conn
                        if rng.random() < 0.3:
                            time.sleep(0)  # let another thread run mid-hold
                        if rng.random() < 0.02:
                            raise ConnectionResetError("simulated network failure")
                    finally:
                        with gauge:
                            in_use -= 1
                        conn.leave()
            except ConnectionResetError:
                broken[i] += 1

    run_all(threads, body)

    stats = pool.stats()
    assert max(c.max_holders for c in factory.made) == 1
    assert max_in_use <= size
    assert stats.checkouts == threads * cycles
    assert (stats.in_use, stats.pending, stats.waiting, stats.timeouts) == (0, 0, 0, 0)
    assert stats.idle == stats.size <= size
    assert stats.created == len(factory.made)
    assert stats.created - stats.discarded == stats.size
    assert stats.discarded == sum(c.closed for c in factory.made)
    assert stats.discarded >= sum(broken) > 0
    if config == "full":
        # reset runs on every return except the broken ones.
        assert sum(c.resets for c in factory.made) == threads * cycles - sum(broken)


def test_stress_with_short_timeouts_counts_balance() -> None:
    """Waiters that time out race with connections being handed to them."""
    threads, cycles = 16, 500
    factory = Factory()
    pool = Pool(factory, max_size=2)
    timeouts = [0] * threads

    def body(i: int) -> None:
        for _ in range(cycles):
            try:
                with pool.get(timeout=0.0005 if i % 2 else 5.0) as conn:
                    conn.enter()
                    time.sleep(0)
                    conn.leave()
            except PoolTimeout:
                timeouts[i] += 1

    run_all(threads, body)
    stats = pool.stats()
    assert max(c.max_holders for c in factory.made) == 1
    assert stats.timeouts == sum(timeouts)
    assert stats.checkouts + stats.timeouts == threads * cycles
    assert (stats.in_use, stats.waiting, stats.pending) == (0, 0, 0)
    assert stats.idle == stats.size == stats.created <= 2


def test_sixteen_threads_on_four_connections_none_starves() -> None:
    threads, cycles = 16, 40
    pool = Pool(Factory(), max_size=4, timeout=JOIN)
    done = [0] * threads
    max_wait = [0.0] * threads

    def body(i: int) -> None:
        for _ in range(cycles):
            start = time.monotonic()
            with pool.get():
                max_wait[i] = max(max_wait[i], time.monotonic() - start)
                time.sleep(0.0005)  # work that releases the GIL
            done[i] += 1

    run_all(threads, body)
    assert done == [cycles] * threads
    # Loose: with a FIFO hand-over a wait is a few holds long; a starved thread
    # would wait out the whole run (or time out, JOIN seconds).
    assert max(max_wait) < JOIN / 2
    stats = pool.stats()
    assert stats.checkouts == threads * cycles and stats.timeouts == 0


def test_close_under_load_disposes_everything() -> None:
    threads = 12
    factory = Factory()
    pool = Pool(factory, max_size=3, timeout=JOIN)
    started = threading.Barrier(threads + 1)
    served: list[int] = [0] * threads
    ended: list[Optional[BaseException]] = [None] * threads

    def worker(i: int) -> None:
        started.wait(JOIN)
        try:
            for _ in range(100_000):  # bounded; ends with PoolClosed long before
                with pool.get() as conn:
                    conn.enter()
                    time.sleep(0)
                    conn.leave()
                served[i] += 1
        except PoolClosed as exc:
            ended[i] = exc

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    started.wait(JOIN)
    deadline = time.monotonic() + JOIN
    while sum(served) < threads * 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    pool.close(timeout=JOIN)
    for thread in workers:
        thread.join(JOIN)
        assert not thread.is_alive()
    assert all(isinstance(e, PoolClosed) for e in ended)
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use, stats.waiting, stats.pending) == (0,) * 5
    assert stats.created == stats.discarded == len(factory.made)
    assert all(c.closed for c in factory.made)


def test_chaos_resize_maintain_close_reopen_under_load() -> None:
    """Workers cycle while a controller resizes, maintains, closes and reopens."""
    workers_n, cycles, rounds = 8, 1000, 100_000
    factory = Factory()
    pool = Pool(factory, min_size=1, max_size=3, timeout=JOIN, check=lambda c: not c.closed)
    stop = threading.Event()
    outcomes: dict[str, int] = {"ok": 0, "closed": 0, "timeout": 0, "broken": 0}
    tally = threading.Lock()
    snapshots_bad: list[Any] = []

    def worker(i: int) -> None:
        rng = random.Random(i)
        for _ in range(cycles):
            kind = "ok"
            try:
                with pool.get(timeout=0.001 if rng.random() < 0.2 else JOIN) as conn:
                    assert not conn.closed
                    conn.enter()
                    try:
                        time.sleep(0)
                        if rng.random() < 0.05:
                            raise ConnectionResetError("boom")
                    finally:
                        conn.leave()
            except PoolClosed:
                kind = "closed"
                time.sleep(0.002)  # reopened soon
            except PoolTimeout:
                kind = "timeout"
            except ConnectionResetError:
                kind = "broken"
            with tally:
                outcomes[kind] += 1

    def controller() -> None:
        rng = random.Random(99)
        for n in range(rounds):
            if stop.is_set():
                return
            s = pool.stats()
            if s.size != s.idle + s.in_use + s.pending or (s.idle and s.size > s.max_size):
                snapshots_bad.append(s)
            action = n % 4
            if action == 0:
                new_max = rng.randint(1, 5)
                pool.resize(min_size=rng.randint(0, new_max), max_size=new_max)
            elif action == 1:
                pool.maintain()
            elif action == 2 and n % 12 == 2:
                pool.close(timeout=0)
                time.sleep(0.0005)
                pool.open(wait=True)
            time.sleep(0.0002)

    control = threading.Thread(target=controller, daemon=True)
    control.start()
    try:
        run_all(workers_n, worker)
    finally:
        stop.set()
        control.join(JOIN)
    assert not control.is_alive()
    assert not snapshots_bad, snapshots_bad[:3]
    assert sum(outcomes.values()) == workers_n * cycles
    assert outcomes["ok"] > 0
    stats = pool.stats()
    assert stats.checkouts == outcomes["ok"] + outcomes["broken"]
    assert stats.timeouts == outcomes["timeout"]
    assert (stats.in_use, stats.pending, stats.waiting) == (0, 0, 0)
    assert stats.created - stats.discarded == stats.size
    assert stats.size == sum(not c.closed for c in factory.made)
    assert stats.idle == stats.size <= stats.max_size
    pool.close()
    stats = pool.stats()
    assert stats.size == 0 and stats.created == stats.discarded == len(factory.made)
    assert max(c.max_holders for c in factory.made) == 1
