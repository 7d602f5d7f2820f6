"""The pool's threads and generations: what ``close()`` and ``recycle()`` leave behind.

- ``close()`` returns with no thread of the pool's alive (the fill, the
  probe), waiting at most the pool's timeout for a connect under way and
  logging the one it leaves;
- a connection ``recycle()`` retires while a fill or the probe was opening
  it is not kept, and the fill opens another at once;
- a failed check while the circuit is open tries the next idle connection
  before opening a new one (which would fail fast).

Stand-in connections, as in test_pool.py.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from test_pool import JOIN, Conn, Factory, hold, join, run_thread, wait_until

from poodle_cherrypy import Pool


def pool_threads(pool: Pool[Any]) -> list[threading.Thread]:
    """The threads a pool started (they are named after it)."""
    return [
        t for t in threading.enumerate()
        if t.name in (f"{pool.name}-fill", f"{pool.name}-probe") and t.is_alive()
    ]


class Gated:
    """A factory whose calls wait for ``gate`` (when set up) and say they began."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.began = threading.Semaphore(0)
        self.calls = 0
        self.fail: BaseException | None = None
        self.made: list[Conn] = []

    def __call__(self) -> Conn:
        self.calls += 1
        self.began.release()
        assert self.gate.wait(JOIN)
        if self.fail is not None:
            raise self.fail
        conn = Conn()
        self.made.append(conn)
        return conn


# -- close() leaves no thread behind --------------------------------------------


def test_close_returns_after_the_fill_thread_has_ended() -> None:
    factory = Gated()
    factory.gate.clear()
    pool: Pool[Conn] = Pool(factory, min_size=2, max_size=2)
    pool.open()
    assert factory.began.acquire(timeout=JOIN)  # the fill is in its first connect
    threading.Timer(0.3, factory.gate.set).start()  # which returns a moment later
    pool.close()
    assert pool_threads(pool) == []
    assert factory.calls == 1  # no connect started after close()
    assert [conn.closed for conn in factory.made] == [True]  # the one it made, closed
    assert pool.stats().size == 0


def test_close_ends_the_probe_thread_at_once() -> None:
    factory = Factory()
    factory.fail = ConnectionRefusedError("down")
    pool: Pool[Conn] = Pool(factory, fail_fast_after=1, probe_interval=5.0)
    with pytest.raises(ConnectionRefusedError):
        pool.get().__enter__()
    assert [t.name for t in pool_threads(pool)] == [f"{pool.name}-probe"]  # asleep, 5 s
    started = time.monotonic()
    pool.close()
    assert pool_threads(pool) == []
    assert time.monotonic() - started < 4.0  # woken, not slept out


def test_close_leaves_a_connect_past_the_pools_timeout_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    factory = Gated()
    factory.gate.clear()
    pool: Pool[Conn] = Pool(factory, min_size=1, max_size=1, timeout=0.2)
    pool.open()
    assert factory.began.acquire(timeout=JOIN)
    with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"):
        started = time.monotonic()
        pool.close()
        waited = time.monotonic() - started
    try:
        assert 0.15 <= waited < JOIN
        [line] = [r.getMessage() for r in caplog.records if "still connecting" in r.getMessage()]
        assert f"'{pool.name}-fill' still connecting after 0.2 s" in line
        assert "left to end in the background" in line
    finally:
        factory.gate.set()
    wait_until(lambda: not pool_threads(pool), "the abandoned fill to end")
    assert [conn.closed for conn in factory.made] == [True]  # closed when it returned
    assert pool.stats().size == 0


# -- recycle() retires what is being opened -------------------------------------


def test_a_fill_connection_retired_by_recycle_is_replaced_at_once() -> None:
    factory = Gated()
    pool: Pool[Conn] = Pool(factory, min_size=2, max_size=2)
    pool.open(wait=True)
    old = list(factory.made)
    factory.gate.clear()
    for conn in old:  # two fresh ones are being opened by recycle()'s fill
        conn.close()
    pool.recycle()
    assert factory.began.acquire(timeout=JOIN)  # the fill is in its first connect
    pool.recycle()  # which retires the connection that connect is opening
    factory.gate.set()
    wait_until(lambda: not pool_threads(pool), "the fills to end")
    stats = pool.stats()
    # At min_size again, with no maintain(): the retired one was replaced.
    assert (stats.idle, stats.size, stats.pending) == (2, 2, 0), stats
    kept = [c for c in factory.made if not c.closed]
    assert len(kept) == 2 and not set(kept) & set(old)
    pool.close()


def test_a_probe_connection_opened_during_recycle_is_retired() -> None:
    factory = Gated()
    pool: Pool[Conn] = Pool(factory, fail_fast_after=1, probe_interval=0.05)
    factory.fail = ConnectionRefusedError("down")
    with pytest.raises(ConnectionRefusedError):
        pool.get().__enter__()
    while factory.began.acquire(blocking=False):
        pass
    factory.gate.clear()
    factory.fail = None
    assert factory.began.acquire(timeout=JOIN)  # the probe is connecting
    pool.recycle()
    factory.gate.set()
    wait_until(lambda: pool.stats().circuit == "closed", "the probe to close the circuit")
    wait_until(lambda: not pool_threads(pool), "the probe thread to end")
    [probed] = factory.made
    assert probed.closed  # it joined the retired generation's fate
    assert pool.stats().idle == 0
    pool.close()


# -- a failed check while the circuit is open -------------------------------------


def test_a_failed_check_while_the_circuit_is_open_tries_the_next_idle_connection() -> None:
    factory = Factory()
    dead: set[int] = set()
    pool: Pool[Conn] = Pool(
        factory, max_size=3, check=lambda c: c.id not in dead, check_after=0,
        fail_fast_after=1, probe_interval=None, retry_delay=30.0, max_retry_delay=30.0,
    )
    lease = pool.get()
    top = lease.__enter__()
    release = threading.Event()
    holder, held = hold(pool, release)
    factory.fail = ConnectionRefusedError("down")
    opener, opened = run_thread(lambda: pool.get().__enter__())  # a third: it fails
    join(opener)
    assert isinstance(opened["error"], ConnectionRefusedError)
    assert pool.stats().circuit == "open"
    release.set()
    join(holder)
    below = held["result"]  # returned first: under the other in the idle stack
    lease.__exit__(None, None, None)
    dead.add(top.id)
    with pool.get() as conn:
        assert conn is below  # not PoolUnavailable, with a live one idle
    assert top.closed and not below.closed
    pool.close()
