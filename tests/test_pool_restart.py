"""Unit tests of what a server restart needs from the pool (issue 13, items 1-3, 5).

- one connection found broken makes every older one suspect (the watermark);
- ``check`` is skipped within ``check_after`` of the last return, and
  ``keepalive`` checks idle connections from :meth:`Pool.maintain`;
- connects in flight when the circuit opens count once, and the probe thread
  closes the circuit soon after the factory works again;
- ``args``/``kwargs`` may be callables, called at each connect.

Stand-in connections, as in test_pool.py; the real restarts are in
test_servers_restart.py.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from typing import Any

import pytest
from test_pool import JOIN, Clock, Conn, Factory, hold, join, run_thread

import poodle_cherrypy.pool as pool_module
from poodle_cherrypy import Pool, PoolUnavailable
from poodle_cherrypy.config import build_pool


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freeze the pool's clock: time passes only when a test says so."""
    fake = Clock()
    monkeypatch.setattr(pool_module, "_monotonic", fake)
    return fake


def fill(pool: Pool[Conn], n: int) -> list[Conn]:
    """Make ``n`` connections at once and return them all to the pool."""
    release = threading.Event()
    holders = [hold(pool, release) for _ in range(n)]
    release.set()
    conns = []
    for thread, out in holders:
        join(thread)
        conns.append(out["result"])
    return conns


class Checks:
    """A ``check`` that records what it checked; fails on a closed or bad Conn."""

    def __init__(self) -> None:
        self.checked: list[Conn] = []
        self.dead: set[int] = set()

    def __call__(self, conn: Conn) -> bool:
        self.checked.append(conn)
        return conn.id not in self.dead and not conn.closed


# -- 1: the watermark -----------------------------------------------------------


def test_without_check_a_broken_connection_retires_every_older_one() -> None:
    factory = Factory()
    pool: Pool[Conn] = Pool(factory, max_size=4)
    idle = fill(pool, 3)
    release = threading.Event()
    busy_thread, busy = hold(pool, release)  # a fourth, busy while the first breaks
    with pytest.raises(OSError), pool.get() as conn:
        raise OSError("server closed the connection unexpectedly")
    assert conn.closed
    # The other idle one was disposed of at once: no caller meets it.
    assert pool.stats().idle == 0
    assert sum(c.closed for c in idle) == 2
    release.set()
    join(busy_thread)
    assert busy["result"].closed  # the busy one, when it came back
    assert all(c.closed for c in idle)
    with pool.get() as fresh:
        assert fresh not in idle and not fresh.closed


def test_with_check_older_idle_connections_are_checked_however_recent() -> None:
    factory = Factory()
    checks = Checks()
    pool: Pool[Conn] = Pool(factory, max_size=4, check=checks, check_after=60.0)
    idle = fill(pool, 3)
    with pool.get():
        pass
    assert checks.checked == []  # all used within check_after: never checked
    checks.dead = {c.id for c in idle}  # the server restarted: all of them are dead
    with pytest.raises(OSError), pool.get() as broken:
        raise OSError("connection reset")
    # Each suspect is checked (and dropped) before it could be handed out.
    handed = fill(pool, 3)
    assert not set(map(id, handed)) & set(map(id, idle))
    assert {c.id for c in checks.checked} == {c.id for c in idle if c is not broken}
    stats = pool.stats()
    assert (stats.idle, stats.in_use) == (3, 0), stats
    assert all(c.closed for c in idle)


def test_a_suspect_that_passes_its_check_is_trusted_again() -> None:
    checks = Checks()
    pool: Pool[Conn] = Pool(Factory(), max_size=3, check=checks, check_after=60.0)
    a, b = fill(pool, 2)
    with pytest.raises(OSError), pool.get() as broken:
        raise OSError("gone")
    with pool.get() as conn:  # the other one: suspect, checked, healthy
        assert conn in (a, b) and conn is not broken
    assert checks.checked == [conn]
    with pool.get() as again:
        assert again is conn
    assert checks.checked == [conn]  # trusted again: not checked a second time


