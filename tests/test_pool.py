"""Unit tests of the pool core: every point of issue 2, part 3 (a-n).

Connections here are plain objects with a ``close()`` and a ``closed`` flag, so
that a test sees exactly what the pool opened, reused and disposed of. Threads
are ordered with Events, never with sleeps; the few sleeps only let a
deadline pass (sleeping longer than needed cannot make a test flaky).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import pytest

import poodle_cherrypy.pool as pool_module
from poodle_cherrypy import (
    Pool,
    PoolClosed,
    PoolError,
    PoolTimeout,
    PoolUnavailable,
    TooManyWaiters,
)

JOIN = 10.0  # seconds: generous, for a loaded 2-core machine


class Clock:
    """The pool's clock, frozen: time passes only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freeze the clock the pool reads for lifetimes, idleness, leaks and retries.

    (Waits still use real time: they are threading timeouts.)
    """
    fake = Clock()
    monkeypatch.setattr(pool_module, "_monotonic", fake)
    return fake


class Conn:
    """A stand-in connection: counts its closes, reports itself closed."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.closed = False
        self.close_calls = 0

    def close(self) -> None:
        self.closed = True
        self.close_calls += 1

    def __repr__(self) -> str:
        return f"<Conn {self.id}>"


class Factory:
    """Makes Conns; can be made to fail, or to run a hook, per call."""

    def __init__(self) -> None:
        self.made: list[Conn] = []
        self.calls = 0
        self.fail: Optional[BaseException] = None
        self.hook: Optional[Callable[[], None]] = None

    def __call__(self) -> Conn:
        self.calls += 1
        if self.hook is not None:
            self.hook()
        if self.fail is not None:
            raise self.fail
        conn = Conn()
        self.made.append(conn)
        return conn


def run_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``target`` in a daemon thread; its result or error lands in the dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = target()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def join(thread: threading.Thread) -> None:
    thread.join(JOIN)
    assert not thread.is_alive(), "thread did not finish in time"


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition on the pool's state (bounded)."""
    deadline = time.monotonic() + JOIN
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def waiting(pool: Pool[Any], n: int) -> Callable[[], bool]:
    """A predicate: exactly n callers wait in the pool's line."""
    return lambda: pool.stats().waiting == n


def hold(pool: Pool[Any], release: threading.Event) -> tuple[threading.Thread, dict[str, Any]]:
    """A thread that checks a connection out and holds it until ``release``."""
    got = threading.Event()

    def body() -> Any:
        with pool.get(timeout=JOIN) as conn:
            got.set()
            assert release.wait(JOIN)
            return conn

    thread, out = run_thread(body)
    assert got.wait(JOIN) or "error" in out
    return thread, out


# -- a: lazy, LIFO, grow, then wait ------------------------------------------


def test_constructing_never_connects() -> None:
    factory = Factory()
    pool = Pool(factory, min_size=3, max_size=5)
    assert factory.calls == 0
    stats = pool.stats()
    assert (stats.size, stats.created, stats.closed) == (0, 0, False)


# Options that take checkout and return off the inlined fast path.
SLOW_PATHS: list[dict[str, Any]] = [
    {},
    {"check": lambda c: True},
    {"reset": lambda c: None},
    {"max_lifetime": 3600.0},
    {"leak_timeout": 3600.0},
]


@pytest.mark.parametrize("options", SLOW_PATHS, ids=lambda o: ",".join(o) or "plain")
def test_get_takes_most_recently_returned_idle_connection(options: dict[str, Any]) -> None:
    pool = Pool(Factory(), max_size=3, **options)
    with pool.get() as a:
        release_b = threading.Event()
        tb, ob = hold(pool, release_b)  # b opened while a is out
    # a went back first, then b: LIFO hands out b.
    release_b.set()
    join(tb)
    b = ob["result"]
    assert a is not b
    with pool.get() as conn:
        assert conn is b
    with pool.get() as conn:
        assert conn is b  # still the most recently returned
    assert pool.stats().created == 2


def test_get_creates_up_to_max_size_then_waits() -> None:
    factory = Factory()
    pool = Pool(factory, max_size=2)
    release = threading.Event()
    holders = [hold(pool, release) for _ in range(2)]
    assert factory.calls == 2
    with pytest.raises(PoolTimeout), pool.get(timeout=0):
        pass
    assert factory.calls == 2 and pool.stats().size == 2
    release.set()
    for thread, _ in holders:
        join(thread)


# -- b: FIFO, no barging -----------------------------------------------------


def test_waiters_are_served_in_arrival_order() -> None:
    pool = Pool(Factory(), max_size=1)
    order: list[int] = []
    threads = []
    with pool.get():
        for i in range(6):

            def body(i: int = i) -> None:
                with pool.get(timeout=JOIN):
                    order.append(i)

            thread, out = run_thread(body)
            threads.append((thread, out))
            # The next waiter arrives only once this one is in line.
            wait_until(waiting(pool, i + 1), f"waiter {i} to queue")
    for thread, out in threads:
        join(thread)
        assert "error" not in out, out
    assert order == list(range(6))


