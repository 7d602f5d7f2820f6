"""PoodlePlugin: pools owned by the engine, declared in Python or in config."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import cherrypy
import pytest
import webtest
from cherrypy.process.plugins import Daemonizer, DropPrivileges
from cherrypy.process.servers import ServerAdapter

from poodle_cherrypy import PoodlePlugin, Pool, get_pool
from poodle_cherrypy.plugin import find_plugin


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Connections:
    """A sqlite3 factory that remembers what it opened and can be made to fail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[sqlite3.Connection] = []
        self.failing = False

    def __call__(self) -> sqlite3.Connection:
        if self.failing:
            raise sqlite3.OperationalError("unable to open database file")
        conn = sqlite3.connect(self.path, check_same_thread=False)
        self.opened.append(conn)
        return conn


def is_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


class Root:
    @cherrypy.expose
    def index(self) -> str:
        return repr(cherrypy.request.conn.execute("SELECT 1").fetchone())


def mount(config: Any = None) -> webtest.TestApp:
    app = cherrypy.tree.mount(Root(), "/", config or {"/": {"tools.poodle.on": True}})
    return webtest.TestApp(app)


# -- lifecycle -----------------------------------------------------------------


def test_start_and_stop_priorities_sit_between_cherrypys_own() -> None:
    # Open after the Daemonizer forks, before the HTTP server serves; fill
    # after DropPrivileges; close after the HTTP server has stopped.
    assert Daemonizer.start.priority < PoodlePlugin.start.priority < ServerAdapter.start.priority
    assert DropPrivileges.start.priority < PoodlePlugin._prefill.priority
    assert ServerAdapter.stop.priority < PoodlePlugin.stop.priority


def test_start_opens_pools_before_the_http_server_serves_and_fills_them_after(
    cp_server: str, tmp_path: Path
) -> None:
    # Open (usable) before the server serves (75); filled after
    # DropPrivileges (77), so no connection is opened as root.
    server_running_at_connect: list[bool] = []
    factory = Connections(tmp_path / "a.db")

    def connect() -> sqlite3.Connection:
        server_running_at_connect.append(cherrypy.server.running)
        return factory()

    plugin = PoodlePlugin(cherrypy.engine, {"default": {"factory": connect, "min_size": 2}})
    plugin.subscribe()
    assert plugin.pools["default"].stats().created == 0  # declaring never connects
    cherrypy.engine.start()
    assert server_running_at_connect == [True, True]
    assert cherrypy.server.running
    assert plugin.pools["default"].stats().idle == 2


