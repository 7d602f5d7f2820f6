"""SQLAlchemy on poodle: an Engine whose DB-API connections a poodle Pool lends.

Install the extra (``pip install poodle_cherrypy[sqlalchemy]``), then::

    from poodle_cherrypy.sqlalchemy import create_engine

    engine = create_engine("postgresql+psycopg://app@db/app",
                           poodle={"max_size": 8, "timeout": 5.0})

``engine.pool`` is a :class:`PoodlePool`, SQLAlchemy's own extension point (a
``sqlalchemy.pool.Pool`` subclass, given as ``poolclass``), and
``engine.pool.poodle`` the poodle pool under it: fair FIFO hand-off, the
outage breaker, the timing histograms, fork safety and the metrics exporters
all apply to the Engine's connections. SQLAlchemy's records, events
(``connect``, ``checkout``, ``checkin``, ``reset``, ``invalidate``) and reset on
return work as with its ``QueuePool``.

What maps to what:

- ``pool_pre_ping=True`` becomes poodle's ``check``: the dialect's ping, run on
  every checkout of an idle connection (``check_after = 0``, unless the
  ``poodle`` options say otherwise). A connection that fails it is disposed of,
  and the connections opened before it become suspect (poodle's watermark).
- A connection SQLAlchemy invalidates (disconnect detection, or
  ``Connection.invalidate()``) is disposed of by poodle when it comes back, and
  moves the watermark likewise; a soft invalidation retires it quietly.
- ``pool_recycle`` becomes poodle's ``max_lifetime``; ``pool_timeout`` the
  checkout's wait (default: the poodle pool's ``timeout``), ending in
  :class:`PoolTimeoutError`, which is both SQLAlchemy's ``TimeoutError`` and
  poodle's :class:`~poodle_cherrypy.PoolTimeout`.
- ``engine.dispose()`` retires every connection open now (poodle's
  ``recycle()``: idle ones closed at once, checked-out ones when they come
  back); ``engine.dispose(close=False)``, in a forked child, leaves them to
  the parent (poodle drops a parent's connections in a child without closing
  them, whatever is called).
- ``engine.pool.status()`` reports poodle's figures.

Nesting: each checkout (``engine.connect()``, or a Session's connection) gets
a connection of its own, as with every SQLAlchemy pool, so an inner Session's
rollback never touches an outer one's transaction; two held at once by one
thread take two of the pool's slots. Only the request's Session that
:class:`~poodle_cherrypy.PoodleTool` makes shares the request's poodle
connection (``cherrypy.request.conn``), on purpose: one transaction per request.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Optional, Union, cast

import sqlalchemy
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from .errors import PoolTimeout
from .pool import Pool
from .records import Record, ThreadState

__all__ = ["PoodlePool", "PoolTimeoutError", "RequestBinding", "create_engine", "poodle_pool_of"]

_monotonic = time.monotonic


class _Collecting(threading.local):
    """Whether the garbage collector is running in this thread."""

    active = False


_collecting = _Collecting()


def _on_gc(phase: str, info: dict[str, int]) -> None:
    _collecting.active = phase == "start"


# A Connection nobody closed is given back by SQLAlchemy's finalizer when the
# collector frees it, which may happen at any allocation, one the pool makes
# under its own lock included: such a return must not wait for that lock in
# the thread that holds it (see PoodlePool._give_back).
gc.callbacks.append(_on_gc)


class PoolTimeoutError(PoolTimeout, sa_exc.TimeoutError):
    """No connection became available within the checkout's timeout.

    Both poodle's :class:`~poodle_cherrypy.PoolTimeout` and SQLAlchemy's
    ``sqlalchemy.exc.TimeoutError``, so either ``except`` catches it.
    """


class _Shared:
    """What the PoodlePools on one poodle pool share."""

    __slots__ = ("incoming", "out", "records")

    def __init__(self) -> None:
        # What the next checkout in a thread takes: the connection poodle has
        # just lent (conn) or the request's to adopt (adopt).
        self.incoming = threading.local()
        # poodle's record of each connection -> SQLAlchemy's record of it,
        # kept while poodle keeps the connection.
        self.records: weakref.WeakKeyDictionary[Record, Any] = weakref.WeakKeyDictionary()
        # SQLAlchemy's records out now -> poodle's record, or (for the
        # request's adopted connection) the ThreadState of its lease.
        self.out: dict[Any, Union[Record, ThreadState]] = {}


_shared: weakref.WeakKeyDictionary[Pool[Any], _Shared] = weakref.WeakKeyDictionary()

#: SQLAlchemy's records whose DB-API connection SQLAlchemy closed (an
#: invalidation); one that comes back without a connection and is not here
#: was detached: its connection belongs to its caller now.
_closed_records: weakref.WeakSet[Any] = weakref.WeakSet()


def _note_closed(dbapi_connection: Any, record: Any) -> None:
    """The ``close`` event: SQLAlchemy is closing ``record``'s connection."""
    _closed_records.add(record)


