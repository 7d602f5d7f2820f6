"""Faults on the real servers, the same for PostgreSQL, MariaDB and Redis.

Each test injects a fault: a session killed by the server (idle or in use), an
outage (a proxy in front of the server refuses connections), a server that
accepts connections and never answers (the proxy blackholes them). Each checks
what would go wrong if the pool mishandled it: a dead connection handed out
again, a slot lost, callers waiting out a full timeout during an outage, a
pool that needs a restart to recover.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import wait_until
from servers import BLOCK_SECONDS, MariaDB, PostgreSQL, Redis, Server, elapsed
from tcpproxy import TCPProxy

from poodle_cherrypy import Pool, PoolTimeout, PoolUnavailable, is_broken

pytestmark = pytest.mark.services

MakePool = Callable[..., Pool[Any]]


@pytest.fixture(params=["postgresql", "mariadb", "redis"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    name = request.param
    if name == "postgresql":
        server: Server = PostgreSQL(request.getfixturevalue("postgres_dsn"))
    elif name == "mariadb":
        server = MariaDB(request.getfixturevalue("mysql_params"))
    else:
        server = Redis(request.getfixturevalue("redis_url"))
    yield server
    server.close()


@pytest.fixture
def make_pool(server: Server) -> Iterator[MakePool]:
    """``make_pool(factory, **options)``: a pool with the server's check and
    reset recipes (unless overridden), closed at the end of the test."""
    pools: list[Pool[Any]] = []

    def make(factory: Callable[[], Any], **options: Any) -> Pool[Any]:
        # check_after=0: these faults strike within the skip window of a
        # recently used connection, and the tests are about check itself.
        options = {"check": server.check, "check_after": 0, "reset": server.reset, **options}
        pool: Pool[Any] = Pool(factory, name=f"{server.name}-faults", **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def assert_nothing_out(pool: Pool[Any]) -> None:
    stats = pool.stats()
    assert (stats.in_use, stats.pending, stats.waiting) == (0, 0, 0), stats


# -- sessions killed by the server --------------------------------------------


def test_killing_a_session_that_ended_meanwhile_is_no_error(server: Server) -> None:
    # Server.close() kills what is left of a test's sessions: one may end
    # between its "alive?" and its kill (a pool disposing of it meanwhile),
    # and the teardown must not fail on that (CI: MariaDB's 1094).
    conn = server.factory()()
    session_id = server.opened_session(conn)
    conn.close()
    wait_until(lambda: not server.alive(session_id), 10, f"session {session_id} to end")
    server._kill(session_id)
    assert not server.alive(session_id)


@pytest.mark.parametrize("check", [True, False], ids=["check", "no-check"])
def test_session_killed_while_idle_is_never_handed_out_again(
    server: Server, make_pool: MakePool, check: bool
) -> None:
    pool = make_pool(server.factory(), max_size=1, **({} if check else {"check": None}))
    with pool.get() as conn:
        server.ping(conn)
        first = server.session_id(conn)
    server.kill(first)
    if not check:
        # Nothing looked at the idle connection: its next user finds it dead
        # (once), and the pool drops it on the way back.
        with pytest.raises(server.lost) as info, pool.get() as conn:
            assert server.opened_session(conn) == first
            server.ping(conn)
        assert is_broken(conn, info.value)
    for _ in range(3):
        with pool.get() as conn:
            server.ping(conn)
            assert server.session_id(conn) != first
    stats = pool.stats()
    assert (stats.created, stats.discarded, stats.size, stats.idle) == (2, 1, 1, 1), stats
    assert_nothing_out(pool)


def test_session_killed_in_use_is_discarded(server: Server, make_pool: MakePool) -> None:
    pool = make_pool(server.factory(), max_size=1)
    killed: list[int] = []

    def kill_when_blocking(session_id: int) -> None:
        wait_until(lambda: server.blocking(session_id), 10, "the session to block")
        server.kill(session_id)
        killed.append(session_id)

    started = time.monotonic()
    with pytest.raises(server.lost) as info, pool.get() as conn:
        first = server.session_id(conn)
        killer = threading.Thread(target=kill_when_blocking, args=(first,), daemon=True)
        killer.start()
        server.block(conn)
    took = elapsed(started)
    killer.join(15)
    assert not killer.is_alive()
    assert killed == [first]
    assert took < BLOCK_SECONDS - 2, "the kill, not the end of the statement, ended the block"
    assert is_broken(conn, info.value)
    stats = pool.stats()
    assert (stats.discarded, stats.size) == (1, 0), stats
    with pool.get() as conn:
        server.ping(conn)
        assert server.session_id(conn) != first
    assert_nothing_out(pool)


def test_link_cut_in_use_is_discarded(
    server: Server, make_pool: MakePool, tcp_proxy: Callable[[int], TCPProxy]
) -> None:
    # No goodbye from the server this time: the socket just ends mid-statement.
    proxy = tcp_proxy(server.port)
    pool = make_pool(server.factory(proxy.port), max_size=1)
    cut = threading.Event()

    def cut_when_blocking(session_id: int) -> None:
        wait_until(lambda: server.blocking(session_id), 10, "the session to block")
        proxy.refuse()
        cut.set()

    started = time.monotonic()
    with pytest.raises(server.lost) as info, pool.get() as conn:
        first = server.session_id(conn)
        cutter = threading.Thread(target=cut_when_blocking, args=(first,), daemon=True)
        cutter.start()
        server.block(conn)
    took = elapsed(started)
    cutter.join(15)
    assert not cutter.is_alive() and cut.is_set()
    assert took < BLOCK_SECONDS - 2, "the cut, not the end of the statement, ended the block"
    assert is_broken(conn, info.value)
    assert (pool.stats().discarded, pool.stats().size) == (1, 0)
    proxy.forward()
    with pool.get() as conn:
        server.ping(conn)
        assert server.session_id(conn) != first
    assert_nothing_out(pool)


def test_session_lost_in_a_block_that_swallows_the_error_is_discarded(
    server: Server, make_pool: MakePool
) -> None:
    # The block raises nothing, so the broken rule never sees the error: the
    # reset recipe (and the connection's own state) must tell.
    pool = make_pool(server.factory(), max_size=1, check=None)
    with pool.get() as conn:
        first = server.session_id(conn)
        server.kill(first)
        with pytest.raises(server.lost):
            server.ping(conn)
    stats = pool.stats()
    assert (stats.discarded, stats.size) == (1, 0), stats
    with pool.get() as conn:
        server.ping(conn)
        assert server.session_id(conn) != first
    assert_nothing_out(pool)


# -- an outage: the proxy refuses connections, then forwards again -------------


def test_outage_fails_fast_then_recovers_by_itself(
    server: Server, make_pool: MakePool, tcp_proxy: Callable[[int], TCPProxy]
) -> None:
    proxy = tcp_proxy(server.port)
    pool = make_pool(
        server.factory(proxy.port, timeout=5),
        max_size=2,
        timeout=10,
        fail_fast_after=2,
        retry_delay=0.2,
        max_retry_delay=1.0,
    )
    with pool.get() as conn:
        server.ping(conn)
        first = server.session_id(conn)

    proxy.refuse()  # the server is down: the idle connection's link is cut too
    outcomes: Counter[str] = Counter()
    slowest_unavailable = 0.0
    for _ in range(25):
        started = time.monotonic()
        try:
            with pool.get() as conn:
                server.ping(conn)
            outcomes["ok"] += 1
        except PoolUnavailable:
            outcomes["unavailable"] += 1
            slowest_unavailable = max(slowest_unavailable, elapsed(started))
        except server.lost:
            outcomes["connect failed"] += 1
        time.sleep(0.02)
    stats = pool.stats()
    print(f"{server.name} outage: {dict(outcomes)}, slowest PoolUnavailable "
          f"{slowest_unavailable * 1000:.1f} ms")
    assert outcomes["ok"] == 0
    # Two connects failed and opened the circuit; the rest, but for a probe
    # now and then, failed at once without touching the network.
    assert outcomes["unavailable"] >= 10, outcomes
    assert slowest_unavailable < 1.0  # the pool's timeout is 10 s
    assert stats.circuit in ("open", "half-open")  # half-open: its probe thread connecting
    assert stats.unavailable == outcomes["unavailable"]
    # The pool's probe thread's failed connects count too.
    assert stats.errors >= outcomes["connect failed"] == 2
    assert (stats.size, stats.discarded) == (0, 1), stats
    assert_nothing_out(pool)

    proxy.forward()
    back = time.monotonic()
    failures = 0
    while True:
        try:
            with pool.get() as conn:
                server.ping(conn)
                second = server.session_id(conn)
            break
        except (PoolUnavailable, *server.lost):
            failures += 1
        assert elapsed(back) < 10, "the pool did not recover within 10 s"
        time.sleep(0.05)
    recovery = elapsed(back)
    print(f"{server.name} recovered in {recovery:.2f} s after {failures} failed checkouts")
    assert recovery < 5.0  # max_retry_delay is 1 s (+25% jitter)
    assert second != first
    stats = pool.stats()
    assert (stats.circuit, stats.connect_failures, stats.size) == ("closed", 0, 1), stats
    assert_nothing_out(pool)


# -- a factory that hangs or fails ----------------------------------------------


def test_hanging_or_failing_connect_times_out_waiters_and_loses_no_slot(
    server: Server, make_pool: MakePool, tcp_proxy: Callable[[int], TCPProxy]
) -> None:
    proxy = tcp_proxy(server.port)
    proxy.blackhole()  # the server accepts connections and never answers
    pool = make_pool(
        server.factory(proxy.port, timeout=2),
        max_size=1,
        fail_fast_after=0,  # this test is about slots, not the circuit breaker
    )
    opener: dict[str, Any] = {}

    def open_one() -> None:
        started = time.monotonic()
        try:
            with pool.get(timeout=30):
                opener["conn"] = True
        except BaseException as exc:
            opener["error"] = exc
        opener["took"] = elapsed(started)

    thread = threading.Thread(target=open_one, daemon=True)
    thread.start()
    wait_until(
        lambda: proxy.accepted == 1 and pool.stats().pending == 1, 5, "the factory to hang"
    )
    # The only slot is taken by the hanging connect: a waiter times out on time.
    started = time.monotonic()
    with pytest.raises(PoolTimeout), pool.get(timeout=0.5):
        pass
    waited = elapsed(started)
    thread.join(15)
    assert not thread.is_alive()
    print(f"{server.name} blackhole: PoolTimeout after {waited:.3f} s, "
          f"the factory gave up after {opener['took']:.2f} s")
    assert 0.45 <= waited < 1.5
    assert isinstance(opener.get("error"), server.lost), opener
    assert 1.5 <= opener["took"] < 10  # the driver's own timeout of 2 s
    stats = pool.stats()
    assert (stats.size, stats.timeouts, stats.errors) == (0, 1, 1), stats
    assert_nothing_out(pool)

    # A factory that fails at once, with callers queued behind it: each gets
    # the error in turn and the slot comes back every time.
    proxy.refuse()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with pool.get(timeout=10):
                pass
        except BaseException as exc:
            errors.append(exc)

    callers = [threading.Thread(target=call, daemon=True) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(15)
        assert not caller.is_alive()
    assert len(errors) == 3 and all(isinstance(exc, server.lost) for exc in errors), errors
    stats = pool.stats()
    assert (stats.size, stats.errors) == (0, 4), stats
    assert_nothing_out(pool)

    proxy.forward()
    with pool.get(timeout=10) as conn:
        server.ping(conn)
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.created) == (1, 1, 1), stats
    assert_nothing_out(pool)
