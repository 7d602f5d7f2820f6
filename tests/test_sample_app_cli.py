"""``python -m sample_app``: its options, and the real thing in a subprocess.

The subprocess (:class:`appserver.Server`) is started on a free port in a
temporary working directory; the test talks HTTP to it, then sends SIGTERM
(or SIGINT) and expects a clean exit.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from appserver import STARTUP_TIMEOUT, Server, sample_app_environ
from conftest import wait_until
from tcpproxy import TCPProxy

from sample_app import db
from sample_app.cli import DEFAULTS, ENVIRONMENT, build_parser, parse_args

APP_CONF = Path(__file__).resolve().parent.parent / "sample_app" / "app.conf"


# -- options ------------------------------------------------------------------------


def test_every_option_has_an_environment_variable_named_in_help() -> None:
    text = build_parser().format_help()
    for name, var in ENVIRONMENT.items():
        assert f"--{name.replace('_', '-')}" in text
        assert var in text
        assert var == f"SAMPLE_APP_{name.upper()}"


def test_the_command_line_wins_over_the_environment() -> None:
    environ = {
        "SAMPLE_APP_HOST": "0.0.0.0",
        "SAMPLE_APP_PORT": "9000",
        "SAMPLE_APP_DATABASE": "postgresql://app@db/docs",
        "SAMPLE_APP_POOL_SIZE": "3",
        "SAMPLE_APP_MAX_BODY": "2048",
        "SAMPLE_APP_CONFIG": str(APP_CONF),
    }
    settings = parse_args([], environ)
    assert (settings.host, settings.port, settings.database) == (
        "0.0.0.0", 9000, "postgresql://app@db/docs"
    )
    assert (settings.pool_size, settings.max_body, settings.config) == (3, 2048, str(APP_CONF))

    settings = parse_args(["--port", "9001", "--pool-size", "5"], environ)
    assert (settings.port, settings.pool_size, settings.host) == (9001, 5, "0.0.0.0")


def test_nothing_given_leaves_the_defaults_to_the_run() -> None:
    settings = parse_args([], {"SAMPLE_APP_PORT": ""})  # empty counts as unset
    assert all(value is None for value in vars(settings).values())
    assert DEFAULTS["database"] == os.path.join("data", "docs.sqlite3")
    assert (DEFAULTS["host"], DEFAULTS["port"]) == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--port", "http"], {}, "not a TCP port"),
        (["--port", "70000"], {}, "not a TCP port"),
        ([], {"SAMPLE_APP_PORT": "eighty"}, "SAMPLE_APP_PORT: not a TCP port"),
        ([], {"SAMPLE_APP_POOL_SIZE": "0"}, "SAMPLE_APP_POOL_SIZE: not a whole number"),
        (["--max-body", "-1"], {}, "not a whole number"),
        (["--config", "no/such.conf"], {}, "no such file"),
        (["--database", ""], {}, "must not be empty"),
    ],
)
def test_a_bad_value_is_a_usage_error(
    argv: list[str], environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        parse_args(argv, environ)
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err


# -- the real thing -----------------------------------------------------------------


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP_TIMEOUT)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def exercise(port: int) -> None:
    status, body = call(port, "GET", "/status")
    assert status == 200 and body["pools"]["default"]["closed"] is False
    status, body = call(port, "PUT", "/docs/hello", {"greeting": "hi"})
    assert status == 201, body
    status, doc = call(port, "GET", "/docs/hello")
    assert status == 200
    assert doc == {"_id": "hello", "_rev": body["rev"], "greeting": "hi"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_python_m_sample_app_serves_sqlite_and_stops_cleanly(
    tmp_path: Path, free_port: int, signum: int
) -> None:
    server = Server(["--port", str(free_port)], tmp_path)
    try:
        server.wait_for("Bus STARTED")
        exercise(free_port)
        assert server.stop(signum) == 0
    finally:
        server.kill()
    log = "".join(server.log)
    assert "SQLite file" in log and "closed pool 'default'" in log and "Bus EXITED" in log
    assert (tmp_path / "data" / "docs.sqlite3").is_file()


@pytest.mark.parametrize(
    "args", [[], ["--pool-size", "5"], ["--config", str(APP_CONF)]],
    ids=["defaults", "pool-size", "app.conf"],
)
def test_python_m_sample_app_has_as_many_server_threads_as_connections(
    tmp_path: Path, free_port: int, args: list[str]
) -> None:
    # The plugin's sizing check logs "pool 'default' has max_size N for the M
    # threads of the CherryPy server" whenever the two differ: a thread holds
    # at most one connection, so either connections or requests would wait.
    server = Server(args, tmp_path, {"SAMPLE_APP_PORT": str(free_port)})
    try:
        server.wait_for("Bus STARTED")
        status, body = call(free_port, "GET", "/status")
        assert status == 200
        assert server.stop() == 0
    finally:
        server.kill()
    log = "".join(server.log)
    assert "threads of the CherryPy server" not in log, log
    expected = {"--pool-size": 5, "--config": 8}.get(args[0] if args else "", 2)
    assert body["pools"]["default"]["max_size"] == expected, body


def test_python_m_sample_app_with_app_conf(tmp_path: Path, free_port: int) -> None:
    # The port comes from the environment, over the file's 8080.
    server = Server(["--config", str(APP_CONF)], tmp_path, {"SAMPLE_APP_PORT": str(free_port)})
    try:
        server.wait_for("Bus STARTED")
        exercise(free_port)
        assert server.stop() == 0
    finally:
        server.kill()
    log = "".join(server.log)
    assert f"as declared in {APP_CONF}" in log and f":{free_port}" in log
    assert (tmp_path / "data" / "docs.sqlite3").is_file()


def test_a_config_pool_and_database_option_together_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sample_app", "--config", str(APP_CONF), "--database", "x.db"],
        cwd=tmp_path,
        env=sample_app_environ(),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "declares pool 'default'" in result.stderr and "--database" in result.stderr
    assert not (tmp_path / "x.db").exists()


# -- --database ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["mysql://root@127.0.0.1/test", "sqlite:///docs.db", "HTTP://example.com/db"]
)
def test_a_database_url_of_another_scheme_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, environ in (
        (["--database", url], {}),
        ([], {"SAMPLE_APP_DATABASE": url}),
    ):
        with pytest.raises(SystemExit) as exc_info:
            parse_args(argv, environ)
        assert exc_info.value.code == 2
        err = capsys.readouterr().err
        assert repr(url.split(":", 1)[0]) in err and "postgresql://" in err, err


def test_an_unsupported_database_url_creates_no_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sample_app", "--database", "mysql://root@127.0.0.1/test"],
        cwd=tmp_path,
        env=sample_app_environ(),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr
    assert "postgresql://" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.services
@pytest.mark.parametrize("scheme", ["POSTGRESQL", "Postgres"])
def test_the_postgresql_scheme_is_case_insensitive(
    scheme: str, postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = scheme + postgres_dsn[postgres_dsn.index("://"):]
    assert parse_args(["--database", url], {}).database == url
    assert db.is_postgresql_url(url)
    spec = db.pool_spec(url, 1)
    assert spec["factory"] is db.connect_postgresql
    with spec["factory"](*spec["args"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert list(tmp_path.iterdir()) == []


# -- a database that is down at start ---------------------------------------------------


@pytest.fixture
def own_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema of this test's own (others use this session's), dropped after."""
    import uuid

    import psycopg

    schema = f"poodle_down_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def request(port: int, method: str, path: str, body: Any = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP_TIMEOUT)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.services