class PoodlePool(sa_pool.Pool):
    """A ``sqlalchemy.pool.Pool`` whose DB-API connections a poodle pool lends.

    ``poodle`` is a :class:`~poodle_cherrypy.Pool` (its factory opens the
    connections: ``creator`` is not used) or a dict of Pool options (a new
    Pool, whose factory is ``creator``: the Engine's connect, or
    ``create_engine``'s ``creator=``). Give it as
    ``create_engine(url, poolclass=PoodlePool, poodle=...)``, or use
    :func:`create_engine`. ``timeout``, ``pre_ping`` and ``recycle`` are
    SQLAlchemy's ``pool_timeout``, ``pool_pre_ping`` and ``pool_recycle`` (see
    the module's docs for what each becomes); the other arguments are
    ``sqlalchemy.pool.Pool``'s.
    """

    # SQLAlchemy's pool log lines go where its users' logging config for
    # "sqlalchemy.pool" sends them (poodle's own go to "poodle_cherrypy").
    _sqla_logger_namespace = "sqlalchemy.pool.PoodlePool"

    def __init__(
        self,
        creator: Any,
        poodle: Union[Pool[Any], Mapping[str, Any], None] = None,
        timeout: Optional[float] = None,
        pre_ping: bool = False,
        recycle: float = -1,
        echo: Any = None,
        logging_name: Optional[str] = None,
        reset_on_return: Any = True,
        events: Any = None,
        dialect: Any = None,
        _dispatch: Any = None,
    ) -> None:
        # SQLAlchemy's own pre-ping and recycle would reconnect a record in
        # place, behind poodle's back: poodle's check and max_lifetime do it.
        super().__init__(
            creator, echo=echo, logging_name=logging_name,
            reset_on_return=reset_on_return, events=events, dialect=dialect,
            _dispatch=_dispatch,
        )
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout >= 0
        ):
            raise sa_exc.ArgumentError(f"pool_timeout must be seconds >= 0, got {timeout!r}")
        self._timeout = timeout
        self._poodle_pre_ping = bool(pre_ping)
        self._poodle_recycle = recycle
        if isinstance(poodle, Pool):
            if recycle is not None and recycle > 0:
                raise sa_exc.ArgumentError(
                    f"pool_recycle={recycle!r} with a poodle Pool given: set that Pool's "
                    f"max_lifetime instead"
                )
            if pre_ping and not poodle._has_check:
                raise sa_exc.ArgumentError(
                    f"pool_pre_ping=True with poodle pool {poodle.name!r}, which has no check: "
                    f"give that Pool a check (for example the driver's ping)"
                )
            self._poodle: Pool[Any] = poodle
        else:
            options = dict(poodle or {})
            if "factory" in options:
                raise sa_exc.ArgumentError(
                    "poodle={'factory': ...}: the Engine opens the connections; pass "
                    "create_engine(creator=...) or a poodle Pool instead"
                )
            if pre_ping and options.get("check") is None:
                options["check"] = self._ping
                options.setdefault("check_after", 0.0)
            if recycle is not None and recycle > 0:
                options.setdefault("max_lifetime", float(recycle))
            invoke = self._invoke_creator
            self._poodle = Pool(lambda: invoke(None), **options)  # type: ignore[arg-type]
        # What the record SQLAlchemy builds in _do_get connects to: the
        # connection poodle has just lent (see _hand_over).
        self._invoke_creator = self._hand_over  # type: ignore[assignment]
        # Shared by every PoodlePool on this poodle pool (engine.dispose()
        # makes a new one): one SQLAlchemy record per DB-API connection.
        shared = _shared.get(self._poodle)
        if shared is None:
            shared = _shared[self._poodle] = _Shared()
        self._incoming = shared.incoming
        self._records = shared.records
        self._out = shared.out
        if not event.contains(self, "close", _note_closed):
            event.listen(self, "close", _note_closed)

    @property
    def poodle(self) -> Pool[Any]:
        """The poodle :class:`~poodle_cherrypy.Pool` that lends the connections."""
        return self._poodle

    def _ping(self, conn: Any) -> bool:
        """poodle's check for ``pool_pre_ping=True``: the dialect's ping."""
        return bool(self._dialect.do_ping(conn))  # type: ignore[union-attr]  # an Engine's

    # -- SQLAlchemy's Pool interface -------------------------------------------

    def _do_get(self) -> Any:
        adopt: Optional[ThreadState] = getattr(self._incoming, "adopt", None)
        if adopt is not None:
            self._incoming.adopt = None
            rec = adopt.rec
            if rec is None:
                raise RuntimeError("no poodle connection to adopt: the lease was given back")
            holder: Union[Record, ThreadState] = adopt
        else:
            try:
                rec = self._poodle._acquire(self._timeout, _monotonic())
            except PoolTimeout as exc:
                raise PoolTimeoutError(str(exc)) from exc
            holder = rec
        try:
            record = self._record_for(rec)
        except BaseException:
            # The connect event failed (SQLAlchemy closed the connection).
            if holder is rec:
                self._poodle._release(rec, "SQLAlchemy's connect event failed")
            elif not adopt.doomed:  # type: ignore[union-attr]
                adopt.doomed = "SQLAlchemy's connect event failed"  # type: ignore[union-attr]
            raise
        self._out[record] = holder
        return record

    def _record_for(self, rec: Record) -> Any:
        """SQLAlchemy's record of poodle's ``rec``; a new one (which fires the
        ``connect`` events) for a connection it has not seen."""
        record = self._records.get(rec)
        if record is not None and record.dbapi_connection is rec.conn:
            return record
        self._incoming.conn = rec.conn
        try:
            record = self._create_connection()
        finally:
            self._incoming.conn = None
        self._records[rec] = record
        return record

    def _hand_over(self, record: Any) -> Any:
        """The creator SQLAlchemy's records call: the connection poodle lent."""
        conn = getattr(self._incoming, "conn", None)
        if conn is not None:
            return conn
        # A record reconnecting while out (a checkout listener raised
        # DisconnectionError): its connection was closed; give it back as
        # broken and lend the record another.
        holder = self._out.get(record)
        if not isinstance(holder, Record):
            raise sa_exc.DisconnectionError(
                "the request's connection was invalidated during its checkout"
            )
        del self._out[record]
        _closed_records.discard(record)
        poodle = self._poodle
        poodle._release(holder, "SQLAlchemy invalidated it at checkout")
        # A fresh connection, where there is room: an idle one has a record
        # of its own already (and its connect events ran).
        since = _monotonic()
        with poodle._lock:
            fresh = poodle._size < poodle._max_size and not poodle._closed
            if fresh:
                poodle._hand_slot_to_self()
        try:
            rec = poodle._open_lent(since) if fresh else poodle._acquire(self._timeout, since)
        except PoolTimeout as exc:
            raise PoolTimeoutError(str(exc)) from exc
        self._records[rec] = record
        self._out[record] = rec
        return rec.conn

    def _do_return_conn(self, record: Any) -> None:
        holder = self._out.pop(record, None)
        if holder is None:
            return  # given back already (a record whose connect failed)
        gone = record.dbapi_connection is None
        closed = gone and record in _closed_records
        _closed_records.discard(record)
        soft = not gone and record._soft_invalidate_time > record.starttime
        if isinstance(holder, ThreadState):
            # The request's own connection: its lease, not this pool, gives it back.
            if gone and not holder.doomed:
                holder.doomed = (
                    "SQLAlchemy invalidated it" if closed else "SQLAlchemy detached it"
                )
            elif soft and holder.rec is not None:
                holder.rec.epoch = -1  # retired: disposed of on its return, quietly
            return
        if closed:
            self._give_back(holder, "SQLAlchemy invalidated it")
        elif gone:
            # detach(): the caller keeps the connection; its slot is free.
            self._give_back(holder, "detached", keep=True)
        else:
            if soft:
                holder.epoch = -1  # retired: disposed of on its return, quietly
            self._give_back(holder, None)

    def _give_back(self, rec: Record, broken: Optional[str], keep: bool = False) -> None:
        """Give ``rec`` back to poodle; from a thread of its own when the
        garbage collector is returning it (it may have interrupted this thread
        inside the pool's lock: that thread waits its turn instead)."""
        if not _collecting.active:
            self._poodle._release(rec, broken, keep=keep)
            return
        threading.Thread(
            target=self._poodle._release, args=(rec, broken, None, keep),
            name=f"poodle {self._poodle.name} collected return", daemon=True,
        ).start()

    def _invalidate(
        self, connection: Any, exception: Optional[BaseException] = None, _checkin: bool = True
    ) -> None:
        # SQLAlchemy would mark every older record for reconnection at its next
        # checkout; poodle's watermark does that job when the connection comes
        # back invalidated.
        if _checkin and getattr(connection, "is_valid", False):
            connection.invalidate(exception)

    def recreate(self) -> PoodlePool:
        """A new PoodlePool on the same poodle pool and events (``engine.dispose()``)."""
        self.logger.info("Pool recreating")
        return type(self)(
            self._creator, poodle=self._poodle, timeout=self._timeout,
            pre_ping=self._poodle_pre_ping, echo=self.echo,
            logging_name=self._orig_logging_name, reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch, dialect=self._dialect,
        )

    def dispose(self) -> None:
        """Retire every connection open now: poodle's ``recycle()``."""
        self._poodle.recycle()
        self.logger.info("Pool disposed. %s", self.status())

    def status(self) -> str:
        """poodle's figures: size, idle, in use, waiting."""
        stats = self._poodle.stats()
        return (
            f"PoodlePool {self._poodle.name!r}: size={stats.size}/{stats.max_size} "
            f"idle={stats.idle} in_use={stats.in_use} waiting={stats.waiting}"
        )

    def checkedout(self) -> int:
        """Connections in use now (as ``QueuePool.checkedout()``)."""
        return self._poodle.stats().in_use

    def checkedin(self) -> int:
        """Idle connections now (as ``QueuePool.checkedin()``)."""
        return self._poodle.stats().idle

    def size(self) -> int:
        """The most connections open at once (poodle's ``max_size``)."""
        return self._poodle.stats().max_size

    # -- the request's connection ----------------------------------------------

    @contextmanager
    def adopting(self) -> Iterator[None]:
        """Within it, the calling thread's next checkout from this pool is the
        poodle connection it holds (entered with ``poodle.get()``), not one of
        its own; giving that checkout back leaves the connection to its lease,
        which disposes of it if SQLAlchemy invalidated it."""
        state = self._poodle._local.state
        if state.rec is None:
            raise RuntimeError(
                f"pool {self._poodle.name!r}: this thread holds no connection to adopt"
            )
        self._incoming.adopt = state
        try:
            yield
        finally:
            self._incoming.adopt = None