def test_returned_connection_goes_to_the_waiter_not_a_newcomer() -> None:
    pool = Pool(Factory(), max_size=1)
    release = threading.Event()
    with pool.get() as conn:
        got = threading.Event()

        def body() -> Any:
            with pool.get(timeout=JOIN) as c:
                got.set()
                assert release.wait(JOIN)
                return c

        waiter, out = run_thread(body)
        wait_until(lambda: pool.stats().waiting == 1, "the waiter to queue")
    # The connection was handed to the waiter as it came back, even if the
    # waiter has not run yet: a newcomer (this thread) cannot barge in.
    with pytest.raises(PoolTimeout), pool.get(timeout=0):
        pass
    assert got.wait(JOIN)
    release.set()
    join(waiter)
    assert out["result"] is conn


# -- c: PoolTimeout, TooManyWaiters ------------------------------------------


def test_timeout_message_names_pool_max_size_waiting_and_timeout() -> None:
    pool = Pool(Factory(), name="orders-db", max_size=2, timeout=0.05)
    release = threading.Event()
    holders = [hold(pool, release) for _ in range(2)]
    # One more caller already in line when ours times out.
    waiter, wout = run_thread(lambda: pool.get(timeout=JOIN).__enter__())
    wait_until(lambda: pool.stats().waiting == 1, "a waiter")
    with pytest.raises(PoolTimeout) as info, pool.get():  # the pool's timeout, 0.05 s
        pass
    msg = str(info.value)
    assert "'orders-db'" in msg
    assert "max_size=2" in msg
    assert "1 other caller(s) waiting" in msg
    assert "0.05 s" in msg
    # A per-call timeout wins over the pool's.
    with pytest.raises(PoolTimeout, match=r"within 0\.01 s"), pool.get(timeout=0.01):
        pass
    assert pool.stats().timeouts == 2
    release.set()
    for thread, _ in holders:
        join(thread)
    join(waiter)  # the waiter got a connection (and leaks it; pool is dropped)
    assert "error" not in wout


def test_too_many_waiters_is_raised_at_once() -> None:
    pool = Pool(Factory(), name="tiny", max_size=1, max_waiting=2, timeout=JOIN)
    release = threading.Event()
    holder, _ = hold(pool, release)
    waiters = []
    for n in (1, 2):
        waiters.append(hold_waiter(pool))
        wait_until(waiting(pool, n), f"{n} waiters")
    start = time.monotonic()
    with pytest.raises(TooManyWaiters, match=r"max_waiting=2") as info, pool.get():
        pass
    assert time.monotonic() - start < JOIN / 2  # at once, not after the timeout
    assert "'tiny'" in str(info.value)
    assert isinstance(info.value, PoolError)
    assert pool.stats().rejected == 1
    release.set()
    join(holder)
    for thread, out in waiters:
        join(thread)
        assert "error" not in out


