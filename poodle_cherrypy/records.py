"""What a pool knows of each connection and each waiter, and the default broken rule.

These are the pool's own records (:mod:`poodle_cherrypy.pool` reads and
writes them under its lock, and nothing else should); :func:`is_broken` is
public, re-exported as ``poodle_cherrypy.is_broken``.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Optional, Union

from .errors import PoolError

__all__ = [
    "CLOSED", "CREATE", "ROLE_CHANGED_SQLSTATES", "Local", "Record", "Sentinel", "ThreadState",
    "Waiter", "is_broken", "reports_closed",
]


#: Exception class names (anywhere in the MRO) that mean "this connection is
#: gone": DB-API's OperationalError and InterfaceError, and the
#: ConnectionError/TimeoutError of drivers that do not derive them from OSError
#: (redis-py).
_BROKEN_EXCEPTION_NAMES = frozenset(
    {"OperationalError", "InterfaceError", "ConnectionError", "TimeoutError"}
)


#: PostgreSQL SQLSTATEs that mean "this server's role changed": a write refused
#: because the server is (now) read-only, a standby or a demoted primary
#: (25006), and an administrator's, a crash's or a conflict's shutdown of the
#: session (57P01-57P03). psycopg raises 25006 as an InternalError.
ROLE_CHANGED_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})


def reports_closed(conn: object) -> bool:
    """Whether ``conn`` has a ``closed`` attribute that says it is closed."""
    closed = getattr(conn, "closed", False)
    # psycopg 3 has a bool, psycopg2 an int; a method named closed says nothing.
    return not callable(closed) and bool(closed)


def is_broken(conn: object, exc: Optional[BaseException]) -> bool:
    """The default rule for "this connection must not be reused".

    Called as ``broken(conn, exc)`` when a ``with pool.get()`` block exits,
    ``exc`` being the exception the block raised, or None. True when ``exc`` is
    an ``OSError`` (``ConnectionError``, socket errors), or has a class named
    ``OperationalError``, ``InterfaceError``, ``ConnectionError`` or
    ``TimeoutError`` in its MRO (DB-API drivers, redis-py), or a ``sqlstate``
    in :data:`ROLE_CHANGED_SQLSTATES` (a PostgreSQL server now read-only, or
    shutting the session down), or wraps such an exception as ``orig``
    (SQLAlchemy's ``DBAPIError``); or when the connection has a ``closed``
    attribute that is true (psycopg, psycopg2). A :class:`PoolError` (another
    pool's, whatever else it derives from) never marks the connection.
    Pass ``broken=`` to :class:`Pool` to use another rule; it may call this one.
    """
    if exc is not None and not isinstance(exc, PoolError):  # another pool's error
        if isinstance(exc, OSError):
            return True
        for cls in type(exc).__mro__:
            if cls.__name__ in _BROKEN_EXCEPTION_NAMES:
                return True
        if getattr(exc, "sqlstate", None) in ROLE_CHANGED_SQLSTATES:
            return True
        orig = getattr(exc, "orig", None)
        if isinstance(orig, BaseException) and orig is not exc:
            # SQLAlchemy's DBAPIError wraps the driver's own exception.
            return is_broken(None, orig) or reports_closed(conn)
    return reports_closed(conn)


class Record:
    """A pooled connection and what the pool knows about it."""

    __slots__ = (
        "__weakref__",  # poodle_cherrypy.sqlalchemy keeps its own record of each
        "checked_out",
        "conn",
        "created",
        "epoch",
        "has_closed",
        "last_used",
        "leak_reported",
        "pid",
        "stack",
        "uses",
    )

    def __init__(self, conn: Any, now: float, pid: int) -> None:
        self.conn = conn
        self.created = now
        self.last_used = now
        self.uses = 0
        self.epoch = -1
        self.pid = pid
        self.has_closed = hasattr(conn, "closed")
        self.checked_out = 0.0
        self.stack: Optional[traceback.StackSummary] = None
        self.leak_reported = False


class Sentinel:
    """What a waiter is handed instead of a connection (:data:`CREATE`, :data:`CLOSED`)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: Handed to a waiter: a free slot, to open a connection in yourself.
CREATE = Sentinel("CREATE")
#: Handed to a waiter: the pool closed while you waited.
CLOSED = Sentinel("CLOSED")


class Waiter:
    """A caller waiting in line for a connection, served first come, first served."""

    __slots__ = ("lock", "result", "since")

    def __init__(self, since: float) -> None:
        self.since = since  # when its get() began: the start of its wait
        # Acquired now, released by whoever serves this waiter: the cheapest
        # one-shot wake-up the threading module has.
        self.lock = threading.Lock()
        self.lock.acquire()
        self.result: Union[Record, Sentinel, None] = None


class ThreadState:
    """What one thread holds from one pool: the connection and the nesting depth."""

    __slots__ = ("depth", "doomed", "rec")

    def __init__(self) -> None:
        self.rec: Optional[Record] = None
        self.depth = 0
        # Why the broken rule judged the connection lost after a block's
        # exception (never empty): it is disposed of when the outermost block
        # exits.
        self.doomed: Optional[str] = None


class Local(threading.local):
    """Each thread's :class:`ThreadState` of one pool."""

    def __init__(self) -> None:
        self.state = ThreadState()