@pytest.mark.slow
def test_the_app_starts_with_its_database_down_and_creates_the_schema_when_it_is_back(
    tmp_path: Path,
    free_port: int,
    postgres_dsn: str,
    own_schema: str,
    tcp_proxy: Callable[[int], TCPProxy],
) -> None:
    import psycopg

    proxy = tcp_proxy(5432)
    proxy.refuse()  # "PostgreSQL" is down before the app starts
    user_host = postgres_dsn.partition("://")[2].partition("@")
    path = postgres_dsn.rpartition("/")[2]
    url = (f"postgresql://{user_host[0]}@127.0.0.1:{proxy.port}/{path}"
           f"?connect_timeout=5&options=-csearch_path%3D{own_schema}")
    server = Server(["--port", str(free_port), "--database", url], tmp_path)
    try:
        server.wait_for("Bus STARTED")
        for _ in range(2):  # and again: an outage is not remembered as "started"
            assert call(free_port, "GET", "/status")[0] == 200
            page = request(free_port, "GET", "/")
            assert page.status == 200
            for method, path_, body in (("GET", "/docs/x", None), ("PUT", "/docs/x", {"v": 1}),
                                        ("GET", "/docs", None)):
                response = request(free_port, method, path_, body)
                assert response.status == 503, (method, path_, response.status)
                assert response.getheader("Retry-After")
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (f"{own_schema}.docs",)).fetchone() \
                == (None,)

        proxy.forward()  # back
        statuses: list[int] = []

        def created() -> bool:
            statuses.append(call(free_port, "PUT", "/docs/x", {"v": 1})[0])
            return statuses[-1] != 503

        wait_until(created, 60.0, "a PUT that is not a 503 once the database is back")
        assert statuses[-1] == 201, statuses
        status, doc = call(free_port, "GET", "/docs/x")
        assert (status, doc["v"]) == (200, 1)
        assert call(free_port, "GET", "/status")[0] == 200
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT id FROM " + own_schema + ".docs").fetchall() == [("x",)]
        assert server.stop() == 0
    finally:
        server.kill()
    log = "".join(server.log)
    assert "Bus EXITED" in log
