"""sample_app on a real cheroot server, hammered by many client threads, on
SQLite and on PostgreSQL: exactly one writer wins per revision, and every
connection goes back to the pool."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Optional
from urllib.parse import urlsplit

import cherrypy
import pytest
from conftest import serve_sample_app

from poodle_cherrypy import PoodlePlugin

pytestmark = pytest.mark.slow

THREADS = 16  # as many as the server's worker threads (cp_server), twice the pool
ROUNDS = 20
DOCS = ("alpha", "beta", "gamma")
TIMEOUT = 120.0  # per request and per join: generous, for a loaded 2-core machine


@pytest.fixture
def served(cp_server: str, sample_database: str) -> Iterator[str]:
    """The sample app on a real server, pool of 8; its base URL."""
    yield from serve_sample_app(cp_server, sample_database, 8)


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        assert parts.hostname is not None and parts.port is not None
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        assert response.getheader("Content-Type") == "application/json", payload
        return response.status, json.loads(payload)

    def close(self) -> None:
        self.conn.close()


def run_threads(base: str, work: Callable[[int, Client, threading.Barrier], None]) -> None:
    """Run ``work(i, client, barrier)`` in THREADS threads at once; re-raise the first error."""
    barrier = threading.Barrier(THREADS, timeout=TIMEOUT)
    errors: list[BaseException] = []

    def target(i: int) -> None:
        client = Client(base)
        try:
            work(i, client, barrier)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    if errors:
        raise errors[0]


def assert_nothing_in_use() -> None:
    """Stop the HTTP server (it waits for the requests under way to end), then
    every pool must have all its connections back."""
    cherrypy.server.stop()
    pools = PoodlePlugin.for_bus(cherrypy.engine).pools
    assert pools
    for pool in pools.values():
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.closed) == (0, 0, False), stats


def test_concurrent_updates_exactly_one_writer_wins_per_revision(served: str) -> None:
    setup = Client(served)
    for doc in DOCS:
        assert setup.call("PUT", f"/docs/{doc}", {"n": 0})[0] == 201
    results: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(i: int, client: Client, barrier: threading.Barrier) -> None:
        barrier.wait()
        for r in range(ROUNDS):
            doc = DOCS[(i + r) % len(DOCS)]
            status, body = client.call("GET", f"/docs/{doc}")
            assert status == 200, body
            status, body = client.call("PUT", f"/docs/{doc}", {"_rev": body["_rev"], "by": i})
            with lock:
                results.append((doc, status))

    run_threads(served, work)

    assert len(results) == THREADS * ROUNDS
    assert set(Counter(status for _, status in results)) <= {200, 409}, Counter(results)
    for doc in DOCS:
        status, body = setup.call("GET", f"/docs/{doc}")
        assert status == 200
        wins = sum(1 for d, status in results if d == doc and status == 200)
        assert wins == int(body["_rev"].split("-")[0]) - 1, (doc, wins, body["_rev"])
        assert wins >= 1
    setup.close()
    assert_nothing_in_use()


def test_concurrent_creates_and_deletes_exactly_one_wins(served: str) -> None:
    ids = [f"new-{n}" for n in range(5)]
    created: list[tuple[str, int, Optional[str]]] = []
    deleted: list[tuple[str, int]] = []
    lock = threading.Lock()

    def work(i: int, client: Client, barrier: threading.Barrier) -> None:
        for doc in ids:
            barrier.wait()
            status, body = client.call("PUT", f"/docs/{doc}", {"by": i})
            with lock:
                created.append((doc, status, body.get("rev")))
        for doc in ids:
            barrier.wait()  # every create of every id has been answered
            rev = next(rev for d, status, rev in created if d == doc and status == 201)
            status, _ = client.call("DELETE", f"/docs/{doc}?rev={rev}")
            with lock:
                deleted.append((doc, status))

    run_threads(served, work)

    for doc in ids:
        statuses = Counter(status for d, status, _ in created if d == doc)
        assert statuses == {201: 1, 409: THREADS - 1}, (doc, statuses)
        statuses = Counter(status for d, status in deleted if d == doc)
        assert statuses[200] == 1 and set(statuses) <= {200, 404, 409}, (doc, statuses)
    assert_nothing_in_use()
