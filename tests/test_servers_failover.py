"""Failover (issue 19): a primary and its streaming standby of our own
(tests/throwaway.py, ``postgres_pair``), the primary stopped and the standby
promoted (``pg_ctl promote``) under load. Never the machine's own server.

- The sample app (in this process, on cheroot), its pool on a multi-host DSN
  with the failover recipe (``drivers.psycopg_failover_connect``,
  ``psycopg_primary_check``, ``psycopg_primary_broken``), 16 clients each
  creating documents (``PUT /docs/<new id>``, 201) over HTTP; the primary
  stopped (``-m immediate`` or ``-m fast``), :data:`GAP` seconds without a
  primary (a failover manager's detection time), then the promotion.
  Targets: no 500 except for requests in flight when the primary went away
  (the others get 503 with ``Retry-After``), the first write within 1 s of
  the promotion, at most ``drivers.FAILOVER_MAX_CONNECTING`` connects in
  flight at once, and with synchronous replication no acknowledged write
  missing on the promoted standby (without it, the count is printed).
- The pool itself on a standby: a connection whose server reports
  ``in_hot_standby`` is discarded without a round trip and moves the epoch,
  a write refused as read-only (25006) too, and after the promotion the same
  server's connections are kept.

Each test prints its figures whether or not pytest captures output.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from conftest import require_module, serve_sample_app, unavailable
from test_servers_restart import (
    CLIENTS,
    RECOVERY_TARGET,
    Client,
    Outcome,
    assert_500s_were_in_flight,
    run_load,
)
from throwaway import ThrowawayPostgres, postgres_pair

from poodle_cherrypy import Pool, drivers

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.restart]

POOL_SIZE = 8
#: Seconds between the primary gone and the promotion begun.
GAP = 1.0


@pytest.fixture(autouse=True)
def _binaries() -> None:
    require_module("psycopg")
    if not glob.glob("/usr/lib/postgresql/*/bin/pg_basebackup"):
        unavailable("no /usr/lib/postgresql/<version>/bin/pg_basebackup for a throwaway standby")


def failover_dsn(primary: ThrowawayPostgres, standby: ThrowawayPostgres) -> str:
    """Both servers, the primary first, as libpq's multi-host conninfo."""
    return (
        f"host=127.0.0.1,127.0.0.1 port={primary.port},{standby.port} "
        "user=postgres dbname=postgres"
    )


