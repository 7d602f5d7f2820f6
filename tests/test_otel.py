"""OpenTelemetry metrics (issue 12, item 2): the SDK's InMemoryMetricReader
after a scripted workload on a frozen clock, so that every value is exact."""

from __future__ import annotations

import threading
from typing import Any

import cherrypy
import pytest

pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    InMemoryMetricReader,
    Sum,
)
from test_pool import JOIN, Clock, Factory, join, run_thread, wait_until

import poodle_cherrypy.pool as pool_module
from poodle_cherrypy import BUCKET_BOUNDS, PoodlePlugin, Pool, PoolTimeout, otel

POOL = "db.client.connection.pool.name"
STATE = "db.client.connection.state"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(pool_module, "_monotonic", fake)
    return fake


def collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    """The metrics of the poodle_cherrypy scope, by name."""
    data = reader.get_metrics_data()
    assert data is not None
    found = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name == "poodle_cherrypy":
                for metric in scope.metrics:
                    found[metric.name] = metric
    return found


def points(metric: Any) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}


def test_semantic_convention_names_units_kinds_attributes_and_values(clock: Clock) -> None:
    factory = Factory()
    factory.hook = lambda: clock.advance(1 / 32)  # a connect takes 31.25 ms
    pool = Pool(factory, name="main", min_size=1, max_size=2)
    other = Pool(Factory(), name="other", max_size=1)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = otel.instrument([pool, other], meter_provider=provider,
                             attributes={"service.role": "web"})  # fmt: skip

    # The script: two leases of 0.5 s and 2 s (the first connects), a third
    # still out, and a timeout on the other pool.
    with pool.get():
        clock.advance(0.5)
    with pool.get():
        clock.advance(2.0)
    pool.get().__enter__()
    holder, _ = run_thread(lambda: other.get().__enter__())
    join(holder)
    with pytest.raises(PoolTimeout), other.get(timeout=0):
        pass

    got = collect(reader)
    kinds = {
        name: (
            type(m.data).__name__
            + ("" if not isinstance(m.data, Sum) else "+" if m.data.is_monotonic else "+-"),
            m.unit,
        )
        for name, m in got.items()
    }
    assert kinds == {
        "db.client.connection.count": ("Sum+-", "{connection}"),
        "db.client.connection.idle.max": ("Sum+-", "{connection}"),
        "db.client.connection.idle.min": ("Sum+-", "{connection}"),
        "db.client.connection.max": ("Sum+-", "{connection}"),
        "db.client.connection.pending_requests": ("Sum+-", "{request}"),
        "db.client.connection.timeouts": ("Sum+", "{timeout}"),
        "db.client.connection.create_time": ("Histogram", "s"),
        "db.client.connection.wait_time": ("Histogram", "s"),
        "db.client.connection.use_time": ("Histogram", "s"),
    }

    def attrs(name: str, **more: str) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted({POOL: name, "service.role": "web", **more}.items()))

    count = points(got["db.client.connection.count"])
    assert {k: p.value for k, p in count.items()} == {
        attrs("main", **{STATE: "idle"}): 0,  # its one connection is out
        attrs("main", **{STATE: "used"}): 1,
        attrs("other", **{STATE: "idle"}): 0,
        attrs("other", **{STATE: "used"}): 1,
    }
    for name, expected in [
        ("db.client.connection.max", {"main": 2, "other": 1}),
        ("db.client.connection.idle.max", {"main": 2, "other": 1}),
        ("db.client.connection.idle.min", {"main": 1, "other": 0}),
        ("db.client.connection.pending_requests", {"main": 0, "other": 0}),
        ("db.client.connection.timeouts", {"main": 0, "other": 1}),
    ]:
        assert {k: p.value for k, p in points(got[name]).items()} == {
            attrs(pool_name): value for pool_name, value in expected.items()
        }, name

    wait = points(got["db.client.connection.wait_time"])[attrs("main")]
    use = points(got["db.client.connection.use_time"])[attrs("main")]
    create = points(got["db.client.connection.create_time"])[attrs("main")]
    assert isinstance(got["db.client.connection.wait_time"].data, Histogram)
    for point in (wait, use, create):
        assert list(point.explicit_bounds) == list(BUCKET_BOUNDS)
    # Exactly the values recorded, and the pool's own histograms agree.
    assert (create.count, create.sum) == (1, 1 / 32)
    assert (wait.count, wait.sum) == (3, 1 / 32)  # the connect, then 0 twice
    assert (use.count, use.sum, use.max) == (2, 2.5, 2.0)
    stats = pool.stats()
    for point, h in [(wait, stats.wait_time), (use, stats.use_time), (create, stats.create_time)]:
        cumulative = [sum(point.bucket_counts[: i + 1]) for i in range(len(point.bucket_counts))]
        assert (point.count, point.sum, tuple(cumulative)) == (h.count, h.sum, h.buckets)

    handle.uninstrument()
    with pool.get():
        pass
    assert pool._listeners == () and other._listeners == ()


