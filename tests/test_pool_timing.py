"""The pool's timing histograms: wait, use and connect time (issue 12, item 1),
and the recent figures a PoolTimeout message gives (item 5).

Most tests freeze the pool's clock (the ``clock`` fixture) and advance it by
binary fractions, so that every recorded value is known exactly; the threaded
test uses the real clock and checks only what holds whatever the timing: the
snapshot's consistency.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from test_pool import JOIN, Clock, Factory, join, run_thread, wait_until

import poodle_cherrypy.pool as pool_module
from poodle_cherrypy import BUCKET_BOUNDS, Histogram, Pool, PoolTimeout


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The pool's clock, frozen (waits still use real time: threading timeouts)."""
    fake = Clock()
    monkeypatch.setattr(pool_module, "_monotonic", fake)
    return fake


def histogram(*values: float) -> Histogram:
    """A snapshot of ``values`` counted the way the pool counts them."""
    counts = [0] * (len(BUCKET_BOUNDS) + 1)
    for value in values:
        counts[sum(1 for bound in BUCKET_BOUNDS if bound < value)] += 1
    return Histogram.of_counts(counts, sum(values))


def consistent(pool: Pool[Any]) -> None:
    stats = pool.stats()
    assert stats.wait_time.count == stats.checkouts
    assert stats.use_time.count == stats.checkouts - stats.in_use
    assert stats.create_time.count == stats.created
    for h in (stats.wait_time, stats.use_time, stats.create_time):
        assert list(h.buckets) == sorted(h.buckets) and h.buckets[-1] == h.count


# -- the snapshot ------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_le() -> None:
    h = histogram(0.0, 0.0001, 0.0002, 0.3, 100.0)
    assert h.bounds == BUCKET_BOUNDS and len(h.buckets) == len(BUCKET_BOUNDS) + 1
    assert h.buckets[0] == 2  # 0 and 0.0001: "le" includes the bound
    assert h.buckets[1] == 3
    assert h.buckets[BUCKET_BOUNDS.index(0.5)] == 4
    assert h.buckets[-2] == 4 and h.buckets[-1] == h.count == 5
    assert h.sum == pytest.approx(100.3003)
    assert h.mean == pytest.approx(100.3003 / 5)


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    h = histogram(*[0.2] * 100)  # all in (0.1, 0.25]
    assert h.quantile(0.5) == pytest.approx(0.175)
    assert 0.1 < h.quantile(0.99) <= 0.25  # type: ignore[operator]
    assert h.quantile(1.0) == pytest.approx(0.25)
    assert histogram(*[0.0] * 10).quantile(0.99) == pytest.approx(0.0001 * 0.99)
    assert histogram(120.0).quantile(0.5) == 60.0  # above the top bound: "60 s or more"
    empty = histogram()
    assert empty.quantile(0.99) is None and empty.mean is None


@pytest.mark.parametrize("q", [-0.1, 1.5, "0.9", True, float("nan")])
def test_histogram_quantile_refuses_a_bad_q(q: Any) -> None:
    with pytest.raises(ValueError, match="q must be a number from 0 to 1"):
        histogram(0.1).quantile(q)


def test_histogram_since_subtracts_an_older_snapshot() -> None:
    later, earlier = histogram(0.001, 0.2, 3.0), histogram(0.001)
    assert later.since(earlier) == histogram(0.2, 3.0)
    other = Histogram(count=0, sum=0.0, bounds=(1.0,), buckets=(0, 0))
    with pytest.raises(ValueError, match="different bounds"):
        later.since(other)


def test_stats_histograms_are_json_ready() -> None:
    pool = Pool(Factory(), name="j")
    with pool.get():
        pass
    data = pool.stats().as_dict()
    assert json.loads(json.dumps(data)) == data  # lists, not tuples: survives a round trip
    assert data["wait_time"]["count"] == 1
    assert data["use_time"]["bounds"] == list(BUCKET_BOUNDS)
    assert data["create_time"]["buckets"][-1] == 1


