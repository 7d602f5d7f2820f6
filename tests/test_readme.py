"""The docs' examples are real code: every ``.. code-block:: python`` of
README.rst and of every ``docs/*.rst`` page runs here.

A block that talks to a server says so in a comment line ``# needs: postgresql``
(or ``mariadb``, ``redis``; comma-separated); it then skips without that server,
or fails under ``POODLE_REQUIRE_SERVICES=1``. Each block runs on its own, in a
fresh namespace, with a temporary working directory and ``__name__`` set to
``"readme"`` so that ``if __name__ == "__main__":`` guards keep servers from
starting. A PostgreSQL block gets a schema of its own: ``DATABASE_URL`` points
into it, so that tables it creates neither meet other runs' nor stay behind.

The tests after the parametrized one serve the CherryPy examples and run the
config-file example as a user would, ``python notes.py`` next to ``notes.conf``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    MYSQL_PARAMS,
    POSTGRES_DSN,
    require_module,
    require_port,
    with_search_path,
)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.rst"))]
EXAMPLES = DOCS / "examples"

_NEEDS = {
    "postgresql": lambda: (
        require_module("psycopg"),
        require_port("PostgreSQL", "127.0.0.1", 5432),
    ),
    "mariadb": lambda: (
        require_module("pymysql"),
        require_port("MariaDB", MYSQL_PARAMS["host"], MYSQL_PARAMS["port"]),
    ),
    "redis": lambda: (require_module("redis"), require_port("Redis", "127.0.0.1", 6379)),
}


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ``.. code-block:: python`` in an RST text."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if re.match(r"\s*\.\. code-block:: python\s*$", lines[i]):
            start = i + 1
            j = start
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
                j += 1
            body = textwrap.dedent("\n".join(lines[start:j])).strip("\n")
            blocks.append((start + 1, body))
            i = j
        else:
            i += 1
    return blocks


def _where(page: Path) -> str:
    return str(page.relative_to(ROOT))


BLOCKS = [
    (_where(page), line, code)
    for page in PAGES
    for line, code in python_blocks(page.read_text(encoding="utf-8"))
]


def needs(code: str) -> set[str]:
    """The servers a block's ``# needs:`` lines name."""
    return {
        need.strip()
        for match in re.finditer(r"^# needs: (.+)$", code, re.MULTILINE)
        for need in match.group(1).split(",")
    }


def block(page: str, *contains: str) -> tuple[str, int, str]:
    """The one python block of ``page`` that holds every string of ``contains``."""
    [found] = [b for b in BLOCKS if b[0] == page and all(text in b[2] for text in contains)]
    return found


@pytest.fixture
def database_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``DATABASE_URL``, set to a URL into a fresh schema of the loopback PostgreSQL."""
    import psycopg

    schema = f"poodle_docs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_search_path(POSTGRES_DSN, schema)
    monkeypatch.setenv("DATABASE_URL", url)
    try:
        yield url
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run_block(
    where: str, line: int, code: str, request: pytest.FixtureRequest, tmp_path: Path
) -> dict[str, Any]:
    """Run one block as the parametrized test does; its namespace."""
    for need in needs(code):
        _NEEDS[need]()
    if "postgresql" in needs(code):
        request.getfixturevalue("database_url")
    request.getfixturevalue("monkeypatch").chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, f"{where}:{line}", "exec"), namespace)
    return namespace


def test_every_page_is_read() -> None:
    assert len([b for b in BLOCKS if b[0] == "README.rst"]) >= 2
    assert {"docs/getting-started.rst", "docs/pool.rst", "docs/drivers.rst"} <= {
        b[0] for b in BLOCKS
    }


@pytest.mark.parametrize(
    ("where", "line", "code"), BLOCKS, ids=[f"{where}:{line}" for where, line, _ in BLOCKS]
)
def test_example_runs(
    where: str,
    line: int,
    code: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    cp_engine: Any,
) -> None:
    # cp_engine: an example that declares pools in CherryPy config leaves nothing behind;
    # nor does one that sets up logging.
    root, ours = logging.getLogger(), logging.getLogger("poodle_cherrypy")
    handlers, level = root.handlers[:], ours.level
    try:
        run_block(where, line, code, request, tmp_path)
    finally:
        root.handlers[:] = handlers
        ours.setLevel(level)


def test_readme_cherrypy_example_serves(
    request: pytest.FixtureRequest, tmp_path: Path, cp_engine: Any
) -> None:
    """README's CherryPy example does what it says once it is served."""
    import cherrypy
    import webtest

    namespace = run_block(*block("README.rst", "cherrypy.quickstart"), request, tmp_path)
    app = webtest.TestApp(cherrypy.tree.mount(namespace["Notes"](), "/", namespace["config"]))
    cherrypy.engine.start()

    assert app.get("/").text == ""
    app.get("/add", {"body": "hello"}, status=302)
    app.get("/add", {"body": "world"}, status=302)
    assert app.get("/").text == "hello\nworld"
    assert (tmp_path / "notes.db").exists()
    pool = namespace["poodle_cherrypy"].get_pool()
    stats = pool.stats()
    assert (stats.max_size, stats.in_use, stats.checkouts) == (8, 0, 4)


