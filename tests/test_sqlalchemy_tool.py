"""The request's Session (issue 18): ``cherrypy.request.db`` on the request's
poodle connection, committed or rolled back with the response, closed on every
path; on SQLite (in-process, WebTest) and the real PostgreSQL (over HTTP, under
a 64-client load).
"""

from __future__ import annotations

import http.client
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import cherrypy
import pytest
import webtest
from conftest import wait_until

pytest.importorskip("sqlalchemy")

from sqlalchemy import ForeignKey, String, func, select, text
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
)

from poodle_cherrypy import PoodlePlugin
from poodle_cherrypy.sqlalchemy import RequestBinding, create_engine


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = f"sa_tool_authors_{os.getpid()}"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = f"sa_tool_books_{os.getpid()}"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(80))
    author_id: Mapped[int] = mapped_column(ForeignKey(Author.id))
    author: Mapped[Author] = relationship(back_populates="books")


class Root:
    """Handlers that write through the Session, and note it for the test."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []

    def _note(self) -> Session:
        session: Session = cherrypy.request.db
        self.sessions.append(session)
        # The Session is on the request's own DB-API connection.
        assert session.connection().connection.dbapi_connection is cherrypy.request.conn
        return session

    def _add(self, name: str) -> None:
        session = self._note()
        session.add(Author(name=name, books=[Book(title=f"{name}'s book")]))

    @cherrypy.expose
    def add(self, name: str) -> str:
        self._add(name)
        return "ok"

    @cherrypy.expose
    def fail(self, name: str) -> str:
        self._add(name)
        session = cherrypy.request.db
        session.flush()  # sent to the database, then the handler fails
        raise ValueError("handler failed after a flush")

    @cherrypy.expose
    def teapot(self, name: str) -> str:
        self._add(name)
        raise cherrypy.HTTPError(418)

    @cherrypy.expose
    def redirect(self, name: str) -> str:
        self._add(name)
        raise cherrypy.HTTPRedirect("/count")

    @cherrypy.expose
    @cherrypy.config(**{"response.stream": True})
    def stream(self, name: str) -> Iterator[bytes]:
        def body() -> Iterator[bytes]:
            self._add(name)  # the body runs on the request's connection
            yield b"streamed "
            yield b"body"

        return body()

    @cherrypy.expose
    def raw(self, name: str) -> str:
        """The design card's DB-API connection, beside the Session: one transaction."""
        self._note()
        cherrypy.request.conn.execute(
            f"INSERT INTO {Author.__tablename__} (name) VALUES (?)", (name,)
        )
        return "ok"

    @cherrypy.expose
    def suicide(self) -> str:
        """The server ends this request's session mid-request (a failover, an admin)."""
        session = self._note()
        session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return "not reached"

    @cherrypy.expose
    def count(self) -> str:
        session = self._note()
        authors = session.scalar(select(func.count()).select_from(Author))
        books = session.scalar(select(func.count()).select_from(Book))
        return f"{authors} {books}"


