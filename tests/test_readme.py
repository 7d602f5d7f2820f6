"""README.rst's examples are real code: every ``.. code-block:: python`` runs here.

A block that talks to a server says so in a comment line ``# needs: postgresql``
(or ``mariadb``, ``redis``; comma-separated); it then skips without that server,
or fails under ``POODLE_REQUIRE_SERVICES=1``. Each block runs on its own, in a
fresh namespace, with a temporary working directory and ``__name__`` set to
``"readme"`` so that ``if __name__ == "__main__":`` guards keep servers from
starting.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import MYSQL_PARAMS, POSTGRES_DSN, require_module, require_port, with_search_path

README = Path(__file__).resolve().parent.parent / "README.rst"

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


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_example_runs(
    line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cp_engine: Any
) -> None:
    # cp_engine: an example that declares pools in CherryPy config leaves nothing behind.
    for match in re.finditer(r"^# needs: (.+)$", code, re.MULTILINE):
        for need in match.group(1).split(","):
            _NEEDS[need.strip()]()
    monkeypatch.chdir(tmp_path)
    compiled = compile(code, f"README.rst:{line}", "exec")
    exec(compiled, {"__name__": "readme"})


def test_readme_cherrypy_example_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cp_engine: Any
) -> None:
    """The CherryPy example does what it says once it is served."""
    import cherrypy
    import webtest

    [(line, code)] = [(line, code) for line, code in BLOCKS
                      if 'cherrypy.quickstart(Notes(), "/", config)' in code]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, f"README.rst:{line}", "exec"), namespace)
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


def test_readme_config_file_example_declares_its_pool(tmp_path: Path, cp_engine: Any) -> None:
    """The INI example is a config file CherryPy reads as it stands."""
    import cherrypy

    from poodle_cherrypy import PoodlePlugin, drivers
    from poodle_cherrypy.plugin import _tool_config_problems

    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("    [global]")
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("    ")):
        end += 1
    conf = tmp_path / "app.conf"
    conf.write_text(textwrap.dedent("\n".join(lines[start:end])), encoding="utf-8")

    cherrypy.config.update(str(conf))
    cherrypy.tree.mount(None, "/", str(conf))

    plugin = PoodlePlugin.for_bus()
    stats = plugin.pools["default"].stats()
    assert (stats.min_size, stats.max_size, stats.created) == (2, 16, 0)  # declared, not connected
    assert plugin.pools["default"]._reset is drivers.psycopg_reset
    assert plugin.maintain_interval == 10.0
    assert _tool_config_problems(plugin.pools) == []


def _config_file_example() -> str:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("    [global]")
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith("    ")):
        end += 1
    return textwrap.dedent("\n".join(lines[start:end]))


def test_readme_config_file_example_serves_on_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cp_engine: Any
) -> None:
    """The INI example, as written (but for its DSN, pointed at the PostgreSQL
    on loopback in a schema of its own), with the handler shown for it."""
    import uuid

    import cherrypy
    import webtest

    _NEEDS["postgresql"]()
    import psycopg

    text = _config_file_example()
    dsn = "postgresql://app@127.0.0.1/app"
    assert text.count(f'"{dsn}"') == 1, "the example's DSN"
    schema = f"poodle_readme_{uuid.uuid4().hex[:12]}"
    # A config file's values are interpolated: its % is written %%.
    ours = with_search_path(POSTGRES_DSN, schema).replace("%", "%%")
    conf = tmp_path / "app.conf"
    conf.write_text(text.replace(dsn, ours), encoding="utf-8")
    # Its own handler; without one, a reader takes the Notes class shown above it.
    [(line, code)] = [(line, code) for line, code in BLOCKS if '"app.conf"' in code] or [
        (line, "import cherrypy\n" + code[code.index("class Notes"):])
        for line, code in BLOCKS if "class Notes" in code
    ]

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        monkeypatch.chdir(tmp_path)
        namespace: dict[str, Any] = {"__name__": "readme"}
        exec(compile(code, f"README.rst:{line}", "exec"), namespace)
        # What quickstart(Notes(), "/", "app.conf") does, but the HTTP server.
        cherrypy.config.update(str(conf))
        app = webtest.TestApp(cherrypy.tree.mount(namespace["Notes"](), "/", str(conf)))
        cherrypy.engine.start()
        try:
            assert app.get("/").text == ""
            app.get("/add", {"body": "hello"}, status=302)
            app.get("/add", {"body": "100% world"}, status=302)
            assert app.get("/").text == "hello\n100% world"
        finally:
            cherrypy.engine.stop()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            rows = conn.execute(f"SELECT body FROM {schema}.notes").fetchall()
        assert rows == [("hello",), ("100% world",)]
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