@pytest.mark.services
def test_getting_started_app_serves_on_postgresql(
    request: pytest.FixtureRequest, tmp_path: Path, cp_engine: Any
) -> None:
    """Getting started's CherryPy app on PostgreSQL: writes commit, refusals roll back."""
    import cherrypy
    import webtest

    found = block("docs/getting-started.rst", "cherrypy.quickstart", "psycopg")
    namespace = run_block(*found, request, tmp_path)
    app = webtest.TestApp(cherrypy.tree.mount(namespace["Notes"](), "/", namespace["config"]))
    cherrypy.engine.start()

    assert app.get("/").json == []
    assert app.post("/add", {"body": "hello"}).json == {"id": 1}
    assert app.post("/add", {"body": "world"}).json == {"id": 2}
    app.get("/add", {"body": "refused"}, status=405)  # POST only: nothing checked out
    assert app.get("/").json == [{"id": 1, "body": "hello"}, {"id": 2, "body": "world"}]
    stats = namespace["poodle_cherrypy"].get_pool().stats()
    assert (stats.max_size, stats.in_use, stats.created) == (8, 0, 1)


@pytest.mark.services
def test_two_pools_per_request_example_serves(
    request: pytest.FixtureRequest, tmp_path: Path, cp_engine: Any
) -> None:
    """docs/cherrypy.rst's second tool: SQLite on request.conn, Redis on request.cache."""
    import cherrypy
    import webtest

    namespace = run_block(*block("docs/cherrypy.rst", "PoodleTool(attribute="), request, tmp_path)
    try:
        app = webtest.TestApp(cherrypy.tree.mount(namespace["Root"](), "/", namespace["config"]))
        cherrypy.engine.start()
        assert re.fullmatch(r"\d+ hits, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", app.get("/").text)
        pools = namespace["poodle_cherrypy"].PoodlePlugin.for_bus().pools
        assert {name: pool.stats().checkouts for name, pool in pools.items()} == {
            "default": 1,
            "redis": 1,
        }
        assert all(pool.stats().in_use == 0 for pool in pools.values())
    finally:
        del cherrypy.tools.cache


def _http(port: int, method: str, path: str, body: str = "") -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        conn.request(method, path, body or None, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.mark.services
def test_config_file_example_runs_as_a_script(
    tmp_path: Path, postgres_dsn: str, database_url: str, free_port: int
) -> None:
    """``python notes.py`` next to ``notes.conf``, as getting started says, on PostgreSQL."""
    conf = (EXAMPLES / "notes.conf").read_text(encoding="utf-8")
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    port = "server.socket_port = 8080"
    assert dsn in conf and port in conf
    conf = conf.replace(dsn, database_url.replace("%", "%%"))
    conf = conf.replace(port, f"server.socket_port = {free_port}")
    (tmp_path / "notes.conf").write_text(conf, encoding="utf-8")
    (tmp_path / "notes.py").write_text((EXAMPLES / "notes.py").read_text(encoding="utf-8"))

    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "notes.py"],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while "Bus STARTED" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert _http(free_port, "GET", "/") == (200, [])
        assert _http(free_port, "POST", "/add", "body=hello") == (200, {"id": 1})
        assert _http(free_port, "GET", "/") == (200, [{"id": 1, "body": "hello"}])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_config_file_example_declares_its_pool(tmp_path: Path, cp_engine: Any) -> None:
    """notes.conf is a config file CherryPy reads as it stands (declared, not connected)."""
    import cherrypy

    from poodle_cherrypy import PoodlePlugin, drivers
    from poodle_cherrypy.startcheck import tool_config_problems as _tool_config_problems

    conf = str(EXAMPLES / "notes.conf")
    cherrypy.config.update(conf)
    cherrypy.tree.mount(None, "/", conf)

    plugin = PoodlePlugin.for_bus()
    stats = plugin.pools["default"].stats()
    assert (stats.min_size, stats.max_size, stats.created) == (2, 16, 0)
    assert plugin.pools["default"]._connector._reset is drivers.psycopg_reset
    assert plugin.maintain_interval == 10.0
    assert _tool_config_problems(plugin.pools) == []


def test_api_reference_covers_every_module() -> None:
    """docs/api.rst has an automodule for every module of the package."""
    import pkgutil

    import poodle_cherrypy

    api = (DOCS / "api.rst").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. automodule:: (\S+)$", api, re.MULTILINE))
    modules = {
        f"poodle_cherrypy.{info.name}"
        for info in pkgutil.iter_modules(poodle_cherrypy.__path__)
        if not info.name.startswith("_")
    }
    missing = sorted(modules - documented)
    assert not missing, f"add '.. automodule:: NAME' with ':members:' to docs/api.rst: {missing}"


def test_version_is_single_sourced() -> None:
    """setup.cfg reads the version from the package, and CHANGES.rst names it."""
    import poodle_cherrypy

    setup_cfg = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    assert "version = attr: poodle_cherrypy.__version__" in setup_cfg
    assert re.fullmatch(r"\d+\.\d+\.\d+", poodle_cherrypy.__version__)
    assert poodle_cherrypy.__version__ in (ROOT / "CHANGES.rst").read_text(encoding="utf-8")
    assert os.path.isfile(ROOT / "LICENSE")
