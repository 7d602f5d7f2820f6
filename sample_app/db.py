"""Connection factories and the little that differs between SQLite and PostgreSQL.

Everything a pool needs is a module-level function, so that a CherryPy config
file can name it as a ``"module:callable"`` string (see ``app.conf``)::

    poodle.default.factory = "sample_app.db:connect_sqlite"
    poodle.default.reset = "sample_app.db:rollback"
    poodle.default.broken = "sample_app.db:sqlite_broken"

:func:`pool_spec` builds the same declaration in Python from a ``--database``
value: a file path (SQLite) or a ``postgresql://`` URL (psycopg 3).
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "APPLICATION_NAME",
    "POSTGRESQL",
    "POSTGRESQL_SCHEMES",
    "SQLITE",
    "Dialect",
    "connect_postgresql",
    "connect_sqlite",
    "dialect_of",
    "is_busy",
    "is_postgresql_url",
    "ping",
    "pool_spec",
    "rollback",
    "sqlite_broken",
    "url_scheme",
]

#: The start of the ``application_name`` of the app's PostgreSQL connections.
APPLICATION_NAME = "sample_app"

#: Seconds an SQLite connection waits for another writer's lock before it
#: gives up with "database is locked".
SQLITE_BUSY_TIMEOUT = 10.0

# Primary SQLite result codes (the low byte of an extended code).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_NOMEM = 7
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

#: Codes after which an SQLite connection is not worth keeping: the file
#: under it is unreadable, damaged, gone or not a database. A fresh connection
#: opens the file again. (Busy and locked are not among them: they pass.)
_SQLITE_DEAD_CODES = frozenset(
    {_SQLITE_NOMEM, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_CANTOPEN, _SQLITE_NOTADB}
)

#: The same, by message, for Pythons before 3.11 (no ``sqlite_errorcode``).
_SQLITE_DEAD_MESSAGES = (
    "disk i/o error",
    "malformed",
    "not a database",
    "unable to open",
    "out of memory",
)


class Cursor(Protocol):
    """What the store uses of a DB-API cursor."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the store uses of a connection: sqlite3's and psycopg's both fit."""

    def execute(self, query: Any, params: Any = ..., /) -> Cursor: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


# -- SQLite --------------------------------------------------------------------


