"""The three real servers behind one small interface, for the server tests.

An adapter makes pool factories that connect through a given port (the
server's own, or a :class:`~tcpproxy.TCPProxy`'s in front of it), remembers
the id of every session they opened, and kills sessions from a separate admin
connection. It only ever kills sessions it opened itself: other people's tests
use the same servers at the same time. :meth:`Server.close` kills whatever is
left of its own and closes the admin connection.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from conftest import wait_until

from poodle_cherrypy import drivers

#: How long :meth:`Server.block` keeps a session busy unless it is killed.
BLOCK_SECONDS = 10


class Server:
    """What the fault tests need from a server and its driver."""

    name = ""
    #: What a driver raises when its connection is lost or cannot be opened.
    lost: tuple[type[BaseException], ...] = ()
    #: The recipes from poodle_cherrypy.drivers.
    check: Callable[[Any], Any]
    reset: Callable[[Any], Any]

    def __init__(self, port: int) -> None:
        self.port = port
        self.opened: list[int] = []
        self._sessions: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.tag = f"poodle-test-{uuid.uuid4().hex[:12]}"

    def factory(
        self, port: Optional[int] = None, timeout: float = 30.0, **options: Any
    ) -> Callable[[], Any]:
        """A pool factory connecting to ``port`` (default: the server's own),
        which gives up on a server that does not answer within ``timeout`` s.
        ``options`` go to the driver's connect()."""

        def connect() -> Any:
            conn = self._connect(port or self.port, timeout, **options)
            session_id = self.session_id(conn)
            self.opened.append(session_id)
            self._sessions[conn] = session_id
            return conn

        return connect

    def opened_session(self, conn: Any) -> int:
        """The session ``conn`` had when the factory opened it (no round trip,
        so it works on a dead connection too)."""
        return self._sessions[conn]

    def kill(self, session_id: int) -> None:
        """Kill one of our sessions and wait until the server has dropped it."""
        assert session_id in self.opened, "never kill a session this test did not open"
        self._kill(session_id)
        wait_until(lambda: not self.alive(session_id), 10, f"session {session_id} to end")

    def close(self) -> None:
        for session_id in self.opened:
            if self.alive(session_id):
                self._kill(session_id)
        self._close_admin()

    # -- per driver --------------------------------------------------------------

    def _connect(self, port: int, timeout: float, **options: Any) -> Any:
        raise NotImplementedError

    def session_id(self, conn: Any) -> int:
        """The server's id for the session now (backend pid, connection id,
        client id); a round trip for Redis."""
        raise NotImplementedError

    def ping(self, conn: Any) -> None:
        """A trivial statement, which fails on a dead connection."""
        raise NotImplementedError

    def block(self, conn: Any) -> None:
        """Keep the session busy for BLOCK_SECONDS (or until killed)."""
        raise NotImplementedError

    def blocking(self, session_id: int) -> bool:
        """Whether that session is inside :meth:`block` now."""
        raise NotImplementedError

    def alive(self, session_id: int) -> bool:
        raise NotImplementedError

    def _kill(self, session_id: int) -> None:
        raise NotImplementedError

    def _close_admin(self) -> None:
        raise NotImplementedError


class PostgreSQL(Server):
    name = "postgresql"
    check = staticmethod(drivers.psycopg_check)
    reset = staticmethod(drivers.psycopg_reset)

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.dsn = dsn
        self.lost = (psycopg.OperationalError,)
        self.admin = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        # DDL from the admin must fail, not hang, if a session of ours holds a lock.
        self.admin.execute("SET lock_timeout = '10s'")
        super().__init__(self.admin.info.port)

    def _connect(self, port: int, timeout: float, **options: Any) -> Any:
        import psycopg

        return psycopg.connect(
            self.dsn,
            port=port,
            connect_timeout=max(2, round(timeout)),  # psycopg waits 2 s at least
            application_name=self.tag,
            **options,
        )

    def session_id(self, conn: Any) -> int:
        return int(conn.info.backend_pid)

    def ping(self, conn: Any) -> None:
        conn.execute("SELECT 1").fetchone()

    def block(self, conn: Any) -> None:
        conn.execute(f"SELECT pg_sleep({BLOCK_SECONDS})")

    def blocking(self, session_id: int) -> bool:
        row = self.admin.execute(
            "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (session_id,)
        ).fetchone()
        return row is not None and row[0] == "active" and "pg_sleep" in row[1]

    def alive(self, session_id: int) -> bool:
        row = self.admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (session_id,)
        ).fetchone()
        return row is not None

    def _kill(self, session_id: int) -> None:
        # Waits up to 5 s for the backend to exit.
        self.admin.execute("SELECT pg_terminate_backend(%s, 5000)", (session_id,))

    def _close_admin(self) -> None:
        self.admin.close()


