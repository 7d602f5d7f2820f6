"""tools.poodle through WebTest on the mounted app, the engine started.

Every request path ends with the pool showing nothing in use, and every
handler checks, while it runs, that its connection is really checked out:
a leak or a release that comes too early fails here.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cherrypy
import pytest
import webtest

from poodle_cherrypy import PoodlePlugin, PoodleTool, Pool, get_pool


def make_pool(path: Path, name: str = "default", **options: Any) -> Pool[sqlite3.Connection]:
    return Pool(
        sqlite3.connect,
        (str(path),),
        {"check_same_thread": False},
        name=name,
        reset=lambda conn: conn.rollback(),
        **options,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
    return path


def rows(db: Path) -> list[str]:
    """What another connection sees: committed rows only."""
    conn = sqlite3.connect(db)
    try:
        return [v for (v,) in conn.execute("SELECT v FROM items ORDER BY id")]
    finally:
        conn.close()


def serve(root: object, pools: dict[str, Pool[Any]], config: dict[str, Any] | None = None
          ) -> webtest.TestApp:
    """Mount ``root`` with tools.poodle on, subscribe the pools, start the engine."""
    PoodlePlugin(cherrypy.engine, pools).subscribe()
    app = cherrypy.tree.mount(root, "/", {"/": {"tools.poodle.on": True, **(config or {})}})
    cherrypy.engine.start()
    return webtest.TestApp(app)


class Paths:
    """A handler for each path a request can take."""

    def __init__(self, pool: Pool[Any]) -> None:
        self.pool = pool
        self.seen: list[tuple[Any, int]] = []

    def note(self) -> None:
        conn = cherrypy.request.conn
        conn.execute("SELECT 1")  # usable
        self.seen.append((conn, self.pool.stats().in_use))

    @cherrypy.expose
    def index(self) -> str:
        self.note()
        return "ok"

    @cherrypy.expose
    def error(self) -> str:
        self.note()
        raise ValueError("handler failed")

    @cherrypy.expose
    def http_error(self) -> str:
        self.note()
        raise cherrypy.HTTPError(418)

    @cherrypy.expose
    def redirect(self) -> str:
        self.note()
        raise cherrypy.HTTPRedirect("/index")

    @cherrypy.expose
    def not_found(self) -> str:
        self.note()
        raise cherrypy.NotFound()

    @cherrypy.expose
    def internal(self) -> str:
        self.note()
        raise cherrypy.InternalRedirect("/index")

    @cherrypy.expose
    @cherrypy.config(**{"response.stream": True})
    def stream(self) -> Iterator[bytes]:
        def body() -> Iterator[bytes]:
            for i in range(3):
                self.note()  # still checked out while the body is produced
                yield b"chunk %d\n" % i

        return body()

    @cherrypy.expose
    def lazy(self) -> Iterator[bytes]:
        def body() -> Iterator[bytes]:
            self.note()  # runs at finalize, after the handler returned
            yield b"lazy"

        return body()

    @cherrypy.expose
    @cherrypy.config(**{"response.stream": True})
    def stream_fails(self) -> Iterator[bytes]:
        def body() -> Iterator[bytes]:
            self.note()
            yield b"first\n"
            raise sqlite3.OperationalError("server closed the connection mid-body")

        return body()

    @cherrypy.expose
    @cherrypy.config(**{"request.throw_errors": True})
    def thrown(self) -> str:
        self.note()
        raise ValueError("thrown to the WSGI server")


@pytest.mark.parametrize(
    ("path", "status", "checkouts"),
    [
        ("/index", 200, 1),
        ("/error", 500, 1),
        ("/http_error", 418, 1),
        ("/redirect", 302, 1),  # WebTest speaks HTTP/1.0
        ("/not_found", 404, 1),
        ("/internal", 200, 2),  # the redirected request checks out again
        ("/stream", 200, 1),
        ("/lazy", 200, 1),
    ],
)
def test_every_path_gives_the_connection_back(
    cp_engine: Any, db: Path, path: str, status: int, checkouts: int
) -> None:
    pool = make_pool(db)
    root = Paths(pool)
    app = serve(root, {"default": pool})

    res = app.get(path, status=status)

    assert root.seen, "the handler did not run"
    assert all(in_use == 1 for _, in_use in root.seen), root.seen
    assert all(conn is root.seen[0][0] for conn, _ in root.seen)
    stats = pool.stats()
    assert (stats.in_use, stats.checkouts, stats.discarded) == (0, checkouts, 0)
    if path == "/stream":
        assert res.body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert not hasattr(cherrypy.request, "conn")


def test_a_stream_that_raises_mid_body_discards_the_broken_connection(
    cp_engine: Any, db: Path
) -> None:
    pool = make_pool(db)
    root = Paths(pool)
    app = serve(root, {"default": pool})

    # CherryPy's WSGI layer traps the error and cuts the body short.
    res = app.get("/stream_fails", expect_errors=True)
    assert res.body.startswith(b"first\n")

    assert root.seen[0][1] == 1
    stats = pool.stats()
    assert (stats.in_use, stats.discarded, stats.size) == (0, 1, 0)
    app.get("/index")  # a fresh connection
    assert root.seen[-1][0] is not root.seen[0][0]


def test_throw_errors_still_gives_the_connection_back(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)
    root = Paths(pool)
    app = serve(root, {"default": pool})

    # Past CherryPy's request handling; its WSGI layer traps it as a bare 500.
    res = app.get("/thrown", status=500)
    assert b"thrown to the WSGI server" in res.body

    assert root.seen[0][1] == 1
    assert pool.stats().in_use == 0


def _raise_runtime_error() -> None:
    raise RuntimeError("an earlier tool failed")


@pytest.mark.parametrize(
    ("point", "priority", "checkouts"),
    [
        ("before_handler", 10, 0),  # before the checkout: nothing to give back
        ("before_finalize", 50, 1),  # after it: the end hook still runs
        ("on_end_request", 10, 1),  # ahead of it at the same point: it is failsafe
    ],
)
def test_another_tool_raising_leaks_nothing(
    cp_engine: Any, db: Path, point: str, priority: int, checkouts: int
) -> None:
    cherrypy.tools.explode = cherrypy.Tool(point, _raise_runtime_error, priority=priority)
    try:
        pool = make_pool(db)
        root = Paths(pool)
        app = serve(root, {"default": pool}, {"tools.explode.on": True})
        app.get("/index", status=200 if point == "on_end_request" else 500)
        stats = pool.stats()
        assert (stats.in_use, stats.checkouts) == (0, checkouts)
    finally:
        del cherrypy.tools.explode


def test_tool_off_checks_nothing_out(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            return str(hasattr(cherrypy.request, "conn"))

    app = serve(Root(), {"default": pool}, {"tools.poodle.on": False})
    assert app.get("/").text == "False"
    assert pool.stats().checkouts == 0


def test_a_request_with_no_handler_checks_nothing_out(cp_engine: Any, db: Path) -> None:
    class Root:  # no index or default to take the path as arguments
        @cherrypy.expose
        def page(self) -> str:
            return "page"

    pool = make_pool(db)
    app = serve(Root(), {"default": pool})
    app.get("/no/such/page", status=404)
    assert pool.stats().checkouts == 0
    app.get("/page", status=200)
    assert pool.stats().checkouts == 1


class WithSub:
    class Sub:
        @cherrypy.expose
        def index(self) -> str:
            return "sub"

    sub = Sub()


def test_trailing_slash_redirect_checks_nothing_out_by_default(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)
    app = serve(WithSub(), {"default": pool})
    app.get("/sub", status=301)
    assert pool.stats().checkouts == 0
    app.get("/sub/", status=200)
    assert pool.stats().checkouts == 1


def test_priority_can_be_overridden(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)
    app = serve(WithSub(), {"default": pool}, {"tools.poodle.priority": 50})
    app.get("/sub", status=301)  # checked out before trailing_slash (60) redirected
    stats = pool.stats()
    assert (stats.checkouts, stats.in_use) == (1, 0)


def test_helper_code_gets_the_requests_own_connection(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)

    def helper_insert(value: str) -> bool:
        with get_pool().get() as conn:
            conn.execute("INSERT INTO items (v) VALUES (?)", (value,))
            return conn is cherrypy.request.conn

    class Root:
        @cherrypy.expose
        def index(self) -> str:
            same = helper_insert("a")
            # Not given back by the helper's exit: the request still holds it.
            held = pool.stats().in_use
            n = cherrypy.request.conn.execute("SELECT count(*) FROM items").fetchone()[0]
            return f"{same} {held} {n}"

    app = serve(Root(), {"default": pool}, {"tools.poodle.transaction": True})
    assert app.get("/").text == "True 1 1"  # same connection, same transaction
    assert rows(db) == ["a"]
    assert pool.stats().in_use == 0


def test_a_bad_deadline_hook_in_a_handlers_config_is_a_500_and_leaks_nothing(
    cp_engine: Any, db: Path
) -> None:
    # The start check cannot see a handler's _cp_config: the bad name is
    # found at the first request, after the checkout.
    pool = make_pool(db)

    class Root:
        @cherrypy.expose
        @cherrypy.config(**{"tools.poodle.deadline": 5,
                            "tools.poodle.deadline_hook": "no_such_module_xyz:set_it"})
        def index(self) -> str:
            return "ran"

    app = serve(Root(), {"default": pool})
    for _ in range(2):
        app.get("/", status=500)
        assert (pool.stats().in_use, pool.stats().checkouts) == (0, _ + 1)


def test_two_tools_on_one_attribute_both_give_their_connections_back(
    cp_engine: Any, db: Path, tmp_path: Path
) -> None:
    # A misconfiguration (the later tool's connection wins request.conn), but
    # nothing may leak: each tool keeps its own checkout for the give-back.
    main = make_pool(db, name="main")
    other = make_pool(tmp_path / "other.db", name="other")
    cherrypy.tools.poodle_other = PoodleTool()  # attribute "conn" too
    try:

        class Root:
            @cherrypy.expose
            def index(self) -> str:
                return f"{main.stats().in_use} {other.stats().in_use}"

        app = serve(
            Root(),
            {"main": main, "other": other},
            {
                "tools.poodle.pool": "main",
                "tools.poodle_other.on": True,
                "tools.poodle_other.pool": "other",
            },
        )
        for _ in range(2):
            assert app.get("/").text == "1 1"
            assert (main.stats().in_use, other.stats().in_use) == (0, 0)
        assert (main.stats().checkouts, other.stats().checkouts) == (2, 2)
    finally:
        del cherrypy.tools.poodle_other


def test_two_pools_in_one_request_each_on_its_own_attribute(
    cp_engine: Any, db: Path, tmp_path: Path
) -> None:
    main = make_pool(db, name="main")
    cache = make_pool(tmp_path / "cache.db", name="cache")
    cherrypy.tools.poodle_cache = PoodleTool(attribute="cache")
    try:

        class Root:
            @cherrypy.expose
            def index(self) -> str:
                request = cherrypy.request
                assert request.conn is not request.cache
                return f"{main.stats().in_use} {cache.stats().in_use}"

        app = serve(
            Root(),
            {"main": main, "cache": cache},
            {
                "tools.poodle.pool": "main",
                "tools.poodle_cache.on": True,
                "tools.poodle_cache.pool": "cache",
            },
        )
        assert app.get("/").text == "1 1"
        assert (main.stats().in_use, cache.stats().in_use) == (0, 0)
        assert (main.stats().checkouts, cache.stats().checkouts) == (1, 1)
    finally:
        del cherrypy.tools.poodle_cache


def test_request_state_is_never_kept_on_the_tool(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)
    before = dict(vars(cherrypy.tools.poodle))
    app = serve(Paths(pool), {"default": pool})
    for path in ("/index", "/stream", "/error"):
        app.get(path, expect_errors=True)
    assert vars(cherrypy.tools.poodle) == before


def test_hooks_after_the_give_back_no_longer_see_the_connection(cp_engine: Any, db: Path) -> None:
    # Once given back the connection may be another request's: nothing that
    # runs later in this request reaches it through request.conn.
    seen: list[object] = []
    cherrypy.tools.late = cherrypy.Tool(
        "on_end_request", lambda: seen.append(getattr(cherrypy.request, "conn", None)),
        priority=90,
    )
    try:
        pool = make_pool(db)
        root = Paths(pool)
        app = serve(root, {"default": pool}, {"tools.late.on": True})
        for path in ("/index", "/error", "/stream", "/internal"):
            app.get(path, expect_errors=True)
        assert len(root.seen) >= 4, "the handlers did not run"
        assert seen == [None] * 5  # /internal is two requests
    finally:
        del cherrypy.tools.late


def test_later_hooks_see_the_page_handlers_callable_and_arguments(
    cp_engine: Any, db: Path
) -> None:
    # The tool stands in request.handler; code after it that inspects the
    # handler (as CherryPy's own PageHandler offers) still finds its parts,
    # and may change the arguments the page handler is called with. (With
    # tools.encode on, CherryPy's ResponseEncoder wraps the handler first and
    # offers none of them: off here, so the tool wraps the PageHandler.)
    seen: list[tuple[Any, Any, Any]] = []

    def inspect() -> None:
        handler = cherrypy.request.handler
        seen.append((handler.callable, handler.args, dict(handler.kwargs)))
        handler.kwargs = {**handler.kwargs, "extra": "added"}

    cherrypy.tools.inspect = cherrypy.Tool("before_handler", inspect, priority=99)

    class Items:
        @cherrypy.expose
        def item(self, ident: str, x: str = "", extra: str = "") -> bytes:
            assert cherrypy.request.conn is not None
            return f"{ident} {x} {extra}".encode()

    try:
        pool = make_pool(db)
        root = Items()
        app = serve(
            root, {"default": pool}, {"tools.inspect.on": True, "tools.encode.on": False}
        )
        assert app.get("/item/5?x=1").text == "5 1 added"
        assert seen == [(root.item, ("5",), {"x": "1"})]
        assert pool.stats().in_use == 0
    finally:
        del cherrypy.tools.inspect


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """An empty tools.caching cache, left empty for the next test."""
    yield
    cache = getattr(cherrypy, "_cache", None)
    if cache is not None:
        cache.clear()


def test_a_cache_hit_checks_nothing_out(cp_engine: Any, db: Path, fresh_cache: None) -> None:
    pool = make_pool(db)
    root = Paths(pool)
    app = serve(root, {"default": pool}, {"tools.caching.on": True})
    assert app.get("/index").text == "ok"
    assert app.get("/index").text == "ok"  # from the cache: tools.caching (90) answered
    assert len(root.seen) == 1
    stats = pool.stats()
    assert (stats.checkouts, stats.in_use) == (1, 0)


# -- transactions --------------------------------------------------------------


class Writes:
    @cherrypy.expose
    def add(self, value: str, then: str = "ok") -> str:
        cherrypy.request.conn.execute("INSERT INTO items (v) VALUES (?)", (value,))
        if then == "error":
            raise ValueError("after the write")
        if then == "http_error":
            raise cherrypy.HTTPError(409)
        if then == "status":
            cherrypy.response.status = 422
            return "unprocessable"
        if then == "redirect":
            raise cherrypy.HTTPRedirect("/done")
        if then == "internal":
            raise cherrypy.InternalRedirect("/done")
        return "ok"

    @cherrypy.expose
    def done(self) -> str:
        return "done"

    @cherrypy.expose
    @cherrypy.config(**{"response.stream": True})
    def add_streamed(self, value: str, fail: str = "") -> Iterator[bytes]:
        conn = cherrypy.request.conn

        def body() -> Iterator[bytes]:
            yield b"start\n"
            conn.execute("INSERT INTO items (v) VALUES (?)", (value,))
            if fail:
                raise ValueError("mid-stream")
            yield b"end\n"

        return body()

    @cherrypy.expose
    def add_lazy(self, value: str) -> Iterator[bytes]:
        conn = cherrypy.request.conn

        def body() -> Iterator[bytes]:
            conn.execute("INSERT INTO items (v) VALUES (?)", (value,))
            yield b"written"

        return body()


@pytest.mark.parametrize(
    ("then", "status", "committed"),
    [
        ("ok", 200, True),
        ("redirect", 302, True),
        ("error", 500, False),
        ("http_error", 409, False),
        ("status", 422, False),
        ("internal", 200, False),  # the first request's work is not what was answered
    ],
)
def test_transaction_commits_below_400_and_rolls_back_otherwise(
    cp_engine: Any, db: Path, then: str, status: int, committed: bool
) -> None:
    pool = make_pool(db)
    app = serve(Writes(), {"default": pool}, {"tools.poodle.transaction": True})
    app.get("/add", {"value": then, "then": then}, status=status)
    assert rows(db) == ([then] if committed else [])
    assert pool.stats().in_use == 0


def test_without_transaction_nothing_is_committed_for_you(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)
    app = serve(Writes(), {"default": pool})
    app.get("/add", {"value": "x"})
    assert rows(db) == []  # rolled back by the pool's reset


def test_streamed_body_commits_after_it_is_sent_or_rolls_back_if_it_fails(
    cp_engine: Any, db: Path
) -> None:
    pool = make_pool(db)
    app = serve(Writes(), {"default": pool}, {"tools.poodle.transaction": True})
    assert app.get("/add_streamed", {"value": "whole"}).body == b"start\nend\n"
    res = app.get("/add_streamed", {"value": "broken", "fail": "1"}, expect_errors=True)
    assert b"end" not in res.body
    assert rows(db) == ["whole"]
    assert pool.stats().in_use == 0


def test_a_lazy_body_runs_inside_the_transaction(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)
    app = serve(Writes(), {"default": pool}, {"tools.poodle.transaction": True})
    assert app.get("/add_lazy", {"value": "lazy"}).body == b"written"
    assert rows(db) == ["lazy"]


def test_a_body_left_lazy_by_tools_encode_runs_inside_the_transaction(
    cp_engine: Any, db: Path
) -> None:
    # tools.encode collapses a text/* body while the handler is called; a body
    # of another type stays a generator until the response is finalized.
    stages: list[str] = []

    class Root:
        @cherrypy.expose
        def export(self) -> Iterator[bytes]:
            cherrypy.response.headers["Content-Type"] = "application/octet-stream"
            conn = cherrypy.request.conn

            def body() -> Iterator[bytes]:
                stages.append(cherrypy.request.stage)
                conn.execute("INSERT INTO items (v) VALUES ('exported')")
                yield b"data"

            return body()

    pool = make_pool(db)
    app = serve(Root(), {"default": pool}, {"tools.poodle.transaction": True})
    assert app.get("/export").body == b"data"
    assert stages == ["before_finalize"]  # after the handler returned
    assert rows(db) == ["exported"]
    assert pool.stats().in_use == 0


def test_commit_happens_before_the_response_is_sent(cp_engine: Any, db: Path) -> None:
    # An on_end_request hook ahead of the tool's own sees the state after the
    # response went out: the write must already be visible to others.
    seen: list[list[str]] = []
    cherrypy.tools.probe = cherrypy.Tool("on_end_request", lambda: seen.append(rows(db)),
                                         priority=10)
    try:
        pool = make_pool(db)
        app = serve(Writes(), {"default": pool},
                    {"tools.poodle.transaction": True, "tools.probe.on": True})
        app.get("/add", {"value": "early"})
        assert seen == [["early"]]
    finally:
        del cherrypy.tools.probe


def test_a_failing_commit_answers_500_and_writes_nothing(cp_engine: Any, tmp_path: Path) -> None:
    path = tmp_path / "fk.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id)"
            " DEFERRABLE INITIALLY DEFERRED);"
        )

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    pool = Pool(connect, name="default", reset=lambda conn: conn.rollback())

    class Root:
        @cherrypy.expose
        def orphan(self) -> str:
            cherrypy.request.conn.execute("INSERT INTO child VALUES (42)")
            return "the client must not see this"

    app = serve(Root(), {"default": pool}, {"tools.poodle.transaction": True})
    res = app.get("/orphan", status=500)
    assert b"the client must not see this" not in res.body
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM child").fetchone() == (0,)
    stats = pool.stats()
    assert (stats.in_use, stats.discarded) == (0, 0)  # an IntegrityError breaks nothing


class LosesConnectionOnCommit:
    """A sqlite3 connection whose commit fails as a lost server connection does."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    def commit(self) -> None:
        raise sqlite3.OperationalError("server closed the connection unexpectedly")


