"""poodle_cherrypy.drivers without a server: the drivers stay optional, and each
recipe can be named in a config file as "module:callable"."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

from poodle_cherrypy import drivers


def test_importing_the_recipes_imports_no_driver() -> None:
    code = (
        "import sys, poodle_cherrypy.drivers; "
        "print(sorted({'psycopg', 'pymysql', 'redis'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", drivers.__all__)
def test_each_recipe_is_a_documented_module_level_function(name: str) -> None:
    module, _, attribute = f"poodle_cherrypy.drivers:{name}".partition(":")
    recipe = getattr(importlib.import_module(module), attribute)
    assert inspect.isfunction(recipe) and recipe.__module__ == module
    assert inspect.getdoc(recipe)


def test_the_pgbouncer_factory_refuses_prepared_statements() -> None:
    with pytest.raises(ValueError, match="prepare_threshold=5"):
        drivers.psycopg_pgbouncer_connect("dbname=x", prepare_threshold=5)


class _Info:
    def __init__(self, in_hot_standby: object) -> None:
        self.in_hot_standby = in_hot_standby
        self.asked: list[str] = []

    def parameter_status(self, name: str) -> object:
        self.asked.append(name)
        return self.in_hot_standby if name == "in_hot_standby" else None


class _Conn:
    """What psycopg_primary_broken reads of a psycopg connection, nothing more:
    a round trip would fail (there is no server)."""

    closed = False

    def __init__(self, in_hot_standby: object) -> None:
        from psycopg import pq

        self.info = _Info(in_hot_standby)
        self.info.transaction_status = pq.TransactionStatus.IDLE  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("reported", "broken"),
    [("on", True), ("off", False), (None, False)],
    ids=["standby", "primary", "not-reported"],
)
def test_the_primary_broken_rule_reads_in_hot_standby_without_a_round_trip(
    reported: object, broken: bool
) -> None:
    pytest.importorskip("psycopg")
    conn = _Conn(reported)
    assert drivers.psycopg_primary_broken(conn, None) is broken  # type: ignore[arg-type]
    assert conn.info.asked == ["in_hot_standby"]


def test_the_failover_factory_gives_up_on_each_host_within_its_budget() -> None:
    """Both hosts refuse (nothing listens): one OperationalError, at once, and
    the defaults (target_session_attrs, connect_timeout, tcp_user_timeout)
    are accepted by libpq."""
    psycopg = pytest.importorskip("psycopg")
    import socket
    import time

    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    start = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        drivers.psycopg_failover_connect(
            f"host=127.0.0.1,127.0.0.1 port={ports[0]},{ports[1]} dbname=x user=x"
        )
    assert time.monotonic() - start < 2 * 2 + 1