def test_a_database_down_at_start_is_logged_the_app_starts_and_recovers(
    cp_engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    factory = Connections(tmp_path / "a.db")
    factory.failing = True
    plugin = PoodlePlugin(cherrypy.engine, {"default": {"factory": factory, "min_size": 1}})
    plugin.subscribe()
    app = mount()

    cherrypy.engine.start()

    assert cherrypy.engine.state == cherrypy.engine.states.STARTED
    assert "pool 'default' is open but could not connect" in caplog.text
    assert "unable to open database file" in caplog.text
    res = app.get("/", status=503)
    assert res.headers["Retry-After"] == "5"
    factory.failing = False
    assert app.get("/").text == "(1,)"


def test_stop_closes_every_connection_and_start_reopens(cp_engine: Any, tmp_path: Path) -> None:
    factory = Connections(tmp_path / "a.db")
    plugin = PoodlePlugin(cherrypy.engine, {"default": {"factory": factory, "min_size": 2}})
    plugin.subscribe()
    app = mount()
    cherrypy.engine.start()
    app.get("/")

    cherrypy.engine.stop()

    pool = plugin.pools["default"]
    assert pool.closed
    assert len(factory.opened) == 2 and all(is_closed(conn) for conn in factory.opened)
    app.get("/", status=503)

    cherrypy.engine.start()
    assert not pool.closed and pool.stats().idle == 2
    assert app.get("/").text == "(1,)"
    assert len(factory.opened) == 4


def test_stop_waits_for_a_connection_in_use_within_close_timeout(
    cp_engine: Any, tmp_path: Path
) -> None:
    factory = Connections(tmp_path / "a.db")
    plugin = PoodlePlugin(cherrypy.engine, {"default": {"factory": factory}}, close_timeout=60)
    plugin.subscribe()
    cherrypy.engine.start()
    pool = plugin.pools["default"]
    release = threading.Event()
    held: list[sqlite3.Connection] = []

    def hold() -> None:
        with pool.get() as conn:
            held.append(conn)
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(lambda: pool.stats().in_use == 1, "the holder")
    stopper = threading.Thread(target=cherrypy.engine.stop)
    started = time.monotonic()
    stopper.start()
    wait_for(lambda: pool.closed, "stop to close the pool")
    assert stopper.is_alive()  # waiting for the connection in use
    assert not is_closed(held[0])
    release.set()
    stopper.join(30)
    holder.join(30)
    assert not stopper.is_alive() and not holder.is_alive()
    assert time.monotonic() - started < 30  # it came back: no need to wait out 60 s
    assert is_closed(held[0])


def test_stop_gives_up_after_close_timeout(
    cp_engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = PoodlePlugin(
        cherrypy.engine, {"default": {"factory": Connections(tmp_path / "a.db")}},
        close_timeout=0.2,
    )
    plugin.subscribe()
    cherrypy.engine.start()
    pool = plugin.pools["default"]
    lease = pool.get()
    conn = lease.__enter__()
    cherrypy.engine.stop()  # returns although the connection is still out
    assert "closed with 1 connection(s) still in use" in caplog.text
    lease.__exit__(None, None, None)
    assert is_closed(conn)


def test_graceful_recycles_connections(cp_engine: Any, tmp_path: Path) -> None:
    factory = Connections(tmp_path / "a.db")
    plugin = PoodlePlugin(cherrypy.engine, {"default": {"factory": factory, "min_size": 1}})
    plugin.subscribe()
    app = mount()
    cherrypy.engine.start()
    first = factory.opened[0]

    cherrypy.engine.graceful()

    assert is_closed(first)
    app.get("/")
    pool = plugin.pools["default"]
    wait_for(lambda: pool.stats().pending == 0, "the refill")
    # Whatever is open now was opened after graceful (the request and the
    # background refill may each have opened one).
    fresh = factory.opened[1:]
    assert fresh and not any(is_closed(conn) for conn in fresh)
    assert pool.stats().size == len(fresh)


def test_graceful_retires_a_connection_in_use_when_it_comes_back(
    cp_engine: Any, tmp_path: Path
) -> None:
    factory = Connections(tmp_path / "a.db")
    plugin = PoodlePlugin(cherrypy.engine, {"default": {"factory": factory}})
    plugin.subscribe()
    entered = threading.Event()
    release = threading.Event()

    class Slow:
        @cherrypy.expose
        def index(self) -> str:
            entered.set()
            release.wait(30)
            return repr(cherrypy.request.conn.execute("SELECT 1").fetchone())

    app = webtest.TestApp(cherrypy.tree.mount(Slow(), "/", {"/": {"tools.poodle.on": True}}))
    cherrypy.engine.start()
    answers: list[str] = []
    client = threading.Thread(target=lambda: answers.append(app.get("/").text))
    client.start()
    try:
        assert entered.wait(30), "the request did not get going"
        [held] = factory.opened
        cherrypy.engine.graceful()
        assert not is_closed(held)  # never closed under the request using it
    finally:
        release.set()
        client.join(30)
    assert not client.is_alive()
    assert answers == ["(1,)"]
    assert is_closed(held)  # retired when it came back
    pool = plugin.pools["default"]
    assert (pool.stats().in_use, pool.stats().size) == (0, 0)
    assert app.get("/").text == "(1,)"
    assert len(factory.opened) == 2 and not is_closed(factory.opened[1])


def test_maintenance_runs_on_a_monitor_and_refills(cp_engine: Any, tmp_path: Path) -> None:
    factory = Connections(tmp_path / "a.db")
    factory.failing = True
    plugin = PoodlePlugin(
        cherrypy.engine, {"default": {"factory": factory, "min_size": 2}}, maintain_interval=0.02
    )
    plugin.subscribe()
    cherrypy.engine.start()
    pool = plugin.pools["default"]
    assert pool.stats().size == 0
    factory.failing = False  # the database is back: maintenance alone refills
    wait_for(lambda: pool.stats().idle == 2, "maintenance to refill min_size")


class FlakyMaintenance(Pool[Any]):
    """A pool whose maintain() raises at its first run."""

    def __init__(self) -> None:
        super().__init__(object, name="flaky")
        self.runs = 0

    def maintain(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("maintenance blew up")
        super().maintain()


def test_maintenance_survives_errors_and_closed_pools(
    cp_engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyMaintenance()
    closed = Pool(object, name="closed")
    plugin = PoodlePlugin(cherrypy.engine, {"flaky": flaky, "closed": closed},
                          maintain_interval=0.02)
    plugin.subscribe()
    cherrypy.engine.start()
    closed.close()
    wait_for(lambda: flaky.runs >= 3, "maintenance to go on after an error")
    assert "maintaining pool 'flaky' failed" in caplog.text
    assert "maintenance blew up" in caplog.text


class CountedMaintenance(Pool[Any]):
    """A pool that counts its maintain() runs."""

    def __init__(self) -> None:
        super().__init__(object, name="counted")
        self.runs = 0

    def maintain(self) -> None:
        self.runs += 1
        super().maintain()


def test_stop_stops_maintenance(cp_engine: Any) -> None:
    pool = CountedMaintenance()
    PoodlePlugin(cherrypy.engine, {"counted": pool}, maintain_interval=0.02).subscribe()
    cherrypy.engine.start()
    wait_for(lambda: pool.runs >= 2, "maintenance to run")
    cherrypy.engine.stop()
    runs = pool.runs
    time.sleep(0.5)  # 25 intervals
    assert pool.runs <= runs + 1  # at most the run that was under way


def test_a_pool_added_while_running_is_opened(cp_engine: Any, tmp_path: Path) -> None:
    plugin = PoodlePlugin(cherrypy.engine)
    plugin.subscribe()
    cherrypy.engine.start()
    pool = plugin.add("late", {"factory": Connections(tmp_path / "a.db"), "min_size": 1})
    assert pool.stats().idle == 1
    assert get_pool("late") is pool


# -- declaring pools -------------------------------------------------------------


def test_pools_declared_in_a_config_file_alone(cp_engine: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conf = tmp_path / "app.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            [global]
            poodle.default.factory = "sqlite3:connect"
            poodle.default.args = ({str(db)!r},)
            poodle.default.kwargs = {{"check_same_thread": False}}
            poodle.default.max_size = 3
            poodle.default.reset = "sqlite3:Connection.rollback"
            poodle.maintain_interval = 0.5
            poodle.close_timeout = 2.0

            [/]
            tools.poodle.on = True
            tools.poodle.transaction = True
            """
        )
    )
    cherrypy.config.update(str(conf))
    app = mount(str(conf))
    cherrypy.engine.start()

    assert app.get("/").text == "(1,)"
    plugin = PoodlePlugin.for_bus()
    pool = plugin.pools["default"]
    stats = pool.stats()
    assert (stats.name, stats.max_size, stats.checkouts, stats.in_use) == ("default", 3, 1, 0)
    assert (plugin.maintain_interval, plugin.close_timeout) == (0.5, 2.0)


@pytest.mark.parametrize(
    ("entries", "error", "message"),
    [
        ({"poodle.db.factory": "sqlite3:connect", "poodle.db.max_sise": 3}, ValueError,
         "poodle.db.max_sise: unknown pool option 'max_sise'"),
        ({"poodle.db.factory": "no_such_module:connect"}, ValueError,
         "poodle.db.factory: cannot import module 'no_such_module'"),
        ({"poodle.db.factory": "sqlite3:nope"}, ValueError,
         "poodle.db.factory: module 'sqlite3' has no 'nope'"),
        ({"poodle.db.factory": "sqlite3.connect"}, ValueError,
         "poodle.db.factory: 'sqlite3.connect' is not of the form 'module:attribute'"),
        ({"poodle.db.factory": "sqlite3:version"}, TypeError,
         "poodle.db.factory: 'sqlite3:version' is not callable"),
        ({"poodle.db.factory": 42}, TypeError,
         "poodle.db.factory: expected a callable or a 'module:attribute' string, got 42"),
        ({"poodle.db.max_size": 3}, ValueError, "poodle.db.factory: missing"),
        ({"poodle.db.factory": "sqlite3:connect", "poodle.db.max_size": 0}, ValueError,
         "poodle.db.max_size: max_size must be >= 1, got 0"),
        ({"poodle.db.factory": "sqlite3:connect", "poodle.db.min_size": 5,
          "poodle.db.max_size": 2}, ValueError,
         "poodle.db.min_size: min_size (5) must not exceed max_size (2)"),
        ({"poodle.db.factory": "sqlite3:connect", "poodle.db.timeout": "soon"}, TypeError,
         "poodle.db.timeout: timeout must be a number of seconds, got 'soon'"),
        ({"poodle.db.factory": "sqlite3:connect", "poodle.db.check": "sqlite3:nope"},
         ValueError, "poodle.db.check: module 'sqlite3' has no 'nope'"),
        ({"poodle.maintain_interval": -1}, ValueError,
         "poodle.maintain_interval must be >= 0 seconds, got -1"),
        ({"poodle.maintain_every": 1}, ValueError, "poodle.maintain_every: unknown option"),
    ],
)
def test_bad_config_fails_at_config_time_naming_the_key(
    cp_engine: Any, entries: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        cherrypy.config.update(entries)
    assert str(info.value).startswith(message), str(info.value)


def test_bad_python_spec_names_the_pool_and_option(cp_engine: Any) -> None:
    with pytest.raises(ValueError, match=r"pools\['db'\]\.max_size: max_size must be >= 1"):
        PoodlePlugin(cherrypy.engine, {"db": {"factory": sqlite3.connect, "max_size": 0}})
    with pytest.raises(TypeError, match="a pool is declared by a Pool or a dict"):
        PoodlePlugin(cherrypy.engine, {"db": "sqlite3:connect"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="maintain_interval must be a number of seconds"):
        PoodlePlugin(cherrypy.engine, maintain_interval="often")  # type: ignore[arg-type]


def test_one_plugin_per_bus_and_clear_lookup_errors(cp_engine: Any) -> None:
    with pytest.raises(LookupError, match="no PoodlePlugin is subscribed"):
        get_pool()
    plugin = PoodlePlugin(cherrypy.engine, {"a": Pool(object)})
    plugin.subscribe()
    with pytest.raises(ValueError, match="subscribed to this bus already"):
        PoodlePlugin(cherrypy.engine).subscribe()
    with pytest.raises(ValueError, match="pool 'a' is declared already"):
        plugin.add("a", Pool(object))
    with pytest.raises(LookupError, match=r"no pool named 'b'; the pools are \['a'\]"):
        get_pool("b")
    assert find_plugin(cherrypy.engine) is plugin is PoodlePlugin.lookup()
    plugin.unsubscribe()
    assert find_plugin(cherrypy.engine) is None and PoodlePlugin.lookup() is None
    with pytest.raises(LookupError):
        PoodlePlugin.for_bus()


def test_redeclaring_a_pool_in_config(cp_engine: Any, tmp_path: Path) -> None:
    spec = {"poodle.db.factory": "sqlite3:connect", "poodle.db.args": (str(tmp_path / "a"),)}
    cherrypy.config.update(spec)
    plugin = PoodlePlugin.for_bus()
    first = plugin.pools["db"]
    cherrypy.config.update(spec)  # the same file read again: nothing changes
    assert plugin.pools["db"] is first
    cherrypy.engine.start()
    with pytest.raises(ValueError, match=r"poodle\.db: pool 'db' is running; stop the engine"):
        cherrypy.config.update({"poodle.db.max_size": 2})
    cherrypy.engine.stop()
    cherrypy.config.update({"poodle.db.max_size": 2})  # stopped: replaced, options merged
    assert plugin.pools["db"] is not first and first.closed
    assert plugin.pools["db"].stats().max_size == 2


# -- bad tool config fails at engine start ---------------------------------------

_BAD_TOOL_CONFIG = """
import sqlite3, cherrypy, poodle_cherrypy

class Root:
    @cherrypy.expose
    def index(self):
        return "never served"

cherrypy.config.update({{"environment": "test_suite", "log.screen": True,
                        "poodle.default.factory": "sqlite3:connect",
                        "poodle.default.args": (":memory:",)}})
cherrypy.server.unsubscribe()
cherrypy.tree.mount(Root(), "/", {{"/": {{"tools.poodle.on": True}}, "/x": {{{key!r}: {value!r}}}}})
cherrypy.engine.start()
print("STARTED")
cherrypy.engine.exit()
"""


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tools.poodle.pool", "missing",
         "/ [/x] tools.poodle.pool = 'missing': no such pool; the pools are ['default']"),
        ("tools.poodle.transacton", True, "/ [/x] tools.poodle.transacton: unknown option"),
    ],
)
def test_bad_tool_config_stops_the_engine_at_start_naming_the_key(
    key: str, value: object, message: str, tmp_path: Path
) -> None:
    script = _BAD_TOOL_CONFIG.format(key=key, value=value)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 70, done.stdout + done.stderr  # CherryPy's EX_SOFTWARE
    assert "STARTED" not in done.stdout
    assert message in done.stderr


def test_tool_on_without_a_default_pool_is_caught_at_start(cp_engine: Any) -> None:
    from poodle_cherrypy.startcheck import tool_config_problems as _tool_config_problems

    cherrypy.tree.mount(Root(), "/", {"/": {"tools.poodle.on": True},
                                      "/named": {"tools.poodle.pool": "main"}})
    # A controller's _cp_config (which only a request's dispatch sees) may
    # name the pool: a warning at start, not a reason to stop.
    warnings: list[str] = []
    assert _tool_config_problems({"main": Pool(object)}, warnings) == []
    assert warnings == [
        "/ [/] tools.poodle.on: uses pool 'default', which is not declared; the pools are "
        "['main'] (set tools.poodle.pool), unless a controller's _cp_config names one"
    ]
    cherrypy.tree.apps.clear()
    cherrypy.tree.mount(Root(), "/", {"/": {"tools.poodle.on": True, "tools.poodle.pool": "main"},
                                      "/sub": {"tools.poodle.on": True}})
    assert _tool_config_problems({"main": Pool(object)}, warnings := []) == []
    assert warnings == []


class NamesMain(Root):
    _cp_config: ClassVar[dict[str, Any]] = {"tools.poodle.pool": "main"}


class Site(Root):
    api = NamesMain()


def test_tool_on_check_sees_the_pool_named_globally_or_by_a_controller(cp_engine: Any) -> None:
    # Valid config the start-time check must not reject: rejecting it makes
    # CherryPy exit the process at start.
    from poodle_cherrypy.startcheck import tool_config_problems as _tool_config_problems

    pools = {"main": Pool(sqlite3.connect, (":memory:",), {"check_same_thread": False})}
    PoodlePlugin(cherrypy.engine, pools).subscribe()
    # Every request below is served from pool 'main' (the engine is not
    # started: the pool is open from its construction).

    # The root controller names the pool for its whole app, a sub-controller
    # for its subtree.
    a = webtest.TestApp(cherrypy.tree.mount(NamesMain(), "/a", {"/": {"tools.poodle.on": True}}))
    b = webtest.TestApp(cherrypy.tree.mount(Site(), "/b", {"/api": {"tools.poodle.on": True}}))
    assert a.get("/a/").text == b.get("/b/api/").text == "(1,)"
    assert _tool_config_problems(pools) == []

    # Switched on for every app in global config, each app naming its pool at
    # its root, in its config or by its root controller.
    cherrypy.tree.apps.clear()
    cherrypy.config.update({"tools.poodle.on": True})
    c = webtest.TestApp(cherrypy.tree.mount(Root(), "/c", {"/": {"tools.poodle.pool": "main"}}))
    a = webtest.TestApp(cherrypy.tree.mount(NamesMain(), "/a"))
    assert c.get("/c/").text == a.get("/a/").text == "(1,)"
    assert pools["main"].stats().checkouts == 4
    assert _tool_config_problems(pools) == []

    # An app that names no pool under the global switch is still warned about.
    cherrypy.tree.mount(Root(), "/d")
    warnings: list[str] = []
    assert _tool_config_problems(pools, warnings) == []
    assert warnings == [
        "global tools.poodle.on: uses pool 'default', which is not declared; the pools are "
        "['main'] (set tools.poodle.pool), unless a controller's _cp_config names one"
    ]


def test_log_lines_name_the_pool(cp_engine: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    PoodlePlugin(cherrypy.engine, {"orders": Pool(object)}).subscribe()
    cherrypy.engine.start()
    cherrypy.engine.stop()
    assert "poodle: opened pool 'orders'" in caplog.text
    assert "poodle: closed pool 'orders'" in caplog.text


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("tools.poodle.timeout", "soon", "must be a number of seconds >= 0 or None, got 'soon'"),
        ("tools.poodle.timeout", -1, "must be a number of seconds >= 0 or None, got -1"),
        ("tools.poodle.timeout", float("nan"), "must be a number of seconds >= 0 or None"),
        ("tools.poodle.retry_after", 2.5, "must be a whole number of seconds >= 0, got 2.5"),
        ("tools.poodle.retry_after", True, "must be a whole number of seconds >= 0, got True"),
        ("tools.poodle.transaction", "yes", "must be True or False, got 'yes'"),
        ("tools.poodle.pool", 3, "must be a pool's name, got 3"),
        ("tools.poodle.priority", "late", "must be a number, got 'late'"),
    ],
)
def test_bad_tool_values_are_problems_at_start_not_500s_later(
    cp_engine: Any, key: str, value: object, problem: str
) -> None:
    from poodle_cherrypy.startcheck import tool_config_problems as _tool_config_problems

    cherrypy.tree.mount(Root(), "/", {"/": {"tools.poodle.on": True, key: value}})
    [found] = _tool_config_problems({"default": Pool(object)})
    assert found.startswith(f"/ [/] {key}: {problem}"), found


def test_good_tool_values_are_no_problem(cp_engine: Any) -> None:
    from poodle_cherrypy.startcheck import tool_config_problems as _tool_config_problems

    cherrypy.tree.mount(Root(), "/", {"/": {
        "tools.poodle.on": True, "tools.poodle.pool": "default", "tools.poodle.timeout": 0.5,
        "tools.poodle.transaction": True, "tools.poodle.retry_after": 0,
        "tools.poodle.priority": 70}, "/b": {"tools.poodle.timeout": None}})
    assert _tool_config_problems({"default": Pool(object)}) == []


def test_a_sub_key_of_a_pool_option_is_explained(cp_engine: Any) -> None:
    with pytest.raises(ValueError) as info:
        cherrypy.config.update({"poodle.db.factory": "sqlite3:connect",
                                "poodle.db.kwargs.timeout": 5})
    assert str(info.value).startswith(
        "poodle.db.kwargs.timeout: 'kwargs' is one value, not a section: write "
        "poodle.db.kwargs = {...}"
    ), str(info.value)
