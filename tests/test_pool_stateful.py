"""A Hypothesis state machine drives the pool through random sequences of
checkouts, returns (clean or broken), closes, reopens, resizes, maintenance,
poisoned connections and factory outages, checking its invariants after
every step.

Each checkout runs in a fresh thread (a thread holds at most one connection
from a pool: a nested get() yields the same one), which leaves the lease
entered; the machine exits it later from the main thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Optional

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import poodle_cherrypy.pool as pool_module
from poodle_cherrypy import Lease, Pool, PoolClosed, PoolTimeout, PoolUnavailable

FAIL_FAST_AFTER = 3
MAX_USES = 2


class Conn:
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.closed = False
        self.close_calls = 0
        self.bad = False
        self.uses = 0  # checkouts, as the machine saw them
        self.epoch = 0  # the pool's epoch at checkout

    def close(self) -> None:
        self.closed = True
        self.close_calls += 1


class Down(ConnectionRefusedError):
    pass


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # The pool reads the machine's clock, so that the circuit breaker's
        # delays pass when a rule says so and every run is reproducible.
        self.clock = 1000.0
        pool_module._monotonic = lambda: self.clock
        self.made: list[Conn] = []
        self.failing = False
        self.factory_calls = 0
        self.pool: Pool[Conn] = Pool(
            self.factory,
            name="machine",
            max_size=3,
            timeout=0,
            max_uses=MAX_USES,
            check=lambda c: not c.bad,
            fail_fast_after=FAIL_FAST_AFTER,
            retry_delay=1.0,  # on the machine's clock: see time_passes
            max_retry_delay=4.0,
            probe_interval=None,  # callers probe, on the machine's clock
            check_after=0,
        )
        self.held: list[tuple[Lease[Conn], Conn]] = []
        self.closed = False
        self.closes = 0

    def factory(self) -> Conn:
        self.factory_calls += 1
        if self.failing:
            raise Down("database is down")
        conn = Conn()
        self.made.append(conn)
        return conn

    # -- rules ---------------------------------------------------------------

    @rule()
    def checkout(self) -> None:
        before = self.pool.stats()
        out: dict[str, Any] = {}

        def body() -> None:
            lease = self.pool.get()
            try:
                out["conn"] = lease.__enter__()
                out["lease"] = lease
            except Exception as exc:
                out["error"] = exc

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "checkout hung"
        error: Optional[Exception] = out.get("error")
        after = self.pool.stats()
        if self.closed:
            assert isinstance(error, PoolClosed), error
            return
        if isinstance(error, PoolTimeout):
            # Only when nothing was idle and no slot was free.
            assert before.idle == 0 and before.size >= before.max_size, before
            assert after.timeouts == before.timeouts + 1
            return
        if isinstance(error, PoolUnavailable):
            assert before.circuit == "open", before
            assert isinstance(error.__cause__, Down)
            return
        if isinstance(error, Down):
            assert self.failing
            return
        assert error is None, error
        conn: Conn = out["conn"]
        assert not conn.closed and not conn.bad
        assert all(conn is not other for _, other in self.held), "handed out twice"
        conn.uses += 1
        # The pool's epoch moves on at close() and when a connection is found
        # broken (every older one is then suspect, and retired on return).
        conn.epoch = self.pool._epoch
        assert conn.uses <= MAX_USES
        self.held.append((out["lease"], conn))
        if before.idle == 0 and before.size >= before.max_size:
            raise AssertionError(f"a checkout beyond max_size: {before}")

    @precondition(lambda self: self.held)
    @rule(data=st.data(), broken=st.booleans())
    def give_back(self, data: st.DataObject, broken: bool) -> None:
        index = data.draw(st.integers(0, len(self.held) - 1))
        lease, conn = self.held.pop(index)
        shrunk = self.pool.stats().size > self.pool.stats().max_size
        if broken:
            error = ConnectionResetError("gone")
            lease.__exit__(type(error), error, None)
            assert conn.closed
        else:
            lease.__exit__(None, None, None)
        # Checked out before a close() or a broken connection: disposed of on
        # return, even if reopened.
        if conn.epoch != self.pool._epoch or shrunk or conn.uses >= MAX_USES:
            assert conn.closed
        elif not broken:
            assert not conn.closed  # reused: back in the pool
        assert conn.close_calls <= 1

    @rule()
    def close(self) -> None:
        if not self.closed:
            self.closes += 1
        self.pool.close(timeout=0)
        self.closed = True
        assert self.pool.closed

    @rule()
    def open(self) -> None:
        try:
            self.pool.open(wait=True)
        except Down:
            assert self.failing
        except PoolUnavailable:
            assert self.pool.stats().circuit == "open"
        self.closed = False
        assert not self.pool.closed

    @rule(data=st.data())
    def resize(self, data: st.DataObject) -> None:
        max_size = data.draw(st.integers(1, 4), label="max_size")
        min_size = data.draw(st.integers(0, max_size), label="min_size")
        self.pool.resize(min_size=min_size, max_size=max_size)
        stats = self.pool.stats()
        assert (stats.min_size, stats.max_size) == (min_size, max_size)

    @rule()
    def maintain(self) -> None:
        calls = self.factory_calls
        self.pool.maintain()  # never raises, even with the factory down
        if self.closed:
            assert self.factory_calls == calls

    @rule()
    def poison_an_idle_connection(self) -> None:
        held = {id(c) for _, c in self.held}
        for conn in self.made:
            if not conn.closed and id(conn) not in held:
                conn.bad = True
                return

    @rule()
    def time_passes(self) -> None:
        self.clock += 10.0  # past any retry delay: the next connect probes

    @rule(failing=st.booleans())
    def factory_health(self, failing: bool) -> None:
        self.failing = failing

    # -- invariants ----------------------------------------------------------

    @invariant()
    def gauges_balance(self) -> None:
        s = self.pool.stats()
        assert s.size == s.idle + s.in_use + s.pending
        assert (s.pending, s.waiting) == (0, 0)
        assert s.in_use == len(self.held)
        assert s.size <= s.max_size or s.idle == 0  # excess only while busy
        assert s.created == len(self.made)
        assert s.created - s.discarded == s.size
        assert s.closed == self.closed
        if s.closed:
            assert s.idle == 0

    @invariant()
    def open_connections_are_exactly_the_live_ones(self) -> None:
        live = [c for c in self.made if not c.closed]
        assert len(live) == self.pool.stats().size
        assert all(c.close_calls <= 1 for c in self.made)
        held = [c for _, c in self.held]
        assert len({id(c) for c in held}) == len(held)
        assert all(not c.closed for c in held)

    def teardown(self) -> None:
        pool_module._monotonic = time.monotonic
        for lease, _ in self.held:
            lease.__exit__(None, None, None)
        self.pool.close(timeout=0)
        assert all(c.closed for c in self.made)


PoolMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_pool_state_machine = PoolMachine.TestCase