def test_the_plugins_pools_including_ones_added_later(cp_engine: Any) -> None:
    plugin = PoodlePlugin(cherrypy.engine, {"first": Pool(Factory())})
    plugin.subscribe()
    reader = InMemoryMetricReader()
    otel.instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    names = {dict(k)[POOL] for k in points(collect(reader)["db.client.connection.max"])}
    assert names == {"first"}
    later = plugin.add("later", Pool(Factory(), max_size=3))
    collect(reader)  # the next collection gives the new pool its listener
    with later.get():
        pass
    got = collect(reader)
    assert {dict(k)[POOL] for k in points(got["db.client.connection.max"])} == {"first", "later"}
    wait = points(got["db.client.connection.wait_time"])
    assert {dict(k)[POOL]: p.count for k, p in wait.items()} == {"later": 1}


def test_a_hand_off_read_before_the_waiter_began_records_a_wait_of_0(clock: Clock) -> None:
    # The releasing thread reads the clock, then a caller begins (reading it
    # later) and queues before the releaser takes the lock: the hand-off's
    # reading is older than the waiter's start. The fake clock going back
    # plays that interleaving. A wait is never negative (OpenTelemetry
    # refuses a negative value: the test below lost 1 in 5 runs to this).
    pool = Pool(Factory(), max_size=1, timeout=JOIN)
    reader = InMemoryMetricReader()
    otel.instrument(pool, meter_provider=MeterProvider(metric_readers=[reader]))
    seen: list[tuple[str, float]] = []
    pool.add_timing_listener(lambda metric, seconds: seen.append((metric, seconds)))
    lease = pool.get()
    lease.__enter__()
    clock.now = 1011.0  # the waiter begins at 1011
    waiter, out = run_thread(lambda: pool.get().__enter__())
    wait_until(lambda: pool.stats().waiting == 1, "the second caller to wait")
    clock.now = 1010.0  # the releaser's reading, taken before the waiter began
    lease.__exit__(None, None, None)
    join(waiter)
    assert "error" not in out
    waits = [seconds for metric, seconds in seen if metric == "wait_time"]
    assert waits == [0.0, 0.0]
    assert min(seconds for _, seconds in seen) >= 0
    assert pool.stats().wait_time.sum == 0
    (point,) = points(collect(reader)["db.client.connection.wait_time"]).values()
    assert (point.count, point.sum) == (2, 0)


def test_threads_record_every_value() -> None:
    pool = Pool(Factory(), max_size=2, timeout=JOIN)
    reader = InMemoryMetricReader()
    otel.instrument(pool, meter_provider=MeterProvider(metric_readers=[reader]))

    def churn() -> None:
        for _ in range(200):
            with pool.get():
                pass

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        join(thread)
    got = collect(reader)
    stats = pool.stats()
    for field in ("wait_time", "use_time", "create_time"):
        (point,) = points(got[f"db.client.connection.{field}"]).values()
        h = getattr(stats, field)
        assert (point.count, point.sum) == (h.count, pytest.approx(h.sum))
    assert stats.checkouts == 800


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="got 'db'"):
        otel.instrument("db")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attribute names must be str, got 1"):
        otel.instrument([], attributes={1: "x"})  # type: ignore[dict-item]