# -- what the pool records ---------------------------------------------------


def test_connect_use_and_zero_waits_are_recorded_exactly(clock: Clock) -> None:
    factory = Factory()
    factory.hook = lambda: clock.advance(1 / 64)  # each connect takes 15.6 ms
    pool = Pool(factory, max_size=2)
    with pool.get():  # opens a connection: the wait is the connect
        clock.advance(0.375)
    with pool.get():  # idle at once: a wait of 0
        clock.advance(1.5)
        with pool.get():  # nested: the same lease, counted once
            clock.advance(0.5)
    stats = pool.stats()
    assert stats.create_time == histogram(1 / 64)
    assert stats.wait_time == histogram(1 / 64, 0.0)
    assert stats.use_time == histogram(0.375, 2.0)
    consistent(pool)


def test_a_waiter_records_its_wait_until_the_connection_is_handed_to_it(
    clock: Clock,
) -> None:
    pool = Pool(Factory(), max_size=1)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pool.get():
            holding.set()
            assert release.wait(JOIN)
            clock.advance(0.75)  # the waiter waits 0.75 s on the frozen clock

    holder, out = run_thread(hold)
    assert holding.wait(JOIN)
    waiter, got = run_thread(lambda: pool.get().__enter__())
    wait_until(lambda: pool.stats().waiting == 1, "the second caller waits")
    consistent(pool)
    release.set()
    join(holder)
    join(waiter)
    assert "error" not in out and "error" not in got
    stats = pool.stats()
    assert stats.wait_time == histogram(0.0, 0.75)
    assert stats.in_use == 1 and stats.use_time == histogram(0.75)
    consistent(pool)


def test_a_checked_connection_waits_for_its_check(clock: Clock) -> None:
    # check_after=0: checked at every checkout (the clock does not move between them).
    pool = Pool(Factory(), check=lambda conn: clock.advance(1 / 256), check_after=0)
    with pool.get():
        pass
    with pool.get():
        pass
    assert pool.stats().wait_time == histogram(0.0, 1 / 256)


def test_snapshots_stay_consistent_while_threads_churn() -> None:
    pool = Pool(Factory(), max_size=3, timeout=JOIN)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            with pool.get():
                pass

    threads = [run_thread(churn)[0] for _ in range(6)]
    try:
        for _ in range(200):
            consistent(pool)
    finally:
        stop.set()
        for thread in threads:
            join(thread)
    consistent(pool)
    stats = pool.stats()
    assert stats.in_use == 0 and stats.use_time.count == stats.checkouts > 0


def test_a_fork_starts_the_histograms_afresh() -> None:
    pool = Pool(Factory())
    with pool.get():
        pass
    pool._after_fork_in_child()
    stats = pool.stats()
    assert (stats.wait_time.count, stats.use_time.count, stats.create_time.count) == (0, 0, 0)


# -- timing listeners --------------------------------------------------------


def test_listeners_get_exactly_the_recorded_values(clock: Clock) -> None:
    factory = Factory()
    factory.hook = lambda: clock.advance(1 / 64)
    pool = Pool(factory, max_size=2)
    seen: list[tuple[str, float]] = []
    pool.add_timing_listener(lambda metric, seconds: seen.append((metric, seconds)))
    for held in (0.375, 1 / 256):
        with pool.get():
            clock.advance(held)
    stats = pool.stats()
    by_metric = {m: [s for metric, s in seen if metric == m] for m, _ in seen}
    assert by_metric == {
        "create_time": [1 / 64], "wait_time": [1 / 64, 0.0], "use_time": [0.375, 1 / 256]
    }
    assert stats.wait_time == histogram(*by_metric["wait_time"])
    assert stats.use_time == histogram(*by_metric["use_time"])