def test_an_old_connection_failing_brings_no_news(caplog: pytest.LogCaptureFixture) -> None:
    pool: Pool[Conn] = Pool(Factory(), max_size=4)
    release = threading.Event()
    first, _ = hold(pool, release)
    second_release = threading.Event()
    second, _ = hold(pool, second_release)
    with caplog.at_level("WARNING", logger="poodle_cherrypy"):
        with pytest.raises(OSError), pool.get():
            raise OSError("gone")
        epoch = pool._epoch
        # The two busy ones come back broken too: they were suspect already.
        for event, thread in ((release, first), (second_release, second)):
            event.set()
            join(thread)
    assert pool._epoch == epoch
    assert caplog.text.count("found broken") == 1


# -- 2: check_after and keepalive ---------------------------------------------------


def test_check_is_skipped_within_check_after_of_the_last_return(clock: Clock) -> None:
    checks = Checks()
    pool: Pool[Conn] = Pool(Factory(), check=checks)  # check_after defaults to 0.5 s
    with pool.get():
        pass
    clock.advance(0.4)
    with pool.get():
        pass
    assert checks.checked == []
    clock.advance(0.6)
    with pool.get() as conn:
        pass
    assert checks.checked == [conn]


def test_check_after_zero_checks_every_checkout() -> None:
    checks = Checks()
    pool: Pool[Conn] = Pool(Factory(), check=checks, check_after=0)
    for _ in range(3):
        with pool.get():
            pass
    assert len(checks.checked) == 2  # the first checkout opened it


def test_keepalive_checks_idle_connections_from_maintain(clock: Clock) -> None:
    checks = Checks()
    pool: Pool[Conn] = Pool(Factory(), max_size=3, min_size=0, check=checks, keepalive=30.0)
    a, b = fill(pool, 2)
    pool.maintain()
    assert checks.checked == []  # idle for less than keepalive
    clock.advance(31.0)
    checks.dead = {a.id}
    pool.maintain()
    assert sorted(c.id for c in checks.checked) == sorted([a.id, b.id])
    assert a.closed and not b.closed
    stats = pool.stats()
    assert (stats.idle, stats.size, stats.pending) == (1, 1, 0), stats
    with pool.get() as conn:
        assert conn is b


def test_keepalive_checked_connections_respect_a_max_size_shrunk_meanwhile(
    clock: Clock,
) -> None:
    # resize() cannot dispose of the connections maintain() has out for their
    # keepalive check (they are not idle); maintain must then, as a fill does,
    # rather than put them all back above the new max_size.
    entered = threading.Event()
    gate = threading.Event()

    def check(conn: Conn) -> bool:
        entered.set()
        assert gate.wait(JOIN)
        return True

    pool: Pool[Conn] = Pool(Factory(), max_size=3, check=check, keepalive=30.0)
    fill(pool, 2)
    clock.advance(31.0)
    thread, out = run_thread(pool.maintain)
    assert entered.wait(JOIN)
    pool.resize(max_size=1)
    gate.set()
    join(thread)
    assert "error" not in out, out
    stats = pool.stats()
    assert stats.size <= stats.max_size == 1, stats
    assert (stats.idle, stats.pending) == (stats.size, 0), stats


def test_maintain_refills_min_size_after_keepalive_checks_drop_connections(
    clock: Clock,
) -> None:
    # A restart in a quiet period: maintain's keepalive checks find the idle
    # connections dead; the same maintain() opens min_size again, so that the
    # next caller meets neither a dead connection nor a connect.
    checks = Checks()
    pool: Pool[Conn] = Pool(Factory(), min_size=2, max_size=3, check=checks, keepalive=30.0)
    pool.open(wait=True)
    dead = fill(pool, 2)
    clock.advance(31.0)
    checks.dead = {conn.id for conn in dead}
    pool.maintain()
    assert all(conn.closed for conn in dead)
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.pending) == (2, 2, 0), stats