def create_engine(
    url: Union[str, sqlalchemy.URL],
    *,
    poodle: Union[Pool[Any], Mapping[str, Any], None] = None,
    **kwargs: Any,
) -> Engine:
    """``sqlalchemy.create_engine(url, poolclass=PoodlePool, poodle=poodle, **kwargs)``.

    ``poodle`` is a :class:`~poodle_cherrypy.Pool` or a dict of its options
    (see :class:`PoodlePool`).
    """
    if "pool" in kwargs or "poolclass" in kwargs:
        raise sa_exc.ArgumentError("poodle's create_engine makes the pool: drop pool/poolclass")
    return sqlalchemy.create_engine(url, poolclass=PoodlePool, poodle=poodle, **kwargs)


def poodle_pool_of(engine: object) -> Optional[Pool[Any]]:
    """The poodle pool under ``engine``, or None if it is not a poodle Engine."""
    pool = getattr(engine, "pool", None)
    return pool.poodle if isinstance(pool, PoodlePool) else None


class RequestBinding:
    """An Engine on a poodle pool, and how the request tool makes each
    request's Session on the request's own connection.

    ``session_factory`` (default ``sqlalchemy.orm.Session``) is called as
    ``session_factory(bind=connection)``: a ``sessionmaker`` with options of
    one's own will do.
    """

    __slots__ = ("engine", "session_factory")

    def __init__(self, engine: Engine, session_factory: Optional[Callable[..., Session]] = None):
        if not isinstance(engine.pool, PoodlePool):
            raise TypeError(
                f"engine {engine!r} is not on a poodle pool: make it with "
                f"poodle_cherrypy.sqlalchemy.create_engine"
            )
        self.engine = engine
        self.session_factory: Callable[..., Session] = session_factory or Session

    @property
    def pool(self) -> Pool[Any]:
        """The poodle pool under the Engine."""
        return cast(PoodlePool, self.engine.pool).poodle

    def open(self) -> tuple[Session, Connection]:
        """A Session (and its Connection) on the connection the calling thread
        holds from :attr:`pool`."""
        sa_pool_ = cast(PoodlePool, self.engine.pool)
        with sa_pool_.adopting():
            connection = self.engine.connect()
        try:
            return self.session_factory(bind=connection), connection
        except BaseException:
            connection.close()
            raise