class Gauge:
    """How many calls of a wrapped callable are under way, and the most at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.calls = 0
        self.longest = 0.0

    def reset(self) -> None:
        """The most at once from here on."""
        with self._lock:
            self.most = self.now

    def wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.now += 1
                self.calls += 1
                self.most = max(self.most, self.now)
            start = time.monotonic()
            try:
                return func(*args, **kwargs)
            finally:
                took = time.monotonic() - start
                with self._lock:
                    self.now -= 1
                    self.longest = max(self.longest, took)

        return counted


def watch_promotion(standby: ThrowawayPostgres, times: dict[str, float]) -> None:
    """Ask the standby every 2 ms whether it is in recovery; put the moment it
    first says no in ``times["writable"]``: the promotion itself (``pg_ctl
    promote -w`` polls, and may return a few hundred ms later)."""
    import psycopg

    with psycopg.connect(standby.dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and not row[0]:
                times["writable"] = time.monotonic()
                return
            time.sleep(0.002)


def stored_ids(dsn: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM docs")}


@pytest.mark.parametrize(
    ("synchronous", "mode"),
    [(True, "immediate"), (True, "fast"), (False, "immediate")],
    ids=["sync-immediate", "sync-fast", "async-immediate"],
)
def test_failover_under_load(
    cp_server: str,
    synchronous: bool,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import cherrypy

    from poodle_cherrypy import get_pool
    from sample_app import db

    caplog.set_level(logging.INFO, "poodle_cherrypy")
    with postgres_pair(synchronous) as (primary, standby):
        dsn = failover_dsn(primary, standby)
        # The libpq connects the recipe runs, and the callers of the factory
        # (those waiting for a connect of their own included).
        connects, callers = Gauge(), Gauge()
        monkeypatch.setattr(drivers, "psycopg_connect", connects.wrap(drivers.psycopg_connect))
        spec = {
            "factory": callers.wrap(drivers.psycopg_failover_connect),
            "args": (dsn,),
            "kwargs": {"autocommit": True, "application_name": "failover test"},
            "max_size": POOL_SIZE,
            "timeout": 10.0,
            "reset": db.rollback,
            "check": drivers.psycopg_primary_check,
            "broken": drivers.psycopg_primary_broken,
            "keepalive": 30.0,
        }
        served = serve_sample_app(cp_server, dsn, POOL_SIZE, spec)
        base = next(served)
        try:
            clients = [Client(base) for _ in range(CLIENTS)]

            def work(i: int, n: int) -> Outcome:
                key = f"c{i}-{n}"
                return clients[i].call("PUT", f"/docs/{key}", {"n": n}, key)

            times: dict[str, float] = {}

            def failover() -> tuple[float, float, float]:
                stop_began = time.monotonic()
                primary.stop(mode)
                down = time.monotonic()
                connects.reset()
                callers.reset()
                time.sleep(GAP)
                watcher = threading.Thread(target=watch_promotion, args=(standby, times))
                watcher.start()
                times["promote"] = time.monotonic()
                times["pg_ctl"] = standby.promote()
                watcher.join(30)
                # The watcher may be late (16 clients and the server share
                # this process): the promotion is the earlier of the two.
                return stop_began, down, min(times["writable"], times["pg_ctl"])

            outcomes, stop_began, down, promoted = run_load(work, failover)
            stats = get_pool("default", cherrypy.engine).stats()
        finally:
            served.close()
        assert not standby.in_recovery()
        stored = stored_ids(standby.dsn)
    acknowledged = {o.key for o in outcomes if o.status == 201}
    lost = acknowledged - stored
    after = [o for o in outcomes if o.status == 201 and o.start >= down]
    first_begun_after = min(
        (o.end for o in after if o.start >= promoted), default=float("inf")
    ) - promoted
    counts = Counter(o.status for o in outcomes if o.end >= stop_began)
    in_flight = Counter(o.status for o in outcomes if o.start < down and o.end >= stop_began)
    broken_lines = [r for r in caplog.records if "found broken" in r.getMessage()]
    # The first write that succeeded after the primary went away, from the
    # moment the standby took writes (and from pg_ctl promote begun).
    recovery = min((o.end for o in after), default=float("inf")) - promoted
    with capsys.disabled():
        print(
            f"\n[failover] primary stopped -m {mode}, {GAP:g} s without a primary, "
            f"{'synchronous' if synchronous else 'asynchronous'} replication, {CLIENTS} writers, "
            f"pool of {POOL_SIZE}: recovery {recovery * 1000:.0f} ms after the standby took "
            f"writes ({(recovery + promoted - times['promote']) * 1000:.0f} ms after pg_ctl "
            f"promote began; pg_ctl returned {(times['pg_ctl'] - promoted) * 1000:.0f} ms after "
            f"it did; the first write begun after it ended "
            f"{first_begun_after * 1000:.0f} ms after); from the stop on: "
            f"{dict(sorted(counts.items()))}, of those in flight at the stop "
            f"{dict(sorted(in_flight.items()))}; connects in flight at most {connects.most} "
            f"(callers of the factory at most {callers.most}; {connects.calls} connects in all, "
            f"the longest {connects.longest * 1000:.0f} ms); discarded {stats.discarded}, "
            f"'found broken' lines {len(broken_lines)}; {len(acknowledged)} writes "
            f"acknowledged, {len(lost)} not on the promoted standby"
        )
    assert not [o for o in outcomes if o.status not in (201, 500, 503)], Counter(
        o.status for o in outcomes
    )
    assert_500s_were_in_flight(outcomes, stop_began, down)
    assert counts[201] > 0 and after, "no write succeeded after the failover"
    assert recovery <= RECOVERY_TARGET
    assert connects.most <= drivers.FAILOVER_MAX_CONNECTING
    # The old primary's connections were found lost: the epoch moved.
    assert stats.discarded >= 1 and broken_lines
    if synchronous:
        assert not lost, sorted(lost)


def test_a_connection_to_a_standby_is_discarded_until_it_is_promoted(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    caplog.set_level(logging.INFO, "poodle_cherrypy")
    with postgres_pair() as (primary, standby):
        # target_session_attrs=any: the pool lands on the standby, as a pool
        # pointed at a demoted server, or at a standby by mistake, would.
        pool: Pool[Any] = Pool(
            drivers.psycopg_connect, (standby.dsn,), {"autocommit": True},
            name="standby", max_size=2,
            check=drivers.psycopg_primary_check, broken=drivers.psycopg_primary_broken,
        )
        with pool:
            with pool.get() as conn:
                assert conn.info.parameter_status("in_hot_standby") == "on"
                conn.execute("SELECT 1")  # a read works, and raises nothing
            after_read = pool.stats()
            assert (after_read.discarded, after_read.size) == (1, 0), after_read
            assert [r for r in caplog.records if "found broken" in r.getMessage()]

            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), pool.get() as conn:
                conn.execute("CREATE TABLE t (n int)")
            assert pool.stats().discarded == 2

            # An idle connection: its check (one round trip) says "standby".
            plain = psycopg.connect(standby.dsn, autocommit=True)
            try:
                assert drivers.psycopg_primary_broken(plain, None)
                with pytest.raises(RuntimeError, match="in_hot_standby"):
                    drivers.psycopg_primary_check(plain)
                primary.stop("fast")
                promoted = standby.promote()
                # The server reports the promotion itself; the check's round
                # trip reads it.
                drivers.psycopg_primary_check(plain)
                assert plain.info.parameter_status("in_hot_standby") == "off"
                assert not drivers.psycopg_primary_broken(plain, None)
            finally:
                plain.close()

            with pool.get() as conn:
                conn.execute("CREATE TABLE t (n int)")
            first_write = time.monotonic() - promoted
            stats = pool.stats()
            assert (stats.discarded, stats.idle) == (2, 1), stats
    with capsys.disabled():
        print(f"\n[failover] a pool on the standby: 2 connections discarded while it was one "
              f"(a read, a refused write), kept after the promotion; first write "
              f"{first_write * 1000:.0f} ms after it")
