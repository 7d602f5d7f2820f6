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
from pathlib import Path
from typing import Any

import pytest
from appserver import STARTUP_TIMEOUT, Server, sample_app_environ

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
