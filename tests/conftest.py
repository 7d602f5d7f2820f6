"""Shared fixtures: the real servers on loopback, and free ports.

A test that needs PostgreSQL, MariaDB or Redis takes the matching fixture. On a
machine without that server the test is skipped with the reason; with
``POODLE_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets) it fails instead, so CI can
never go green by skipping.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest
from tcpproxy import TCPProxy

REQUIRE_SERVICES = os.environ.get("POODLE_REQUIRE_SERVICES") == "1"

POSTGRES_DSN = os.environ.get("POODLE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_PARAMS: dict[str, Any] = {
    "host": os.environ.get("POODLE_MYSQL_HOST", "127.0.0.1"),
    "port": int(os.environ.get("POODLE_MYSQL_PORT", "3306")),
    "user": os.environ.get("POODLE_MYSQL_USER", "root"),
    "password": os.environ.get("POODLE_MYSQL_PASSWORD", ""),
    "database": os.environ.get("POODLE_MYSQL_DATABASE", "test"),
}
REDIS_URL = os.environ.get("POODLE_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(reason: str) -> None:
    """Skip the calling test with ``reason``, or fail it when services are required."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (POODLE_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def require_port(service: str, host: str, port: int) -> None:
    """Skip/fail unless something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        unavailable(f"{service} is not reachable on {host}:{port}: {exc}")


def require_module(name: str) -> Any:
    """Import a driver, or skip/fail naming the missing package."""
    try:
        return __import__(name)
    except ImportError as exc:
        unavailable(f"the {name} package is not installed: {exc}")


@pytest.fixture
def postgres_dsn() -> str:
    """A DSN for the PostgreSQL on loopback (psycopg 3 importable)."""
    require_module("psycopg")
    require_port("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_DSN


@pytest.fixture
def database(postgres_dsn: str) -> Iterator[str]:
    """A throwaway PostgreSQL database's DSN, dropped after the test (the
    deployment tests' own: see tests/deployment.py)."""
    from deployment import throwaway_database

    with throwaway_database(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture
def mysql_params() -> dict[str, Any]:
    """PyMySQL connect() keyword arguments for the MariaDB on loopback."""
    require_module("pymysql")
    require_port("MariaDB", MYSQL_PARAMS["host"], MYSQL_PARAMS["port"])
    return dict(MYSQL_PARAMS)


@pytest.fixture
def redis_url() -> str:
    """A URL for the Redis on loopback (redis-py importable)."""
    require_module("redis")
    require_port("Redis", "127.0.0.1", 6379)
    return REDIS_URL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def free_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    yield _free_port()


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` every 20 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or predicate!r}")
        time.sleep(0.02)


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[int], TCPProxy]]:
    """Make a :class:`TCPProxy` in front of a loopback port: ``tcp_proxy(5432)``.

    Every proxy made is closed at the end, and the test fails if one of its
    threads is still running.
    """
    proxies: list[TCPProxy] = []

    def make(port: int) -> TCPProxy:
        proxy = TCPProxy(port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
    assert [proxy.threads_alive() for proxy in proxies] == [0] * len(proxies)


# -- CherryPy ----------------------------------------------------------------


def _reset_cherrypy() -> None:
    import cherrypy

    from poodle_cherrypy.plugin import PoodlePlugin

    if cherrypy.engine.state in (cherrypy.engine.states.STARTED, cherrypy.engine.states.STARTING):
        cherrypy.engine.stop()
    try:
        plugin = PoodlePlugin.for_bus(cherrypy.engine)
    except LookupError:
        pass
    else:
        plugin.stop()
        plugin.unsubscribe()
    cherrypy.server.unsubscribe()
    cherrypy.tree.apps.clear()
    cherrypy.config.reset()
    # test_suite: no autoreloader (other files change while tests run), no checker.
    cherrypy.config.update({"environment": "test_suite", "log.screen": False})


@pytest.fixture
def cp_engine() -> Iterator[Any]:
    """``cherrypy.engine``, configured for tests, with no HTTP server subscribed.

    The test mounts its apps, declares its pools and starts the engine; the
    fixture stops it and forgets the apps, the PoodlePlugin and the config.
    """
    import poodle_cherrypy  # noqa: F401  (registers tools.poodle and the config namespace)

    _reset_cherrypy()
    import cherrypy

    yield cherrypy.engine
    _reset_cherrypy()


@pytest.fixture
def cp_server(cp_engine: Any, free_port: int) -> str:
    """``cherrypy.server`` subscribed on 127.0.0.1 and a free port; its base URL.

    The HTTP server starts with the engine (``cp_engine.start()``).
    """
    import cherrypy

    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": free_port,
            "server.thread_pool": 16,
            "server.shutdown_timeout": 5,
            # CherryPy's default listen backlog is 5: a burst of more client
            # threads connecting at once can then see "connection reset".
            "server.socket_queue_size": 64,
        }
    )
    # cherrypy.server keeps the HTTP server it made at its first start, bound
    # to that start's port: make it build a new one on this test's port.
    cherrypy.server.httpserver = None
    cherrypy.server.subscribe()
    return f"http://127.0.0.1:{free_port}"


def serve_sample_app(
    cp_server: str, database: str, pool_size: int, spec: Optional[dict[str, Any]] = None
) -> Iterator[str]:
    """Serve sample_app on ``cp_server`` with a pool of ``pool_size`` on ``database``
    (the app's own declaration, or ``spec``, a PoodlePlugin pool declaration).

    For a fixture to ``yield from``: yields the base URL, stops the engine after.
    """
    import cherrypy

    from poodle_cherrypy import PoodlePlugin
    from sample_app import SampleApp, db

    if spec is None:
        spec = db.pool_spec(database, pool_size)
    PoodlePlugin(cherrypy.engine, {"default": spec}).subscribe()
    sample = SampleApp(cherrypy.engine)
    sample.mount()
    sample.subscribe()
    cherrypy.engine.start()
    try:
        yield cp_server
    finally:
        cherrypy.engine.stop()
        sample.unsubscribe()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Exit CherryPy's engine, if a test used it, so the bus does not complain at exit."""
    import sys

    cherrypy = sys.modules.get("cherrypy")
    if cherrypy is not None and cherrypy.engine.state != cherrypy.engine.states.EXITING:
        cherrypy.config.update({"log.screen": False})
        cherrypy.engine.exit()


# -- sample_app ----------------------------------------------------------------


def with_search_path(url: str, schema: str) -> str:
    """``url`` (a postgresql:// URL) with its connections' search_path set to ``schema``."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str]:
    """A schema of its own in the PostgreSQL on loopback, for this test session.

    Other sessions (other engineers, CI) use the same database at the same
    time: each works in a ``poodle_app_<random>`` schema, dropped at the end.
    Request it only after ``postgres_dsn``, which skips or fails without a server.
    """
    import uuid

    import psycopg

    schema = f"poodle_app_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def sample_database(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """An empty database for the sample app, on each backend: an SQLite file
    path (not created yet), or a postgresql:// URL into this session's schema
    with no ``docs`` table in it."""
    if request.param == "sqlite":
        return str(tmp_path / "data" / "docs.sqlite3")
    dsn = request.getfixturevalue("postgres_dsn")
    schema = request.getfixturevalue("postgres_schema")
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {schema}.docs")
    return with_search_path(dsn, schema)
