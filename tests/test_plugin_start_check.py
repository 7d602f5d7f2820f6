"""The tools.poodle config check at engine start, over every kind of tree entry.

``cherrypy.tree`` holds Applications, and also whatever ``tree.graft`` put
there: a plain WSGI function, middleware, or a ``VirtualHost`` dispatching to
Applications by host name. The check looks at the Applications (those a
VirtualHost reaches included), resolves each key along the path with
CherryPy's own ``Application.find_config``, and never stops the engine for a
bug of its own.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import cherrypy
import pytest
from cherrypy._cpwsgi import VirtualHost

from poodle_cherrypy import PoodlePlugin, Pool
from poodle_cherrypy.startcheck import tool_config_problems as _tool_config_problems


class Root:
    @cherrypy.expose
    def index(self) -> str:
        return "hello"


def wsgi_hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"grafted"]


_GRAFTED = """
import sqlite3, cherrypy, poodle_cherrypy
from cherrypy._cpwsgi import VirtualHost

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"grafted"]

class Root:
    @cherrypy.expose
    def index(self):
        return "hello"

cherrypy.config.update({"environment": "test_suite", "log.screen": True})
cherrypy.server.unsubscribe()
poodle_cherrypy.PoodlePlugin(cherrypy.engine, {"default": {"factory": sqlite3.connect,
                                                           "args": (":memory:",)}}).subscribe()
cherrypy.tree.graft(hello, "/wsgi")
app = cherrypy.Application(Root(), "", {"/": {"tools.poodle.on": True}})
cherrypy.tree.graft(VirtualHost(hello, {"db.example": app}), "/hosts")
cherrypy.engine.start()
print("STARTED", flush=True)
cherrypy.engine.exit()
"""


def test_engine_starts_with_a_grafted_wsgi_function_and_virtual_host(tmp_path: Path) -> None:
    # In a process of its own: an exception in a start listener makes
    # CherryPy os._exit(70), which would end this test run.
    done = subprocess.run(
        [sys.executable, "-c", _GRAFTED], capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "STARTED" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr


def test_grafted_wsgi_callables_are_skipped(cp_engine: Any) -> None:
    cherrypy.tree.graft(wsgi_hello, "/wsgi")
    cherrypy.tree.mount(Root(), "/", {"/": {"tools.poodle.on": True}})
    assert _tool_config_problems({"default": Pool(object)}) == []


def test_apps_behind_a_virtual_host_are_checked(cp_engine: Any) -> None:
    bad = cherrypy.Application(Root(), "", {"/x": {"tools.poodle.pool": "missing"}})
    other = cherrypy.Application(Root(), "", {"/": {"tools.poodle.timout": 1}})
    cherrypy.tree.graft(VirtualHost(bad, {"b.example": other, "c.example": wsgi_hello}), "/v")
    assert sorted(_tool_config_problems({"default": Pool(object)})) == [
        "/v (default host) [/x] tools.poodle.pool = 'missing': no such pool; the pools are "
        "['default']",
        "/v (host 'b.example') [/] tools.poodle.timout: unknown option; the options are "
        "deadline, deadline_hook, on, pool, priority, read_fallback, read_pool, retry_after, "
        "timeout, transaction",
    ]


def test_the_check_resolves_the_pool_along_the_path_with_find_config(cp_engine: Any) -> None:
    # /a/b inherits pool 'main' from /a and the switch from /: no problem.
    # /c switches the tool on where no config names a pool.
    cherrypy.tree.mount(Root(), "/app", {
        "/": {"tools.poodle.on": False},
        "/a": {"tools.poodle.pool": "main"},
        "/a/b": {"tools.poodle.on": True},
        "/c": {"tools.poodle.on": True},
    })
    pools = {"main": Pool(object)}
    warnings: list[str] = []
    assert _tool_config_problems(pools, warnings) == []
    assert warnings == [
        "/app [/c] tools.poodle.on: uses pool 'default', which is not declared; the pools "
        "are ['main'] (set tools.poodle.pool), unless a controller's _cp_config names one"
    ]


class Exploding(dict):  # type: ignore[type-arg]
    """App config whose lookups fail: a bug the check meets, not a config mistake."""

    def items(self) -> Any:
        raise RuntimeError("the check tripped over something")


def test_a_bug_in_the_check_is_logged_once_and_the_engine_starts(
    cp_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    PoodlePlugin(cherrypy.engine, {"default": Pool(object)}).subscribe()
    app = cherrypy.tree.mount(Root(), "/")
    app.config = Exploding({"/": {"tools.poodle.on": True}})
    cherrypy.engine.start()
    assert cherrypy.engine.state == cherrypy.engine.states.STARTED
    failed = [r for r in caplog.records if "checking the tools config failed" in r.getMessage()]
    assert len(failed) == 1, caplog.text
    assert "RuntimeError: the check tripped over something" in caplog.text
    assert caplog.text.count("Traceback") == 1, caplog.text