class GatedCheck:
    """A ``check`` that passes, but waits for ``gate`` once ``armed``."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, conn: Conn) -> bool:
        if self.armed:
            self.entered.set()
            assert self.gate.wait(JOIN)
        return True


def test_a_connection_checked_at_checkout_during_recycle_is_retired() -> None:
    # recycle() retires every connection open now: one that is out for its
    # check when it runs must not be vouched for into the new generation.
    check = GatedCheck()
    pool: Pool[Conn] = Pool(Factory(), check=check, check_after=0)
    with pool.get() as old:
        pass
    check.armed = True
    thread, out = run_thread(lambda: pool.get().__enter__())
    assert check.entered.wait(JOIN)
    check.armed = False
    pool.recycle()
    check.gate.set()
    join(thread)
    assert "error" not in out, out
    assert out["result"] is not old and old.closed


def test_a_connection_keepalive_checked_during_recycle_is_retired(clock: Clock) -> None:
    check = GatedCheck()
    pool: Pool[Conn] = Pool(Factory(), check=check, keepalive=30.0)
    (old,) = fill(pool, 1)
    clock.advance(31.0)
    check.armed = True
    thread, out = run_thread(pool.maintain)
    assert check.entered.wait(JOIN)
    pool.recycle()
    check.gate.set()
    join(thread)
    assert "error" not in out, out
    assert old.closed
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.pending) == (0, 0, 0), stats


def gated_factory() -> tuple[Factory, threading.Event, threading.Event]:
    """A Factory whose calls wait for ``gate`` (``entered`` set on each call)."""
    factory = Factory()
    entered = threading.Event()
    gate = threading.Event()

    def hook() -> None:
        entered.set()
        assert gate.wait(JOIN)

    factory.hook = hook
    return factory, entered, gate


def test_a_connection_a_caller_opens_during_recycle_is_retired_when_it_comes_back() -> None:
    # Its factory call began before recycle() (with the old credentials, say):
    # it is one of the connections recycle() retires.
    factory, entered, gate = gated_factory()
    pool: Pool[Conn] = Pool(factory)

    def use() -> Conn:
        with pool.get() as conn:
            return conn

    thread, out = run_thread(use)
    assert entered.wait(JOIN)
    pool.recycle()
    gate.set()
    join(thread)
    assert "error" not in out, out
    assert out["result"].closed
    assert pool.stats().idle == 0


def test_a_connection_a_fill_opens_during_recycle_is_retired() -> None:
    factory, entered, gate = gated_factory()
    pool: Pool[Conn] = Pool(factory, min_size=1)
    pool.open()  # the fill's connect waits at the gate
    assert entered.wait(JOIN)
    pool.recycle()
    gate.set()
    deadline = time.monotonic() + JOIN
    while pool.stats().pending:
        assert time.monotonic() < deadline, "the fill did not end"
        time.sleep(0.01)
    assert factory.made[0].closed
    pool.maintain()  # min_size is refilled with a connection of the new generation
    with pool.get() as conn:
        assert conn is not factory.made[0] and not conn.closed


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"check_after": -1}, ValueError, ("check_after", "-1")),
        ({"check_after": "1"}, TypeError, ("check_after", "'1'")),
        ({"keepalive": 0}, ValueError, ("keepalive", "0")),
        ({"probe_interval": 0}, ValueError, ("probe_interval", "0")),
        ({"kwargs": 3}, TypeError, ("kwargs", "3")),
    ],
)
def test_bad_options_name_the_bad_value(
    options: dict[str, Any], error: type[Exception], words: tuple[str, ...]
) -> None:
    with pytest.raises(error) as info:
        Pool(Factory(), **options)
    assert all(word in str(info.value) for word in words), info.value


# -- 3: the circuit -------------------------------------------------------------------


def test_connects_in_flight_when_the_circuit_opens_count_once(clock: Clock) -> None:
    factory = Factory()
    pool: Pool[Conn] = Pool(
        factory, max_size=6, fail_fast_after=1, retry_delay=1.0, max_retry_delay=60.0,
        probe_interval=None,
    )
    factory.fail = OSError("refused")
    started = threading.Semaphore(0)
    go = threading.Event()

    def hook() -> None:
        started.release()
        assert go.wait(JOIN)

    factory.hook = hook
    threads = [run_thread(lambda: pool.get(timeout=JOIN).__enter__()) for _ in range(6)]
    for _ in range(6):
        assert started.acquire(timeout=JOIN)
    go.set()
    for thread, out in threads:
        join(thread)
        assert isinstance(out["error"], OSError)
    stats = pool.stats()
    assert (stats.circuit, stats.connect_failures, stats.errors) == ("open", 1, 6)
    assert pool._breaker.retry_at is not None
    # One failure's delay (1 s +-25%), not 2^5 s.
    assert pool._breaker.retry_at - clock.now <= 1.25


def test_probe_thread_closes_the_circuit_soon_after_the_factory_works() -> None:
    factory = Factory()
    pool: Pool[Conn] = Pool(
        factory, name="closes", max_size=2, fail_fast_after=2, probe_interval=0.05
    )
    factory.fail = OSError("refused")
    for _ in range(2):
        with pytest.raises(OSError), pool.get():
            pass
    assert pool.stats().circuit in ("open", "half-open")
    deadline = time.monotonic() + JOIN
    while factory.calls < 5:  # the probe thread tries, nobody else
        assert time.monotonic() < deadline
        with pytest.raises(PoolUnavailable), pool.get():
            pass  # callers fail fast meanwhile
        time.sleep(0.01)
    factory.fail = None
    while pool.stats().circuit != "closed":
        assert time.monotonic() < deadline, "the probe thread did not close the circuit"
        time.sleep(0.01)
    stats = pool.stats()
    assert (stats.idle, stats.size) == (1, 1), stats  # the probe's connection, kept
    with pool.get() as conn:
        assert conn is factory.made[0]
    pool.close()
    while any(t.name == "closes-probe" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the probe thread did not end"
        time.sleep(0.01)


def test_the_probe_thread_stops_when_the_pool_closes() -> None:
    factory = Factory()
    factory.fail = OSError("refused")
    pool: Pool[Conn] = Pool(factory, name="stops", fail_fast_after=1, probe_interval=0.02)
    with pytest.raises(OSError), pool.get():
        pass
    pool.close()
    deadline = time.monotonic() + JOIN
    while any(t.name == "stops-probe" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_probe_thread_ends_when_a_pool_is_dropped_without_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Captured log records would keep the failures' tracebacks, hence the pool, alive.
    monkeypatch.setattr(logging.getLogger("poodle_cherrypy"), "disabled", True)
    factory = Factory()
    factory.fail = OSError("refused")
    pool: Pool[Conn] = Pool(factory, name="dropped", fail_fast_after=1, probe_interval=0.02)
    with pytest.raises(OSError), pool.get():
        pass
    assert any(t.name == "dropped-probe" for t in threading.enumerate())
    ref = weakref.ref(pool)
    # The factory raises one exception object, whose traceback keeps the frames (hence
    # the pool) of every failed connect: the test lets go of it too.
    del pool, factory
    deadline = time.monotonic() + JOIN
    while ref() is not None or any(t.name == "dropped-probe" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the probe thread keeps a dropped pool alive"
        gc.collect()
        time.sleep(0.01)


# -- 5: credentials that rotate ----------------------------------------------------------


def test_callable_args_and_kwargs_are_called_at_each_connect() -> None:
    tokens = iter(range(100))
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def connect(*args: Any, **kwargs: Any) -> Conn:
        seen.append((args, kwargs))
        return Conn()

    pool: Pool[Conn] = Pool(
        connect, args=lambda: ("db",), kwargs=lambda: {"password": f"token-{next(tokens)}"}
    )
    fill(pool, 2)
    assert seen == [(("db",), {"password": "token-0"}), (("db",), {"password": "token-1"})]
    pool.recycle()  # after a rotation: the old ones go, new ones get the new token
    with pool.get():
        pass
    assert seen[-1] == (("db",), {"password": "token-2"})


def test_a_failing_or_wrong_credentials_callable_is_a_failed_connect() -> None:
    def secret_store() -> dict[str, Any]:
        raise OSError("secret store unreachable")

    pool: Pool[Conn] = Pool(Factory(), kwargs=secret_store, fail_fast_after=0)
    with pytest.raises(OSError, match="secret store"), pool.get():
        pass
    bad: Pool[Conn] = Pool(Factory(), kwargs=lambda: ["x"])  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="kwargs callable must return a mapping"), bad.get():
        pass
    assert (pool.stats().errors, bad.stats().errors) == (1, 1)


def credentials() -> dict[str, Any]:
    """A kwargs callable for the config test."""
    return {"token": "fresh"}


def test_config_kwargs_names_a_callable() -> None:
    seen: list[dict[str, Any]] = []

    def connect(**kwargs: Any) -> Conn:
        seen.append(kwargs)
        return Conn()

    pool = build_pool(
        "db", {"factory": connect, "kwargs": "test_pool_restart:credentials"}, "poodle.db"
    )
    with pool.get():
        pass
    assert seen == [{"token": "fresh"}]
    with pytest.raises(ValueError, match=r"poodle\.db\.kwargs"):
        build_pool("db", {"factory": connect, "kwargs": "nowhere:x"}, "poodle.db")