def hold_waiter(pool: Pool[Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """A thread that waits (longer than join() allows: it must be woken) and returns."""

    def body() -> None:
        with pool.get(timeout=3 * JOIN):
            pass

    return run_thread(body)


# -- d: the lock is never held during user code ------------------------------


def probe_from_other_thread(pool: Pool[Any]) -> bool:
    """Another thread reads stats and takes (and returns) a connection."""

    def body() -> bool:
        pool.stats()
        with pool.get(timeout=JOIN):
            pass
        return True

    thread, out = run_thread(body)
    thread.join(JOIN)
    return not thread.is_alive() and out.get("result") is True


@pytest.mark.parametrize("hook", ["factory", "check", "reset", "dispose", "body"])
def test_lock_is_not_held_while_user_code_runs(hook: str) -> None:
    probed: list[bool] = []
    armed = threading.Event()

    def maybe_probe() -> None:
        if armed.is_set():
            armed.clear()  # once: the probe's own get() must not probe again
            probed.append(probe_from_other_thread(pool))

    factory = Factory()
    pool: Pool[Conn] = Pool(
        factory,
        max_size=3,
        check=lambda c: maybe_probe() if hook == "check" else None,
        check_after=0,
        reset=lambda c: maybe_probe() if hook == "reset" else None,
        dispose=lambda c: maybe_probe() if hook == "dispose" else c.close(),
    )
    if hook == "factory":
        # An empty pool: the get() below calls the factory, which probes.
        factory.hook = maybe_probe
    else:
        # Two idle connections: one for this thread, one for the probe.
        release = threading.Event()
        holders = [hold(pool, release) for _ in range(2)]
        release.set()
        for thread, _ in holders:
            join(thread)
        assert pool.stats().idle == 2
    armed.set()
    if hook == "dispose":
        with pytest.raises(OSError), pool.get():
            raise OSError("connection reset")
    else:
        with pool.get():
            if hook == "body":
                maybe_probe()
    assert probed == [True]


def test_slow_factory_does_not_stop_others_taking_idle_connections() -> None:
    factory = Factory()
    pool = Pool(factory, max_size=2)
    in_factory = threading.Event()
    let_connect = threading.Event()
    with pool.get() as first:

        def slow() -> None:
            in_factory.set()
            assert let_connect.wait(JOIN)

        factory.hook = slow
        opener, oout = run_thread(lambda: pool.get(timeout=JOIN).__enter__())
        assert in_factory.wait(JOIN)
    # `first` is idle now; the other thread is still inside the factory.
    taker, tout = run_thread(lambda: pool.get(timeout=JOIN).__enter__())
    taker.join(JOIN)
    assert not taker.is_alive() and tout.get("result") is first
    assert not let_connect.is_set()
    let_connect.set()
    join(opener)
    assert isinstance(oout.get("result"), Conn) and oout["result"] is not first


# -- e: reentrancy -----------------------------------------------------------


def test_nested_get_yields_same_connection_returned_at_outermost_exit() -> None:
    pool = Pool(Factory(), max_size=1)
    with pool.get() as outer:
        with pool.get() as inner:
            assert inner is outer
            with pool.get(timeout=0) as innermost:  # max_size=1: no deadlock
                assert innermost is outer
        stats = pool.stats()
        assert (stats.in_use, stats.idle, stats.checkouts) == (1, 0, 1)
        # Still held: another thread cannot have it.
        thread, out = run_thread(lambda: pool.get(timeout=0).__enter__())
        join(thread)
        assert isinstance(out.get("error"), PoolTimeout)
    stats = pool.stats()
    assert (stats.in_use, stats.idle) == (0, 1)


def test_nested_use_of_another_pool_and_no_deadlock_at_max_size_1() -> None:
    a = Pool(Factory(), max_size=1)
    b = Pool(Factory(), max_size=1)

    def body() -> tuple[Any, ...]:
        with a.get(timeout=1) as ca, b.get(timeout=1) as cb:  # noqa: SIM117
            with a.get(timeout=1) as ca2, b.get(timeout=1) as cb2:
                return ca, cb, ca2, cb2

    thread, out = run_thread(body)
    join(thread)
    ca, cb, ca2, cb2 = out["result"]
    assert ca is ca2 and cb is cb2 and ca is not cb
    assert a.stats().in_use == 0 and b.stats().in_use == 0


def test_broken_inner_block_dooms_the_connection_at_outermost_exit() -> None:
    pool = Pool(Factory(), max_size=1)
    with pool.get() as conn:
        with pytest.raises(ConnectionError), pool.get():
            raise ConnectionError("reset by peer")
        assert not conn.closed  # still ours until the outer block ends
    assert conn.close_calls == 1
    with pool.get() as again:
        assert again is not conn


def test_a_lease_cannot_be_entered_twice() -> None:
    pool = Pool(Factory())
    lease = pool.get()
    with lease, pytest.raises(RuntimeError, match="already entered"), lease:
        pass


# -- f: reset, broken, dispose; the block's exception ------------------------


class DBError(Exception):
    pass


class OperationalError(DBError):
    """Named like DB-API's: marks the connection broken by the default rule."""


class InterfaceError(DBError):
    pass


@pytest.mark.parametrize(
    "exc",
    [
        OSError("socket"),
        ConnectionResetError("reset"),
        OperationalError("server closed the connection"),
        InterfaceError("connection already closed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_broken_connection_is_disposed_and_never_handed_out_again(exc: Exception) -> None:
    factory = Factory()
    pool = Pool(factory, max_size=1)
    with pytest.raises(type(exc)) as info, pool.get() as conn:
        raise exc
    assert info.value is exc  # unchanged
    assert conn.close_calls == 1
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.discarded) == (0, 0, 1)
    with pool.get() as again:
        assert again is not conn


def test_connection_reporting_itself_closed_is_disposed() -> None:
    pool = Pool(Factory(), max_size=1)
    with pool.get() as conn:
        conn.closed = True
    with pool.get() as again:
        assert again is not conn
    assert pool.stats().discarded == 1


def test_ordinary_exception_propagates_and_connection_is_reset_and_reused() -> None:
    resets: list[Conn] = []
    pool = Pool(Factory(), reset=resets.append)
    error = ValueError("application bug")
    with pytest.raises(ValueError) as info, pool.get() as conn:
        raise error
    assert info.value is error and info.value.__context__ is None
    assert resets == [conn] and not conn.closed
    with pool.get() as again:
        assert again is conn


def test_broken_rule_is_configurable() -> None:
    seen: list[tuple[Conn, Optional[BaseException]]] = []

    def broken(conn: Conn, exc: Optional[BaseException]) -> bool:
        seen.append((conn, exc))
        return isinstance(exc, KeyError)

    pool = Pool(Factory(), broken=broken)
    with pytest.raises(OSError), pool.get() as a:
        raise OSError("not broken by this rule")
    with pool.get() as b:
        assert b is a
    with pytest.raises(KeyError), pool.get() as c:
        raise KeyError("broken by this rule")
    assert c is a and a.closed
    assert seen[0][0] is a and isinstance(seen[0][1], OSError)


def test_failing_reset_disposes_logs_and_keeps_the_block_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def reset(conn: Conn) -> None:
        raise RuntimeError("rollback failed")

    pool = Pool(Factory(), name="rp", reset=reset)
    with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"):
        with pool.get() as conn:
            pass  # no exception escapes from the exit
        error = ValueError("mine")
        with pytest.raises(ValueError) as info, pool.get() as conn2:
            raise error
    assert info.value is error
    assert conn.closed and conn2.closed and conn2 is not conn
    assert "reset failed" in caplog.text and "rollback failed" in caplog.text
    assert pool.stats().discarded == 2


def test_failing_dispose_is_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    def dispose(conn: Conn) -> None:
        raise RuntimeError("close blew up")

    pool = Pool(Factory(), name="dp", dispose=dispose)
    with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"):
        with pytest.raises(OSError) as info, pool.get():
            raise OSError("gone")
        with pool.get():
            pass
        pool.close()
    assert str(info.value) == "gone"
    failures = [r for r in caplog.records if "closing" in r.getMessage()]
    assert len(failures) == 2 and all(r.levelno == logging.WARNING for r in failures)
    assert pool.stats().size == 0


def test_failing_broken_rule_disposes_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(conn: Conn, exc: Optional[BaseException]) -> bool:
        raise RuntimeError("rule bug")

    pool = Pool(Factory(), broken=broken)
    with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"), pool.get() as conn:
        pass
    assert conn.closed and "broken rule raised" in caplog.text


# -- g: check ----------------------------------------------------------------


@pytest.mark.parametrize("verdict", ["false", "raises"])
def test_failing_check_disposes_and_caller_gets_another(
    verdict: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad: set[int] = set()

    def check(conn: Conn) -> bool:
        if conn.id in bad:
            if verdict == "raises":
                raise OSError("ping failed")
            return False
        return True

    factory = Factory()
    pool = Pool(factory, check=check, check_after=0, max_size=1)
    with pool.get() as first:
        pass
    bad.add(first.id)
    with caplog.at_level(logging.INFO, logger="poodle_cherrypy"), pool.get() as second:
        assert second is not first and not second.closed
    assert first.closed
    assert ("ping failed" if verdict == "raises" else "check returned False") in caplog.text
    stats = pool.stats()
    assert (stats.size, stats.created, stats.discarded) == (1, 2, 1)


# -- h: max_lifetime, max_uses, max_idle, maintain ---------------------------


def test_max_uses_retires_a_connection() -> None:
    pool = Pool(Factory(), max_uses=2)
    with pool.get() as a:
        pass
    with pool.get() as b:
        assert b is a
    assert a.closed
    with pool.get() as c:
        assert c is not a


def test_max_lifetime_retires_a_connection(clock: Clock) -> None:
    pool = Pool(Factory(), max_lifetime=60.0)
    with pool.get() as a:
        pass
    clock.advance(59.0)
    with pool.get() as b:
        assert b is a  # young enough
    clock.advance(2.0)
    with pool.get() as c:  # retired at checkout
        assert c is not a
    assert a.closed
    clock.advance(59.5)
    with pool.get() as d:
        assert d is c
        clock.advance(1.0)  # too old by the time it comes back
    assert c.close_calls == 1
    with pool.get() as e:
        assert e is not c


def test_maintain_closes_idle_beyond_max_idle_keeping_min_size_and_refills(
    clock: Clock,
) -> None:
    factory = Factory()
    pool = Pool(factory, min_size=1, max_size=4, max_idle=30.0)
    release = threading.Event()
    holders = [hold(pool, release) for _ in range(3)]
    release.set()
    for thread, _ in holders:
        join(thread)
    assert pool.stats().idle == 3
    clock.advance(29.0)
    pool.maintain()  # nothing idle for long enough yet
    assert pool.stats().idle == 3
    clock.advance(2.0)
    pool.maintain()
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.discarded) == (1, 1, 2)
    assert sum(c.closed for c in factory.made) == 2
    pool.resize(min_size=3)
    pool.maintain()  # refills to min_size
    assert pool.stats().idle == 3 and factory.calls == 5


def test_maintain_on_a_closed_pool_does_nothing() -> None:
    factory = Factory()
    pool = Pool(factory, min_size=2)
    pool.close()
    pool.maintain()
    assert factory.calls == 0 and pool.stats().size == 0


def test_maintain_from_many_threads_at_once() -> None:
    factory = Factory()
    pool = Pool(factory, min_size=3, max_size=5)
    start = threading.Barrier(8)

    def body() -> None:
        start.wait(JOIN)
        for _ in range(20):
            pool.maintain()
            with pool.get(timeout=JOIN):
                pass

    threads = [run_thread(body) for _ in range(8)]
    for thread, out in threads:
        join(thread)
        assert "error" not in out, out
    stats = pool.stats()
    assert stats.min_size <= stats.size <= stats.max_size
    assert stats.size == stats.idle and stats.created - stats.discarded == stats.size


# -- i: factory failures and the circuit breaker -----------------------------


def test_factory_failure_reaches_caller_is_counted_and_frees_the_slot() -> None:
    factory = Factory()
    pool = Pool(factory, max_size=1)
    error = ConnectionRefusedError("db down")
    factory.fail = error
    with pytest.raises(ConnectionRefusedError) as info, pool.get():
        pass
    assert info.value is error
    stats = pool.stats()
    assert (stats.errors, stats.size, stats.pending, stats.connect_failures) == (1, 0, 0, 1)
    factory.fail = None
    with pool.get() as conn:  # the slot was freed: works again at once
        assert isinstance(conn, Conn)
    assert pool.stats().connect_failures == 0


def test_factory_failure_passes_the_slot_to_a_waiter() -> None:
    factory = Factory()
    pool = Pool(factory, max_size=1)
    entered = threading.Event()
    go = threading.Event()

    def hook() -> None:
        if factory.calls == 1:
            entered.set()
            assert go.wait(JOIN)
            factory.fail = OSError("first connect fails")
        else:
            factory.fail = None

    factory.hook = hook
    first, fout = run_thread(lambda: pool.get(timeout=JOIN).__enter__())
    assert entered.wait(JOIN)
    second, sout = run_thread(lambda: pool.get(timeout=JOIN).__enter__())
    wait_until(lambda: pool.stats().waiting == 1, "the waiter")
    go.set()
    join(first)
    join(second)
    assert isinstance(fout.get("error"), OSError)
    assert isinstance(sout.get("result"), Conn)


def test_circuit_opens_after_n_failures_and_fails_fast_chained() -> None:
    factory = Factory()
    pool = Pool(factory, fail_fast_after=3, retry_delay=60.0, max_retry_delay=60.0)
    factory.fail = OSError("connection refused")
    for _ in range(3):
        with pytest.raises(OSError), pool.get():
            pass
    assert factory.calls == 3
    for _ in range(5):
        with pytest.raises(PoolUnavailable) as info, pool.get():
            pass
        assert info.value.__cause__ is factory.fail
    assert factory.calls == 3  # not called while the circuit is open
    assert "3 times in a row" in str(info.value) and "connection refused" in str(info.value)
    stats = pool.stats()
    assert (stats.circuit, stats.unavailable, stats.errors, stats.size) == ("open", 5, 3, 0)


def test_circuit_half_open_probe_then_recovers(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    factory = Factory()
    pool = Pool(
        factory, max_size=4, fail_fast_after=2, retry_delay=1.0, max_retry_delay=1.0,
        probe_interval=None,  # callers probe
    )
    factory.fail = OSError("down")
    for _ in range(2):
        with pytest.raises(OSError), pool.get():
            pass
    with pytest.raises(PoolUnavailable), pool.get():
        pass
    clock.advance(0.7)  # within the retry delay (1 s +-25% jitter)
    with pytest.raises(PoolUnavailable), pool.get():
        pass
    clock.advance(0.6)  # past it
    probing = threading.Event()
    finish = threading.Event()

    def hook() -> None:
        probing.set()
        assert finish.wait(JOIN)

    factory.hook = hook
    factory.fail = None
    prober, pout = run_thread(lambda: pool.get(timeout=JOIN).__enter__())
    assert probing.wait(JOIN)
    assert pool.stats().circuit == "half-open"
    calls = factory.calls
    with pytest.raises(PoolUnavailable), pool.get():  # one probe at a time
        pass
    assert factory.calls == calls
    with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"):
        finish.set()
        join(prober)
    assert isinstance(pout.get("result"), Conn)
    assert "circuit closed" in caplog.text
    factory.hook = None
    assert pool.stats().circuit == "closed"
    with pool.get() as conn:
        assert isinstance(conn, Conn)


def test_idle_connections_are_still_handed_out_while_circuit_is_open() -> None:
    factory = Factory()
    pool = Pool(factory, max_size=3, fail_fast_after=1, retry_delay=60.0, max_retry_delay=60.0)
    with pool.get() as idle:
        pass
    factory.fail = OSError("down")
    release = threading.Event()
    holder, _ = hold(pool, release)  # takes the idle one
    with pytest.raises(OSError), pool.get():
        pass
    release.set()
    join(holder)
    with pool.get() as conn:
        assert conn is idle


# -- k: close, reopen --------------------------------------------------------


def test_get_after_close_raises_pool_closed() -> None:
    pool = Pool(Factory(), name="c1")
    with pool.get():
        pass
    pool.close()
    pool.close()  # idempotent
    assert pool.closed and pool.stats().closed
    with pytest.raises(PoolClosed, match="'c1'"), pool.get():
        pass


def test_close_wakes_waiters_with_pool_closed() -> None:
    pool = Pool(Factory(), max_size=1)
    with pool.get() as conn:
        waiters = [hold_waiter(pool) for _ in range(3)]
        wait_until(lambda: pool.stats().waiting == 3, "3 waiters")
        closer, _cout = run_thread(lambda: pool.close(timeout=JOIN))
        for thread, out in waiters:
            join(thread)
            assert isinstance(out.get("error"), PoolClosed)
        assert closer.is_alive()  # still waiting for our connection
        assert conn.close_calls == 0
    join(closer)
    assert conn.close_calls == 1
    stats = pool.stats()
    assert (stats.size, stats.in_use, stats.waiting) == (0, 0, 0)


def test_close_waits_for_busy_connections_then_they_are_disposed() -> None:
    factory = Factory()
    pool = Pool(factory, max_size=3)
    with pool.get() as idle:
        release = threading.Event()
        holder, hout = hold(pool, release)
    assert pool.stats().idle == 1
    closing = threading.Event()

    def close() -> None:
        closing.set()
        pool.close(timeout=JOIN)

    closer, _ = run_thread(close)
    assert closing.wait(JOIN)
    wait_until(lambda: idle.closed, "the idle connection to be disposed")
    assert closer.is_alive()
    busy = hout.get("result")
    release.set()
    join(holder)
    join(closer)
    busy = hout["result"]
    assert busy.closed and busy.close_calls == 1 and idle.close_calls == 1
    assert pool.stats().discarded == 2


def test_close_gives_up_waiting_after_timeout(caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(Factory(), name="slowpoke")
    with pool.get() as conn:
        with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"):
            pool.close(timeout=0.05)
        assert "1 connection(s) still in use" in caplog.text
    assert conn.closed


def test_reopen_after_close_and_open_wait_fills_min_size() -> None:
    factory = Factory()
    pool = Pool(factory, min_size=2, max_size=3)
    pool.open(wait=True)
    assert pool.stats().idle == 2
    pool.close()
    assert all(c.closed for c in factory.made)
    pool.open(wait=True)
    assert not pool.closed and pool.stats().idle == 2
    with pool.get() as conn:
        assert not conn.closed


def test_open_wait_raises_when_factory_fails_and_pool_stays_usable() -> None:
    factory = Factory()
    factory.fail = ConnectionRefusedError("nope")
    pool = Pool(factory, min_size=2)
    with pytest.raises(ConnectionRefusedError):
        pool.open(wait=True)
    stats = pool.stats()
    assert (stats.size, stats.pending, stats.closed) == (0, 0, False)
    factory.fail = None
    pool.open(wait=True)
    assert pool.stats().idle == 2


def test_open_without_wait_fills_in_the_background() -> None:
    pool = Pool(Factory(), min_size=2)
    pool.open()
    wait_until(lambda: pool.stats().idle == 2, "background fill")


def test_pool_as_context_manager_opens_and_closes() -> None:
    factory = Factory()
    with Pool(factory, min_size=1) as pool, pool.get() as conn:
        pass
    assert pool.closed and conn.closed
    with pytest.raises(PoolClosed), pool.get():
        pass


# -- l: resize ---------------------------------------------------------------


def test_growing_lets_waiters_through_at_once() -> None:
    pool = Pool(Factory(), max_size=1)
    with pool.get():
        waiters = [hold_waiter(pool) for _ in range(2)]
        wait_until(lambda: pool.stats().waiting == 2, "2 waiters")
        pool.resize(max_size=3)
        for thread, out in waiters:  # while we still hold ours
            join(thread)
            assert "error" not in out
    assert pool.stats().size == 3


def test_shrinking_disposes_excess_idle_now_and_busy_on_return() -> None:
    factory = Factory()
    pool = Pool(factory, max_size=4)
    release = threading.Event()
    holders = [hold(pool, release) for _ in range(4)]
    release.set()
    for thread, _ in holders:
        join(thread)
    release2 = threading.Event()
    busy = [hold(pool, release2) for _ in range(3)]  # 3 busy, 1 idle
    pool.resize(max_size=1)
    stats = pool.stats()
    assert (stats.idle, stats.in_use, stats.size) == (0, 3, 3)
    assert sum(c.closed for c in factory.made) == 1
    release2.set()
    for thread, _ in busy:
        join(thread)
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.max_size) == (1, 1, 1)
    assert sum(c.closed for c in factory.made) == 3


# -- m: leak_timeout ---------------------------------------------------------


def leaky_checkout(pool: Pool[Any]) -> Any:
    lease = pool.get()
    return lease, lease.__enter__()


def test_leak_is_reported_once_with_checkout_stack(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    pool = Pool(Factory(), name="leaky", leak_timeout=30.0)
    lease, _conn = leaky_checkout(pool)
    with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"):
        pool.maintain()
        clock.advance(29.0)
        pool.maintain()
        assert caplog.records == []  # not held long enough yet
        clock.advance(2.0)
        pool.maintain()
        pool.maintain()
    records = [r for r in caplog.records if r.name == "poodle_cherrypy"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    msg = records[0].getMessage()
    assert "'leaky'" in msg and "leak_timeout" in msg
    assert "leaky_checkout" in msg and "test_leak_is_reported_once" in msg
    assert pool.stats().leaks == 1
    lease.__exit__(None, None, None)
    assert pool.stats().in_use == 0


# -- n: argument validation --------------------------------------------------

BAD_ARGUMENTS: list[tuple[dict[str, Any], type[Exception], tuple[str, ...]]] = [
    ({"factory": 42}, TypeError, ("factory", "42")),
    ({"args": "dsn"}, TypeError, ("args", "'dsn'")),
    ({"kwargs": [1]}, TypeError, ("kwargs", "[1]")),
    ({"name": 7}, TypeError, ("name", "7")),
    ({"max_size": 0}, ValueError, ("max_size", "0")),
    ({"max_size": 2.5}, TypeError, ("max_size", "2.5")),
    ({"max_size": True}, TypeError, ("max_size", "True")),
    ({"min_size": -1}, ValueError, ("min_size", "-1")),
    ({"min_size": 5, "max_size": 2}, ValueError, ("min_size", "5", "max_size", "2")),
    ({"timeout": -1}, ValueError, ("timeout", "-1")),
    ({"timeout": float("nan")}, ValueError, ("timeout", "nan")),
    ({"timeout": "3"}, TypeError, ("timeout", "'3'")),
    ({"max_waiting": -2}, ValueError, ("max_waiting", "-2")),
    ({"check": 1}, TypeError, ("check", "1")),
    ({"reset": "x"}, TypeError, ("reset", "'x'")),
    ({"dispose": 3}, TypeError, ("dispose", "3")),
    ({"broken": 4}, TypeError, ("broken", "4")),
    ({"max_lifetime": 0}, ValueError, ("max_lifetime", "0")),
    ({"max_idle": -5}, ValueError, ("max_idle", "-5")),
    ({"max_uses": 0}, ValueError, ("max_uses", "0")),
    ({"leak_timeout": -0.5}, ValueError, ("leak_timeout", "-0.5")),
    ({"fail_fast_after": -1}, ValueError, ("fail_fast_after", "-1")),
    ({"retry_delay": 0}, ValueError, ("retry_delay", "0")),
    ({"retry_delay": 2.0, "max_retry_delay": 1.0}, ValueError, ("max_retry_delay", "1.0")),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"), BAD_ARGUMENTS, ids=[repr(k) for k, _, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_name_the_argument_and_value(
    kwargs: dict[str, Any], error: type[Exception], words: tuple[str, ...]
) -> None:
    kwargs = dict(kwargs)
    factory = kwargs.pop("factory", Factory())
    with pytest.raises(error) as info:
        Pool(factory, **kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda p: p.get(timeout=-1), ValueError, ("timeout", "-1")),
        (lambda p: p.get(timeout="1"), TypeError, ("timeout", "'1'")),
        (lambda p: p.close(timeout=-2), ValueError, ("timeout", "-2")),
        (lambda p: p.resize(max_size=0), ValueError, ("max_size", "0")),
        (lambda p: p.resize(min_size=-3), ValueError, ("min_size", "-3")),
        (lambda p: p.resize(min_size=20), ValueError, ("min_size", "20", "max_size", "10")),
    ],
    ids=[
        "get-timeout",
        "get-timeout-type",
        "close-timeout",
        "resize-max",
        "resize-min",
        "resize-min-over-max",
    ],
)
def test_bad_method_arguments_name_the_argument_and_value(
    call: Callable[[Pool[Any]], Any], error: type[Exception], words: tuple[str, ...]
) -> None:
    pool = Pool(Factory())
    with pytest.raises(error) as info:
        call(pool)
    for word in words:
        assert word in str(info.value)
    stats = pool.stats()
    assert (stats.min_size, stats.max_size, stats.closed) == (0, 10, False)


# -- stats -------------------------------------------------------------------


def test_stats_snapshot_is_json_serialisable_and_frozen() -> None:
    pool = Pool(Factory(), name="s", min_size=1, max_size=2)
    with pool.get():
        stats = pool.stats()
    data = json.loads(json.dumps(stats.as_dict()))
    assert data["name"] == "s" and data["in_use"] == 1 and data["checkouts"] == 1
    assert data["size"] == data["idle"] + data["in_use"] + data["pending"]
    with pytest.raises(AttributeError):
        stats.size = 5  # type: ignore[misc]
    assert "'s'" in repr(pool)


def test_shrinking_while_filling_leaves_no_excess_idle() -> None:
    factory = Factory()
    in_factory = threading.Event()
    let_connect = threading.Event()

    def slow() -> None:
        in_factory.set()
        assert let_connect.wait(JOIN)

    factory.hook = slow
    pool = Pool(factory, min_size=2, max_size=2)
    filler, fout = run_thread(lambda: pool.open(wait=True))
    assert in_factory.wait(JOIN)
    pool.resize(min_size=0, max_size=1)  # both slots are still being opened
    let_connect.set()
    join(filler)
    assert "error" not in fout, fout
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.max_size) == (1, 1, 1), stats
    assert sum(c.closed for c in factory.made) == 1


class Interrupted(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_interrupted_waiter_leaves_the_line_and_loses_nothing() -> None:
    assert threading.current_thread() is threading.main_thread()
    pool = Pool(Factory(), max_size=1)
    release = threading.Event()
    holder, hout = hold(pool, release)

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    def send() -> None:
        wait_until(waiting(pool, 1), "the main thread to wait")
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        sender, _ = run_thread(send)
        with pytest.raises(Interrupted), pool.get(timeout=JOIN):
            pass
    finally:
        signal.signal(signal.SIGUSR1, previous)
    join(sender)
    stats = pool.stats()
    assert (stats.waiting, stats.in_use, stats.size) == (0, 1, 1)
    release.set()
    join(holder)
    with pool.get(timeout=0) as conn:  # nothing was lost to the interrupted waiter
        assert conn is hout["result"]


def test_a_lease_may_be_exited_from_another_thread() -> None:
    pool = Pool(Factory(), max_size=1)
    lease = pool.get()
    entered, out = run_thread(lease.__enter__)
    join(entered)
    conn = out["result"]
    assert pool.stats().in_use == 1
    lease.__exit__(None, None, None)  # handed over: exited here
    stats = pool.stats()
    assert (stats.in_use, stats.idle) == (0, 1)
    with pool.get(timeout=0) as again:
        assert again is conn


class Abort(BaseException):
    """Like KeyboardInterrupt: not an Exception, must still not leak a slot."""


@pytest.mark.parametrize("hook", ["check", "reset", "dispose"])
def test_base_exception_in_a_hook_propagates_and_leaks_no_slot(hook: str) -> None:
    armed = threading.Event()

    def maybe_abort(conn: Conn) -> None:
        if armed.is_set():
            armed.clear()
            raise Abort

    factory = Factory()
    pool: Pool[Conn] = Pool(
        factory,
        max_size=1,
        check=maybe_abort if hook == "check" else None,
        check_after=0,
        reset=maybe_abort if hook == "reset" else None,
        dispose=maybe_abort if hook == "dispose" else None,
    )
    if hook == "dispose":
        with pytest.raises(Abort), pool.get():
            # A waiter that gets the slot freed when this broken one is disposed.
            waiter, wout = run_thread(lambda: pool.get(timeout=3 * JOIN).__enter__())
            wait_until(waiting(pool, 1), "a waiter")
            armed.set()
            raise OSError("broken: dispose of it")
        join(waiter)  # woken at once, not after its 30 s timeout
        assert isinstance(wout.get("result"), Conn)
        return
    with pool.get():
        pass
    armed.set()
    with pytest.raises(Abort), pool.get():
        pass
    stats = pool.stats()
    assert (stats.pending, stats.in_use, stats.waiting) == (0, 0, 0), stats
    assert stats.size == stats.idle == stats.created - stats.discarded, stats
    with pool.get(timeout=0) as conn:  # the slot is usable
        assert not conn.closed


def test_failed_probes_back_off_up_to_max_retry_delay(clock: Clock) -> None:
    factory = Factory()
    factory.fail = OSError("down")
    pool = Pool(
        factory, fail_fast_after=1, retry_delay=1.0, max_retry_delay=4.0, probe_interval=None
    )

    def attempt() -> bool:
        """True if the factory was called (a probe), False if it failed fast."""
        calls = factory.calls
        with pytest.raises((OSError, PoolUnavailable)), pool.get():
            pass
        return factory.calls > calls

    assert attempt()  # the first failure opens the circuit (delay ~1 s)
    assert not attempt()
    clock.advance(1.3)
    assert attempt()  # probe fails: delay doubles (~2 s, at least 1.5 s)
    clock.advance(1.3)
    assert not attempt()
    clock.advance(1.3)
    assert attempt()  # ~4 s next
    for _ in range(4):  # capped at max_retry_delay (4 s +25% jitter)
        clock.advance(5.1)
        assert attempt()
    factory.fail = None
    clock.advance(5.1)
    with pool.get() as conn:
        assert isinstance(conn, Conn)
    assert pool.stats().circuit == "closed"