class MariaDB(Server):
    name = "mariadb"
    check = staticmethod(drivers.pymysql_check)
    reset = staticmethod(drivers.pymysql_reset)

    def __init__(self, params: dict[str, Any]) -> None:
        import pymysql

        self.params = params
        self.lost = (pymysql.err.OperationalError, pymysql.err.InterfaceError)
        self.admin = pymysql.connect(**params, autocommit=True, connect_timeout=10)
        super().__init__(params["port"])

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run ``sql`` on the admin connection; its rows."""
        with self.admin.cursor() as cursor:
            cursor.execute(sql, args or None)
            return list(cursor.fetchall())

    def _connect(self, port: int, timeout: float, **options: Any) -> Any:
        import pymysql

        # PyMySQL's connect_timeout covers the TCP connect only: the server's
        # greeting is read with read_timeout, so a server that accepts and
        # never answers needs that too.
        params = {**self.params, "port": port, **options}
        return pymysql.connect(**params, connect_timeout=timeout, read_timeout=timeout)

    def session_id(self, conn: Any) -> int:
        return int(conn.thread_id())

    def ping(self, conn: Any) -> None:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()

    def block(self, conn: Any) -> None:
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT SLEEP({BLOCK_SECONDS})")
            cursor.fetchall()

    def blocking(self, session_id: int) -> bool:
        rows = self.query(
            "SELECT command, info FROM information_schema.processlist WHERE id = %s", session_id
        )
        return bool(rows) and rows[0][0] == "Query" and "SLEEP" in (rows[0][1] or "")

    def alive(self, session_id: int) -> bool:
        return bool(self.query("SELECT 1 FROM information_schema.processlist WHERE id = %s",
                               session_id))

    def _kill(self, session_id: int) -> None:
        import pymysql

        try:
            self.query(f"KILL {int(session_id)}")
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1094:  # ER_NO_SUCH_THREAD: it has ended already
                raise

    def _close_admin(self) -> None:
        self.admin.close()


class Redis(Server):
    name = "redis"
    check = staticmethod(drivers.redis_check)
    reset = staticmethod(drivers.redis_reset)

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.lost = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self.admin = redis.Redis.from_url(url, socket_timeout=10)
        super().__init__(self.admin.connection_pool.connection_kwargs["port"])

    def url_for(self, port: Optional[int] = None, db: Optional[int] = None) -> str:
        """The server's URL with another port or database (from_url() lets the
        URL win over port= and db= arguments)."""
        url = urlsplit(self.url)
        if port is not None:
            userinfo = url.netloc.rpartition("@")[0]
            url = url._replace(netloc=f"{userinfo}{'@' if userinfo else ''}{url.hostname}:{port}")
        if db is not None:
            url = url._replace(path=f"/{db}")
        return urlunsplit(url)

    def _connect(self, port: int, timeout: float, **options: Any) -> Any:
        return drivers.redis_client(
            self.url_for(port=port),
            client_name=self.tag,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,  # the handshake is read with it
            **options,
        )

    def session_id(self, conn: Any) -> int:
        return int(conn.client_id())

    def ping(self, conn: Any) -> None:
        assert conn.ping()

    def block(self, conn: Any) -> None:
        conn.blpop([f"{self.tag}-never"], timeout=BLOCK_SECONDS)

    def _client(self, session_id: int) -> Optional[dict[str, Any]]:
        clients = self.admin.client_list(client_id=[session_id])
        return clients[0] if clients else None

    def blocking(self, session_id: int) -> bool:
        client = self._client(session_id)
        return client is not None and client.get("cmd") == "blpop" and "b" in client["flags"]

    def alive(self, session_id: int) -> bool:
        return self._client(session_id) is not None

    def _kill(self, session_id: int) -> None:
        self.admin.client_kill_filter(_id=session_id)

    def _close_admin(self) -> None:
        self.admin.close()


def elapsed(since: float) -> float:
    return time.monotonic() - since