def connect_sqlite(path: str, busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> sqlite3.Connection:
    """An SQLite connection to the file ``path`` (its folder is created), for a pool.

    - ``check_same_thread=False``: a pooled connection serves many threads, one
      at a time.
    - ``isolation_level=None``: sqlite3 opens no transaction by itself. Its
      implicit ``BEGIN`` is deferred: two writers that both read first would
      both hold read locks, and the one upgrading to a write lock fails with
      "database is locked" at once, whatever the busy timeout. Writes begin
      with ``BEGIN IMMEDIATE`` instead (:meth:`Dialect.begin_write`), which
      waits its turn; ``commit()`` and ``rollback()`` still end it.
    - a busy timeout (``busy_timeout`` seconds, :data:`SQLITE_BUSY_TIMEOUT` by
      default), and WAL mode, in which readers never wait for the writer.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster
    except BaseException:
        conn.close()
        raise
    return conn


def _sqlite_closed(conn: sqlite3.Connection) -> bool:
    try:
        conn.in_transaction  # noqa: B018  (raises on a closed connection)
    except sqlite3.ProgrammingError:
        return True
    return False


def sqlite_broken(conn: sqlite3.Connection, exc: Optional[BaseException]) -> bool:
    """The pool's ``broken`` rule for SQLite: is this connection dead?

    The default rule (:func:`poodle_cherrypy.is_broken`) discards a connection
    after any ``OperationalError``, which for SQLite includes "database is
    locked": under write contention the pool would throw away healthy
    connections. An SQLite connection is in-process, so there is no network
    to lose; it is dead when it has been closed, or when SQLite reports that
    the file under it cannot be used (I/O error, corruption, not a database,
    cannot open, out of memory). Then a new connection, which opens the file
    again, may do better. Anything else (busy, locked, constraint and SQL
    errors, and all non-SQLite exceptions) leaves it in the pool.
    """
    if _sqlite_closed(conn):
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_DEAD_CODES
    message = str(exc).lower()
    return any(text in message for text in _SQLITE_DEAD_MESSAGES)


# -- PostgreSQL ------------------------------------------------------------------


#: The URL schemes of a PostgreSQL ``--database``, in any case.
POSTGRESQL_SCHEMES = ("postgresql", "postgres")

_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def url_scheme(database: str) -> Optional[str]:
    """The scheme of ``database`` if it is a URL (``"<scheme>://..."``), else None."""
    match = _URL_SCHEME.match(database)
    return None if match is None else match.group(1)


def is_postgresql_url(database: str) -> bool:
    """Whether ``--database`` names a PostgreSQL server rather than an SQLite file:
    a ``postgresql://`` or ``postgres://`` URL, the scheme in any case."""
    scheme = url_scheme(database)
    return scheme is not None and scheme.lower() in POSTGRESQL_SCHEMES


def _libpq_url(url: str) -> str:
    # libpq only knows its URL schemes in lower case.
    scheme = url_scheme(url)
    if scheme is None or scheme.lower() not in POSTGRESQL_SCHEMES:
        return url
    return scheme.lower() + url[len(scheme):]


def connect_postgresql(url: str) -> psycopg.Connection[Any]:
    """A psycopg 3 connection to ``url`` (any libpq conninfo string, or a URL
    whose scheme is postgresql or postgres in any case).

    In autocommit mode, as SQLite's are (see :func:`connect_sqlite`): a read
    is one round trip, where psycopg's implicit transaction would add a
    ``BEGIN`` and a ``COMMIT`` to every request. Writes begin with ``BEGIN``
    (:meth:`Dialect.begin_write`); ``commit()`` and ``rollback()``, which
    ``tools.poodle.transaction`` calls, end that transaction. Its cursors
    count the statements that may write (:func:`~poodle_cherrypy.drivers.psycopg_connect`),
    so a connection lost before a request wrote anything answers 503, not 500.

    Unless ``url`` sets one, the connection's ``application_name`` is
    ``sample_app pid <pid>``, the process that opened it, so that
    ``pg_stat_activity`` tells which worker holds which server connection.
    """
    from psycopg.conninfo import conninfo_to_dict

    from poodle_cherrypy.drivers import psycopg_connect  # needs psycopg (the "postgresql" extra)

    url = _libpq_url(url)
    extra: dict[str, Any] = {}
    if "application_name" not in conninfo_to_dict(url):
        extra["application_name"] = f"{APPLICATION_NAME} pid {os.getpid()}"
    return psycopg_connect(url, autocommit=True, **extra)


def ping(conn: Connection) -> None:
    """A ``check`` for the pool: one round trip, raising if the server is gone.

    Not set by default (it costs a round trip per request); name it in a
    config file (``poodle.default.check = "sample_app.db:ping"``) when idle
    connections may be cut by the network.
    """
    conn.execute("SELECT 1")
    conn.rollback()


# -- both --------------------------------------------------------------------------


def rollback(conn: Connection) -> None:
    """The pool's ``reset``: end whatever transaction a request left open."""
    conn.rollback()


def pool_spec(database: str, max_size: int) -> dict[str, Any]:
    """PoodlePlugin's declaration of a pool for ``database`` (path or URL)."""
    if is_postgresql_url(database):
        from poodle_cherrypy.drivers import psycopg_check

        return {
            "factory": connect_postgresql,
            "args": (database,),
            "max_size": max_size,
            "reset": rollback,
            # A round trip only for a connection idle for check_after (0.5 s)
            # or opened before one found broken; a restart in a quiet period
            # is found by maintain() within keepalive + maintain_interval.
            "check": psycopg_check,
            "keepalive": 30.0,
        }
    return {
        "factory": connect_sqlite,
        "args": (database,),
        "max_size": max_size,
        "reset": rollback,
        "broken": sqlite_broken,
    }


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" after the busy timeout ran out."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc)


@dataclass(frozen=True)
class Dialect:
    """The differences between the two databases that the store's SQL must know."""

    name: str
    """``"sqlite"`` or ``"postgresql"``."""
    placeholder: str
    """The bound parameter marker: ``?`` or ``%s``."""
    id_type: str
    """The column type of document ids: compared byte by byte in both."""
    begin_write: str
    """The statement that starts a writing transaction (reads need none)."""

    def sql(self, query: str) -> str:
        """``query``, written with ``?`` markers, in this dialect."""
        return query if self.placeholder == "?" else query.replace("?", self.placeholder)


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    id_type="TEXT",  # SQLite's default BINARY collation
    begin_write="BEGIN IMMEDIATE",  # take the write lock now, waiting for it if need be
)
POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    id_type='TEXT COLLATE "C"',  # not the database's locale: paging needs byte order
    begin_write="BEGIN",  # the row locks of UPDATE and DELETE settle races
)


def dialect_of(conn: object) -> Dialect:
    """The dialect of a connection made by one of the factories here."""
    if isinstance(conn, sqlite3.Connection):
        return SQLITE
    if type(conn).__module__.partition(".")[0] == "psycopg":
        return POSTGRESQL
    raise TypeError(f"not an sqlite3 or psycopg connection: {conn!r}")