def test_a_raising_listener_is_logged_and_removed(caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool(Factory(), name="noisy")
    calls: list[str] = []

    def bad(metric: str, seconds: float) -> None:
        calls.append(metric)
        raise RuntimeError("listener bug")

    pool.add_timing_listener(bad)
    pool.add_timing_listener(bad)  # once only
    with caplog.at_level(logging.WARNING, logger="poodle_cherrypy"), pool.get():
        pass
    assert calls == ["create_time"]
    assert "pool 'noisy': timing listener" in caplog.text and "listener bug" in caplog.text
    with pool.get():
        pass
    assert calls == ["create_time"]  # removed
    pool.remove_timing_listener(bad)  # not there: ignored
    with pytest.raises(TypeError, match="listener must be callable, got 3"):
        pool.add_timing_listener(3)  # type: ignore[arg-type]


def test_removing_the_last_listener_restores_the_inlined_paths() -> None:
    pool = Pool(Factory())
    plain = (pool._plain_checkout, pool._plain_return)

    def listener(metric: str, seconds: float) -> None:
        pass

    pool.add_timing_listener(listener)
    assert (pool._plain_checkout, pool._plain_return) == (False, False)
    pool.remove_timing_listener(listener)
    assert (pool._plain_checkout, pool._plain_return) == plain == (True, True)


# -- PoolTimeout's recent figures ---------------------------------------------


def test_timeout_message_tells_an_undersized_pool_from_a_leak(clock: Clock) -> None:
    # Undersized: 20 callers queue behind a slow one, then each holds the
    # connection 1 ms: the waits are long, the uses short.
    pool = Pool(Factory(), name="small", max_size=1, timeout=JOIN)
    holding = threading.Event()
    release = threading.Event()

    def slow() -> None:
        with pool.get():
            holding.set()
            assert release.wait(JOIN)
            clock.advance(2.0)

    def quick() -> None:
        with pool.get():
            clock.advance(1 / 1024)

    holder, _ = run_thread(slow)
    assert holding.wait(JOIN)
    queued = [run_thread(quick) for _ in range(20)]
    wait_until(lambda: pool.stats().waiting == 20, "20 callers wait")
    release.set()
    for thread, out in [(holder, {}), *queued]:
        join(thread)
        assert "error" not in out
    clock.advance(30)
    stuck, _ = run_thread(lambda: pool.get().__enter__())  # never returned
    join(stuck)
    with pytest.raises(PoolTimeout) as info, pool.get(timeout=0):
        pass
    message = str(info.value)
    assert "pool 'small': no connection available within 0 s (max_size=1, in_use=1" in message
    # 22 checkouts: 20 waited 2 s and more; 21 uses of 2 s once and 1 ms else.
    assert "in the last 32 s: wait p99 2.4" in message and "over 22 checkout(s)" in message
    assert "mean use 0.0962 s over 21 return(s)" in message

    # Leaked: nothing comes back, so nothing is returned in the window.
    leaky = Pool(Factory(), name="leaky", max_size=1, timeout=0.01)
    leaky.get().__enter__()  # never exited
    clock.advance(90)
    leaky.maintain()  # a new stretch of recent history starts now...
    clock.advance(5)
    done, out = run_thread(lambda: leaky.get().__enter__())
    join(done)
    message = str(out["error"])
    assert isinstance(out["error"], PoolTimeout)
    # ...but the window counts from the older mark, so it covers 95 s.
    assert "in the last 95 s: wait p99 " in message and "over 1 checkout(s)" in message
    assert "no connection returned" in message


def test_timeout_message_with_no_history(clock: Clock) -> None:
    pool = Pool(Factory(), max_size=1)
    done, _ = run_thread(lambda: pool.get().__enter__())
    join(done)
    clock.advance(2)
    with pytest.raises(PoolTimeout) as info, pool.get(timeout=0):
        pass
    assert "in the last 2 s: wait p99 " in str(info.value)
    assert "no connection returned" in str(info.value)