def committed(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [n for (n,) in conn.execute(f"SELECT name FROM {Author.__tablename__} ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def sqlite_app(cp_engine: Any, tmp_path: Path) -> Iterator[tuple[webtest.TestApp, Root, Any]]:
    path = tmp_path / "orm.db"
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False},
        poodle={"name": "default", "max_size": 2, "timeout": 1.0},
    )
    Base.metadata.create_all(engine)
    PoodlePlugin(cherrypy.engine, {"default": engine}).subscribe()
    root = Root()
    app = cherrypy.tree.mount(
        root, "/", {"/": {"tools.poodle.on": True, "tools.poodle.transaction": True}}
    )
    cherrypy.engine.start()
    yield webtest.TestApp(app), root, path
    engine.pool.poodle.close()


@pytest.mark.parametrize(
    ("path", "status", "kept"),
    [
        ("/add?name=a", 200, True),
        ("/fail?name=a", 500, False),
        ("/teapot?name=a", 418, False),
        ("/redirect?name=a", 302, True),
        ("/stream?name=a", 200, True),
        ("/raw?name=a", 200, True),
    ],
)
def test_the_request_session_commits_below_400_and_is_closed_on_every_path(
    sqlite_app: tuple[webtest.TestApp, Root, Path], path: str, status: int, kept: bool
) -> None:
    app, root, db = sqlite_app

    res = app.get(path, status=status, expect_errors=status >= 400)

    assert committed(db) == (["a"] if kept else [])
    if path.startswith("/stream"):
        assert res.body == b"streamed body"
    session = root.sessions[-1]
    assert not session.in_transaction()
    assert session.bind.closed  # type: ignore[union-attr]  # its Connection, given back
    assert not hasattr(cherrypy.request, "db")
    pool = PoodlePlugin.for_bus().pools["default"]
    stats = pool.stats()
    assert (stats.in_use, stats.discarded) == (0, 0)
    if path != "/redirect?name=a":
        assert len(root.sessions) == 1


def test_the_orm_relationship_is_written_in_one_transaction(
    sqlite_app: tuple[webtest.TestApp, Root, Path],
) -> None:
    app, _, _ = sqlite_app
    app.get("/add?name=a")
    app.get("/fail?name=b", status=500)
    assert app.get("/count").text == "1 1"  # the failed request's book went with its author


def test_no_connection_means_503_and_no_session(
    sqlite_app: tuple[webtest.TestApp, Root, Path],
) -> None:
    app, root, db = sqlite_app
    pool = PoodlePlugin.for_bus().pools["default"]
    held = threading.Semaphore(0)
    done = threading.Event()

    def hold() -> None:  # one connection per thread: the pool is reentrant per thread
        with pool.get():
            held.release()
            done.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert held.acquire(timeout=10) and held.acquire(timeout=10)
        res = app.get("/add?name=a", status=503)
        assert res.headers["Retry-After"] == "5"
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    assert root.sessions == [] and committed(db) == []
    assert pool.stats().in_use == 0


def test_without_transaction_what_the_handler_left_uncommitted_is_rolled_back(
    cp_engine: Any, tmp_path: Path
) -> None:
    path = tmp_path / "open.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    PoodlePlugin(cherrypy.engine, {"default": engine}).subscribe()
    root = Root()
    app = webtest.TestApp(cherrypy.tree.mount(root, "/", {"/": {"tools.poodle.on": True}}))
    cherrypy.engine.start()
    try:
        app.get("/add?name=never")  # added, flushed by nobody, committed by nobody
        app.get("/raw?name=raw")  # written on the DB-API connection, not committed
        assert committed(path) == []
        conn = PoodlePlugin.for_bus().pools["default"]._idle[0].conn
        assert not conn.in_transaction  # nothing left open for the next request
    finally:
        engine.pool.poodle.close()


def test_a_session_factory_of_ones_own(cp_engine: Any, tmp_path: Path) -> None:
    from sqlalchemy.orm import sessionmaker

    engine = create_engine(f"sqlite:///{tmp_path / 'own.db'}",
                           connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    factory = sessionmaker(expire_on_commit=False, info={"made": "by the app"})
    PoodlePlugin(cherrypy.engine, {"default": RequestBinding(engine, factory)}).subscribe()
    root = Root()
    app = webtest.TestApp(cherrypy.tree.mount(root, "/", {"/": {"tools.poodle.on": True}}))
    cherrypy.engine.start()
    try:
        app.get("/count")
        assert root.sessions[0].info == {"made": "by the app"}
    finally:
        engine.pool.poodle.close()


def test_a_pool_declared_in_config_for_sqlalchemy(cp_engine: Any, tmp_path: Path) -> None:
    path = tmp_path / "config.db"
    cherrypy.config.update({
        "poodle.default.sqlalchemy_url": f"sqlite:///{path}",
        "poodle.default.sqlalchemy_options": {"connect_args": {"check_same_thread": False}},
        "poodle.default.max_size": 3,
    })
    plugin = PoodlePlugin.for_bus()
    binding = plugin.bindings["default"]
    assert binding.pool is plugin.pools["default"]
    assert binding.pool.stats().max_size == 3
    Base.metadata.create_all(binding.engine)
    root = Root()
    app = webtest.TestApp(cherrypy.tree.mount(
        root, "/", {"/": {"tools.poodle.on": True, "tools.poodle.transaction": True}}
    ))
    cherrypy.engine.start()
    app.get("/add?name=c")
    assert committed(path) == ["c"]


def test_an_engine_not_on_poodle_is_refused(cp_engine: Any) -> None:
    import sqlalchemy

    with pytest.raises(TypeError, match=r"pools\['default'\]: engine .* is not on a poodle pool"):
        PoodlePlugin(cherrypy.engine, {"default": sqlalchemy.create_engine("sqlite://")})
    with pytest.raises(TypeError, match=r"\(or a SQLAlchemy Engine on poodle\), got <object"):
        PoodlePlugin(cherrypy.engine, {"default": object()})


def test_a_session_attribute_must_be_an_identifier() -> None:
    from poodle_cherrypy import PoodleTool

    assert PoodleTool(attribute="cache")._session_attribute == "cache_db"
    with pytest.raises(ValueError, match="session_attribute must be a Python identifier"):
        PoodleTool(session_attribute="not one")
    with pytest.raises(ValueError, match="other than attribute 'conn', got 'conn'"):
        PoodleTool(session_attribute="conn")


# -- PostgreSQL ---------------------------------------------------------------


def pg_url(dsn: str) -> Any:
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy import URL

    params = conninfo_to_dict(dsn)
    return URL.create(
        "postgresql+psycopg", username=params.get("user"), host=params.get("host"),
        port=int(params.get("port") or 5432), database=params.get("dbname"),
    )


@pytest.mark.services
def test_a_connection_the_server_ended_mid_request_is_discarded(
    cp_engine: Any, database: str
) -> None:
    engine = create_engine(pg_url(database), poodle={"name": "default", "max_size": 2})
    Base.metadata.create_all(engine)
    PoodlePlugin(cherrypy.engine, {"default": engine}).subscribe()
    root = Root()
    app = webtest.TestApp(cherrypy.tree.mount(
        root, "/", {"/": {"tools.poodle.on": True, "tools.poodle.transaction": True}}
    ))
    cherrypy.engine.start()
    app.get("/add?name=before")
    # A write may have been in flight: 500, not a retry invitation.
    app.get("/suicide", status=500)
    stats = engine.pool.poodle.stats()
    assert (stats.in_use, stats.discarded) == (0, 1)
    assert not root.sessions[-1].in_transaction()
    assert app.get("/count").text == "1 1"  # a fresh connection serves the next one


# -- PostgreSQL over HTTP ----------------------------------------------------


def _get(base: str, path: str) -> tuple[int, bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.services
def test_64_clients_leak_nothing_and_lose_nothing(
    cp_server: str, database: str
) -> None:
    """64 clients against 16 server threads and 8 connections: every answer is
    200 or 503, every 200 write is there and no other, nothing stays checked out."""
    engine = create_engine(
        pg_url(database), poodle={"name": "default", "max_size": 8, "timeout": 2.0}
    )
    Base.metadata.create_all(engine)
    PoodlePlugin(cherrypy.engine, {"default": engine}).subscribe()
    cherrypy.tree.mount(
        Root(), "/", {"/": {"tools.poodle.on": True, "tools.poodle.transaction": True}}
    )
    cherrypy.engine.start()
    results: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        try:
            for i in range(6):
                name = f"c{n}-{i}"
                path = f"/add?name={name}" if i % 3 else f"/fail?name={name}"
                status, _ = _get(cp_server, path)
                with lock:
                    results.append((path, status))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert len(results) == 64 * 6
    statuses = {status for _, status in results}
    assert statuses <= {200, 500, 503}, statuses
    wrote = {path.split("=")[1] for path, status in results if status == 200}
    assert all(status in (500, 503) for path, status in results if path.startswith("/fail"))
    pool = engine.pool.poodle
    # A server thread gives its connection back after the response is out.
    wait_until(lambda: pool.stats().in_use == 0, 10, "every connection back")
    assert pool.stats().size <= 8
    with Session(engine) as check:
        names = set(check.scalars(select(Author.name)))
        books = check.scalar(select(func.count()).select_from(Book))
    assert names == wrote and books == len(wrote)
    assert not any(name.startswith("c") and name.endswith(("-0", "-3")) for name in names)
    cherrypy.engine.stop()
    import psycopg

    def backends() -> Optional[int]:
        with psycopg.connect(database, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchone()
        return row[0] if row else None

    # The plugin's stop closed every connection (a backend ends a moment later).
    wait_until(lambda: backends() == 0, 10, "every backend gone")