@pytest.mark.parametrize(("path", "status"), [("/add", 500), ("/add_streamed", 200)])
def test_a_commit_that_breaks_the_connection_discards_it(
    cp_engine: Any, db: Path, path: str, status: int
) -> None:
    pool = Pool(lambda: LosesConnectionOnCommit(db), name="default",
                reset=lambda conn: conn.rollback())
    app = serve(Writes(), {"default": pool}, {"tools.poodle.transaction": True})
    app.get(path, {"value": "x"}, status=status)  # streamed: the 200 was out before the commit
    stats = pool.stats()
    assert (stats.in_use, stats.discarded, stats.size) == (0, 1, 0)
    assert rows(db) == []


# -- no connection to be had: 503 -----------------------------------------------


class Hold:
    """Hold connections of a pool from other threads until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, pool: Pool[Any], ready: Callable[[], bool], timeout: float = 30.0) -> None:
        def run() -> None:
            try:
                with pool.get(timeout=timeout):
                    self.release.wait(30)
            except Exception:
                pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        deadline = time.monotonic() + 10
        while not ready():
            assert time.monotonic() < deadline, "the holder did not get going"
            time.sleep(0.005)

    def stop(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


@pytest.fixture
def hold() -> Iterator[Hold]:
    holder = Hold()
    yield holder
    holder.stop()


def test_exhausted_pool_answers_503_with_retry_after(
    cp_engine: Any, db: Path, hold: Hold, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(db, max_size=1)
    app = serve(Paths(pool), {"default": pool},
                {"tools.poodle.timeout": 0.2, "tools.poodle.retry_after": 7})
    hold.start(pool, lambda: pool.stats().in_use == 1)

    res = app.get("/index", status=503)

    assert res.headers["Retry-After"] == "7"
    assert pool.stats().timeouts == 1
    assert "no connection available within 0.2 s" in caplog.text


def test_too_many_waiters_answers_503_at_once(cp_engine: Any, db: Path, hold: Hold) -> None:
    pool = make_pool(db, max_size=1, max_waiting=1)
    app = serve(Paths(pool), {"default": pool})
    hold.start(pool, lambda: pool.stats().in_use == 1)
    hold.start(pool, lambda: pool.stats().waiting == 1)

    started = time.monotonic()
    res = app.get("/index", status=503)

    assert time.monotonic() - started < 10  # not the pool's 30 s timeout
    assert res.headers["Retry-After"] == "5"
    assert pool.stats().rejected == 1


def test_closed_pool_answers_503(cp_engine: Any, db: Path) -> None:
    pool = make_pool(db)
    app = serve(Paths(pool), {"default": pool})
    pool.close()
    app.get("/index", status=503)


def test_failing_factory_answers_503_and_logs_the_cause_but_never_sends_it(
    cp_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def connect() -> sqlite3.Connection:
        raise sqlite3.OperationalError(
            "could not connect to postgresql://app:s3cret-pw@db.internal/prod"
        )

    pool = Pool(connect, name="default", fail_fast_after=2)
    app = serve(Paths(pool), {"default": pool})
    bodies = [app.get("/index", status=503) for _ in range(3)]  # the third fails fast

    for res in bodies:
        assert b"s3cret" not in res.body and b"db.internal" not in res.body
        assert "s3cret" not in str(res.headers)
    assert pool.stats().unavailable == 1
    assert "opening a connection failed" in caplog.text
    assert "Traceback" in caplog.text and "s3cret-pw" in caplog.text  # the cause, in the log
    assert pool.stats().in_use == 0


def test_unknown_pool_in_handler_config_is_a_logged_500(
    cp_engine: Any, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # _cp_config on a handler is only seen at request time (app config is
    # checked at engine start, see test_cherrypy_plugin).
    class Root:
        @cherrypy.expose
        @cherrypy.config(**{"tools.poodle.pool": "nope"})
        def index(self) -> str:
            return "unreachable"

    pool = make_pool(db)
    app = serve(Root(), {"default": pool})
    app.get("/", status=500)
    assert "tools.poodle.pool = 'nope'" in caplog.text
    assert "no pool named 'nope'" in caplog.text


def test_tool_rejects_a_bad_attribute() -> None:
    with pytest.raises(ValueError, match="attribute must be a Python identifier, got 'a-b'"):
        PoodleTool(attribute="a-b")


def test_import_registers_the_tool_and_config_namespace() -> None:
    assert isinstance(cherrypy.tools.poodle, PoodleTool)
    assert "poodle" in cherrypy.config.namespaces
    assert logging.getLogger("poodle_cherrypy") is not None
