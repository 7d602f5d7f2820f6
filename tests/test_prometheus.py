"""The Prometheus collector and its /metrics page (issue 12, item 3): scraped
over real HTTP from cheroot and parsed with prometheus_client's own parser."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import cherrypy
import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from poodle_cherrypy import BUCKET_BOUNDS, PoodlePlugin, Pool, PoolTimeout  # noqa: E402
from poodle_cherrypy.prometheus import MetricsPage, PoolCollector  # noqa: E402


class Conn:
    def close(self) -> None:
        pass


def scrape(base: str, path: str = "/metrics", accept: str = "") -> tuple[int, str, str]:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Accept": accept} if accept else {})
        res = conn.getresponse()
        return res.status, res.getheader("Content-Type", ""), res.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def served(cp_server: str) -> Iterator[tuple[str, Pool[Conn], Pool[Conn]]]:
    """Two pools on the engine's plugin, a collector with a worker label, and
    /metrics on the real server, after a scripted workload."""
    db = Pool(Conn, name="db", min_size=1, max_size=3)
    cache = Pool(Conn, name="cache", max_size=1)
    PoodlePlugin(cherrypy.engine, {"db": db, "cache": cache}).subscribe()
    registry = CollectorRegistry()
    registry.register(PoolCollector(labels={"worker": "7"}))
    cherrypy.tree.mount(MetricsPage(registry), "/metrics")
    cherrypy.engine.start()
    try:
        for _ in range(5):
            with db.get():
                pass
        held = threading.Event()
        done = threading.Event()

        def hold() -> None:
            with cache.get():
                held.set()
                assert done.wait(60)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert held.wait(60)
        with pytest.raises(PoolTimeout), cache.get(timeout=0):
            pass
        db_lease = db.get()
        db_lease.__enter__()  # one db connection in use during the scrape
        yield cp_server, db, cache
        db_lease.__exit__(None, None, None)
        done.set()
        holder.join(60)
    finally:
        cherrypy.engine.stop()


def test_scrape_has_every_metric_with_the_exporter_names(
    served: tuple[str, Pool[Conn], Pool[Conn]],
) -> None:
    base, db, cache = served
    status, content_type, text = scrape(base)
    assert status == 200 and content_type.replace(" ", "").startswith("text/plain;version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    kinds = {name: f.type for name, f in families.items()}
    assert kinds == {
        "db_client_connection_count": "gauge",
        "db_client_connection_idle_max": "gauge",
        "db_client_connection_idle_min": "gauge",
        "db_client_connection_max": "gauge",
        "db_client_connection_pending_requests": "gauge",
        "db_client_connection_timeouts": "counter",
        "db_client_connection_create_time_seconds": "histogram",
        "db_client_connection_wait_time_seconds": "histogram",
        "db_client_connection_use_time_seconds": "histogram",
    }
    got = samples(text)

    def value(name: str, pool: str, **labels: str) -> float:
        return got[(name, tuple(sorted({"pool_name": pool, "worker": "7", **labels}.items())))]

    stats = {"db": db.stats(), "cache": cache.stats()}
    for pool, s in stats.items():
        assert value("db_client_connection_count", pool, state="idle") == s.idle
        assert value("db_client_connection_count", pool, state="used") == s.in_use
        assert value("db_client_connection_max", pool) == s.max_size
        assert value("db_client_connection_idle_max", pool) == s.max_size
        assert value("db_client_connection_idle_min", pool) == s.min_size
        assert value("db_client_connection_pending_requests", pool) == s.waiting
        assert value("db_client_connection_timeouts_total", pool) == s.timeouts
        for field in ("create_time", "wait_time", "use_time"):
            h = getattr(s, field)
            name = f"db_client_connection_{field}_seconds"
            assert value(f"{name}_count", pool) == h.count
            assert value(f"{name}_sum", pool) == pytest.approx(h.sum)
            assert value(f"{name}_bucket", pool, le="+Inf") == h.count
            for bound, n in zip(BUCKET_BOUNDS, h.buckets, strict=False):
                assert value(f"{name}_bucket", pool, le=repr(bound)) == n
    # The workload as scripted: 6 db checkouts (one still out), a cache timeout.
    assert value("db_client_connection_count", "db", state="used") == 1
    assert value("db_client_connection_wait_time_seconds_count", "db") == 6
    assert value("db_client_connection_use_time_seconds_count", "db") == 5
    assert value("db_client_connection_timeouts_total", "cache") == 1
    assert value("db_client_connection_max", "db") == 3


def test_openmetrics_when_asked(served: tuple[str, Pool[Conn], Pool[Conn]]) -> None:
    status, content_type, text = scrape(served[0], accept="application/openmetrics-text")
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert "# UNIT db_client_connection_wait_time_seconds seconds" in text
    assert text.rstrip().endswith("# EOF")


def test_given_pools_only_and_no_plugin_no_pools(cp_engine: Any) -> None:
    a, b = Pool(Conn, name="a"), Pool(Conn, name="b")
    registry = CollectorRegistry()
    registry.register(PoolCollector([a]))
    names = {s.labels["pool_name"] for f in registry.collect() for s in f.samples}
    assert names == {"a"}
    empty = CollectorRegistry()
    empty.register(PoolCollector())  # no plugin on the engine: nothing, no error
    assert all(not f.samples for f in empty.collect())
    del b


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"pools": "db"}, TypeError, "got 'db'"),
        ({"pools": [object()]}, TypeError, "Pool objects only"),
        ({"labels": {"worker": 3}}, TypeError, "'worker': 3"),
        ({"labels": {"pool_name": "x"}}, ValueError, "'pool_name'"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        PoolCollector(**kwargs)


def test_the_collector_refuses_two_pools_of_one_name() -> None:
    # Their samples would carry the same labels: the scrape would be refused
    # (or one pool hidden) long after the mistake was made.
    first, second = Pool(Conn, name="orders"), Pool(Conn, name="orders")
    with pytest.raises(ValueError, match="two pools are named 'orders'"):
        PoolCollector([first, second])
    PoolCollector([first, Pool(Conn, name="billing")])  # distinct names are fine
