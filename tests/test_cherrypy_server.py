"""tools.poodle behind a real cheroot server on 127.0.0.1, with concurrent clients."""

from __future__ import annotations

import contextlib
import http.client
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cherrypy
import pytest

from poodle_cherrypy import PoodlePlugin, Pool


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def get(base: str, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


@contextlib.contextmanager
def reading_then_hanging_up(base: str, path: str) -> Iterator[None]:
    """A client that reads the first 200 kB of a streamed answer, then hangs up."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = 0
        while received < 200_000:
            data = sock.recv(65536)
            assert data
            received += len(data)
        yield


def sqlite_pool(tmp_path: Path, **options: Any) -> Pool[sqlite3.Connection]:
    return Pool(sqlite3.connect, (str(tmp_path / "app.db"),), {"check_same_thread": False},
                name="default", reset=lambda conn: conn.rollback(), **options)


def start(pool: Pool[Any], root: object, config: dict[str, Any] | None = None) -> None:
    PoodlePlugin(cherrypy.engine, {"default": pool}).subscribe()
    cherrypy.tree.mount(root, "/", {"/": {"tools.poodle.on": True, **(config or {})}})
    cherrypy.engine.start()


class Exclusive:
    """Fails a request if its connection is held by another request at the same time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders: set[int] = set()
        self.clashes = 0
        self.served = 0

    @cherrypy.expose
    def index(self) -> str:
        conn = cherrypy.request.conn
        with self.lock:
            if id(conn) in self.holders:
                self.clashes += 1
            self.holders.add(id(conn))
        try:
            conn.execute("SELECT 1")
            time.sleep(0.001)  # let other requests run while this one holds it
            return "ok"
        finally:
            with self.lock:
                self.holders.discard(id(conn))
                self.served += 1


def test_concurrent_clients_never_share_a_connection(cp_server: str, tmp_path: Path) -> None:
    pool = sqlite_pool(tmp_path, max_size=4)
    root = Exclusive()
    start(pool, root)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(25):
                status, _ = get(cp_server, "/")
                statuses.append(status)
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()

    assert not errors
    assert statuses == [200] * 300
    assert (root.served, root.clashes) == (300, 0)
    # The last release runs after the last response has reached its client.
    wait_for(lambda: pool.stats().in_use == 0, "the last connection to come back")
    stats = pool.stats()
    assert stats.size <= 4 and stats.checkouts == 300


class Endless:
    def __init__(self, pool: Pool[Any]) -> None:
        self.pool = pool
        self.chunks = 0
        self.at_close: list[tuple[int, bool]] = []

    @cherrypy.expose
    @cherrypy.config(**{"response.stream": True})
    def stream(self) -> Iterator[bytes]:
        conn = cherrypy.request.conn
        chunk = b"x" * 65536

        def body() -> Iterator[bytes]:
            try:
                for _ in range(10_000):  # about 650 MB: far more than a client reads
                    conn.execute("SELECT 1")
                    self.chunks += 1
                    yield chunk
            finally:
                # Runs when the server stops sending: the connection must
                # still be this request's, not back in the pool.
                self.at_close.append((self.pool.stats().in_use, _usable(conn)))

        return body()


def _usable(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.Error:
        return False
    return True


def test_client_disconnecting_mid_stream_gives_the_connection_back(
    cp_server: str, tmp_path: Path
) -> None:
    pool = sqlite_pool(tmp_path)
    root = Endless(pool)
    start(pool, root)

    with reading_then_hanging_up(cp_server, "/stream"):
        assert pool.stats().in_use == 1  # held while the body streams
    # The client is gone: the server's next writes fail and it ends the request.

    wait_for(lambda: pool.stats().in_use == 0, "the connection to come back")
    assert root.at_close == [(1, True)]
    assert root.chunks < 10_000
    assert pool.stats().discarded == 0


def test_a_stream_cut_short_by_the_client_rolls_its_transaction_back(
    cp_server: str, tmp_path: Path
) -> None:
    pool = sqlite_pool(tmp_path)
    setup = sqlite3.connect(tmp_path / "app.db")
    setup.execute("CREATE TABLE exported (n INTEGER)")
    setup.commit()
    setup.close()
    written: list[int] = []

    class Export:
        @cherrypy.expose
        @cherrypy.config(**{"response.stream": True})
        def index(self) -> Iterator[bytes]:
            conn = cherrypy.request.conn

            def body() -> Iterator[bytes]:
                for n in range(10_000):  # about 650 MB: far more than the client reads
                    conn.execute("INSERT INTO exported VALUES (?)", (n,))
                    written.append(n)
                    yield b"x" * 65536

            return body()

    start(pool, Export(), {"tools.poodle.transaction": True})
    with reading_then_hanging_up(cp_server, "/"):
        pass
    # The client is gone before the end of the body: what it wrote is not kept.

    wait_for(lambda: pool.stats().in_use == 0, "the connection to come back")
    assert 0 < len(written) < 10_000
    check = sqlite3.connect(tmp_path / "app.db")
    try:
        assert check.execute("SELECT count(*) FROM exported").fetchone() == (0,)
    finally:
        check.close()
    assert pool.stats().discarded == 0  # a client going away breaks no connection


def test_engine_stop_lets_a_request_in_flight_finish_before_closing_pools(
    cp_server: str, tmp_path: Path
) -> None:
    pool = sqlite_pool(tmp_path)
    release = threading.Event()
    pool_closed_at_end: list[bool] = []

    class Slow:
        @cherrypy.expose
        def index(self) -> str:
            release.wait(30)
            cherrypy.request.conn.execute("SELECT 1")
            pool_closed_at_end.append(pool.closed)
            return "finished"

    start(pool, Slow())
    answers: list[tuple[int, bytes]] = []
    client = threading.Thread(target=lambda: answers.append(get(cp_server, "/")))
    client.start()
    wait_for(lambda: pool.stats().in_use == 1, "the request to check out")
    stopper = threading.Thread(target=cherrypy.engine.stop)
    stopper.start()
    wait_for(lambda: cherrypy.engine.state == cherrypy.engine.states.STOPPING, "stop")
    release.set()
    client.join(60)
    stopper.join(60)
    assert not client.is_alive() and not stopper.is_alive()

    assert answers == [(200, b"finished")]
    assert pool_closed_at_end == [False]
    assert pool.closed and pool.stats().size == 0


@pytest.mark.parametrize("hold", [False, True])
def test_exhausted_pool_under_real_load_answers_503_fast_and_recovers(
    cp_server: str, tmp_path: Path, hold: bool
) -> None:
    pool = sqlite_pool(tmp_path, max_size=2)
    root = Exclusive()
    start(pool, root, {"tools.poodle.timeout": 0.5})
    release = threading.Event()
    holders = []
    if hold:  # two long jobs take the whole pool: everyone else must get 503, quickly
        for _ in range(2):
            thread = threading.Thread(target=lambda: _hold(pool, release))
            thread.start()
            holders.append(thread)
        wait_for(lambda: pool.stats().in_use == 2, "the holders")
    try:
        statuses = [get(cp_server, "/")[0] for _ in range(3)]
    finally:
        release.set()
        for thread in holders:
            thread.join(30)
            assert not thread.is_alive()
    assert statuses == ([503] * 3 if hold else [200] * 3)
    assert get(cp_server, "/")[0] == 200
    wait_for(lambda: pool.stats().in_use == 0, "the connection to come back")


def _hold(pool: Pool[Any], release: threading.Event) -> None:
    with pool.get():
        release.wait(30)
