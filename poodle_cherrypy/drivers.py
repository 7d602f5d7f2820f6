"""Recipes for real drivers: ``check``, ``reset`` and ``broken`` callables for :class:`Pool`.

Each recipe is a plain module-level function, so it can be passed to the pool
from Python or named in a config file as ``"module:callable"``, e.g.
``"poodle_cherrypy.drivers:psycopg_reset"``. Nothing here imports a driver
when the module is imported: a recipe works on the connection it is given, so
the drivers stay optional.

Every recipe is cheap: a check is one round trip, a reset at most one (rolling
back a psycopg connection that is not in a transaction costs none), except the
opt-in session resets, which say what they cost. A recipe that fails raises,
and the pool then disposes of the connection and logs why: a connection the
recipe cannot vouch for is never handed out again.

PostgreSQL, psycopg 3 (``psycopg.connect``, or :func:`psycopg_connect`):
    :func:`psycopg_check`, :func:`psycopg_reset`, :func:`psycopg_discard_all`,
    :func:`psycopg_broken`; through PgBouncer in transaction mode,
    :func:`psycopg_pgbouncer_connect` as the factory (see there); on a
    primary and its standbys (failover), :func:`psycopg_failover_connect`,
    :func:`psycopg_primary_check` and :func:`psycopg_primary_broken`; reads
    on a standby, :func:`psycopg_replica_connect`; request deadlines,
    :func:`psycopg_set_deadline`.
MariaDB/MySQL, PyMySQL (``pymysql.connect``):
    :func:`pymysql_check`, :func:`pymysql_reset`, :func:`pymysql_reset_session`,
    :func:`pymysql_set_deadline`.
Redis, redis-py (:func:`redis_client` as the factory):
    :func:`redis_check`, :func:`redis_reset`.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import psycopg
    import redis

__all__ = [
    "psycopg_broken",
    "psycopg_check",
    "psycopg_connect",
    "psycopg_discard_all",
    "psycopg_failover_connect",
    "psycopg_pgbouncer_connect",
    "psycopg_primary_broken",
    "psycopg_primary_check",
    "psycopg_replica_connect",
    "psycopg_reset",
    "psycopg_set_deadline",
    "pymysql_check",
    "pymysql_reset",
    "pymysql_reset_session",
    "pymysql_set_deadline",
    "redis_check",
    "redis_client",
    "redis_reset",
]


# -- PostgreSQL: psycopg 3 ----------------------------------------------------

#: Statements that change nothing a retry could repeat: reads, the start of a
#: transaction block, session settings. (A SELECT calling a function that
#: writes is the exception the docs mention.)
_HARMLESS = re.compile(r"\s*(?:select|show|values|table|begin|start\s+transaction|set)\b",
                       re.IGNORECASE)


def _harmless(query: object) -> bool:
    return isinstance(query, str) and _HARMLESS.match(query) is not None


#: The attribute on which the connections of :func:`psycopg_connect` count the
#: statements that may write; ``tools.poodle`` reads it to tell a request
#: that wrote nothing (a lost connection answers 503, safe to retry) from one
#: that may have (500).
WRITES_ATTRIBUTE = "poodle_writes"


def _wrote(conn: Any) -> None:
    setattr(conn, WRITES_ATTRIBUTE, getattr(conn, WRITES_ATTRIBUTE, 0) + 1)


@functools.cache
def _counting_cursor() -> type[Any]:
    import psycopg

    class CountingCursor(psycopg.Cursor):
        """A psycopg cursor that counts, on its connection's ``poodle_writes``,
        the statements it starts that may change something."""

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            if not _harmless(query):
                _wrote(self.connection)
            return super().execute(query, params, **kwargs)

        def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
            _wrote(self.connection)
            super().executemany(query, params_seq, **kwargs)

        def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
            _wrote(self.connection)
            return super().copy(statement, params, **kwargs)

        def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            if not _harmless(query):
                _wrote(self.connection)
            return super().stream(query, params, **kwargs)

    return CountingCursor


def psycopg_connect(conninfo: str = "", **kwargs: Any) -> psycopg.Connection[Any]:
    """``factory``: ``psycopg.connect(conninfo, **kwargs)``, counting possible writes.

    The connection's cursors (``conn.execute()`` and ``conn.cursor()``) add
    one to the connection's ``poodle_writes`` attribute for every statement
    they start that may change something: anything but a ``SELECT``,
    ``SHOW``, ``VALUES``, ``TABLE``, ``BEGIN``, ``START TRANSACTION`` or
    ``SET``, and every ``executemany()`` and ``copy()``. With it
    ``tools.poodle`` can tell a connection lost before the request wrote
    anything (503 with ``Retry-After``: retrying is safe) from one lost
    during or after a write (500: the outcome is unknown). Costs one regular
    expression match per statement. Server-side (named) cursors are not
    counted; a ``cursor_factory`` in ``kwargs`` replaces the counting one.
    """
    import psycopg

    options: dict[str, Any] = {"cursor_factory": _counting_cursor()}
    options.update(kwargs)
    conn = psycopg.connect(conninfo, **options)
    setattr(conn, WRITES_ATTRIBUTE, 0)
    return conn


def _psycopg_refuse_busy(conn: psycopg.Connection[Any]) -> None:
    """Raise if a command is still running on ``conn``: a result being streamed
    (``cursor.stream()``) holds the connection's lock, and a rollback or a ping
    would wait for it forever, in the very thread that holds it."""
    from psycopg import pq

    if conn.info.transaction_status == pq.TransactionStatus.ACTIVE:
        raise RuntimeError(
            "a command is still running on the connection (a result being streamed?)"
        )


def _psycopg_run_outside_transaction(conn: psycopg.Connection[Any], query: str) -> None:
    """Run ``query`` without leaving a transaction open.

    With autocommit off psycopg sends BEGIN before the first statement when no
    transaction is open; a statement run here (a ping, DISCARD ALL) must not
    leave one behind. Inside a transaction a statement opens nothing, so it
    runs as it is. It is never prepared: psycopg prepares a query it has seen
    five times, and a prepared ping would not survive a DISCARD ALL (nor a
    prepared DISCARD ALL itself).
    """
    from psycopg import pq

    if conn.autocommit or conn.info.transaction_status != pq.TransactionStatus.IDLE:
        conn.execute(query, prepare=False)
        return
    conn.autocommit = True
    try:
        conn.execute(query, prepare=False)
    finally:
        if not conn.closed:  # a lost connection would mask the real error
            conn.autocommit = False


def psycopg_check(conn: psycopg.Connection[Any]) -> None:
    """``check``: one round trip (an empty query) that raises if the server is gone.

    It opens no transaction (``SELECT 1`` with autocommit off would, and the
    user's ``with conn.transaction():`` would then only make a savepoint), and
    it works inside a transaction left open as well. It raises at once on a
    connection with a command still running.
    """
    _psycopg_refuse_busy(conn)
    _psycopg_run_outside_transaction(conn, "")


def psycopg_reset(conn: psycopg.Connection[Any]) -> None:
    """``reset``: roll back whatever transaction the block left open or failed.

    Free when no transaction is open (psycopg sends nothing then), one round
    trip otherwise. Session state set outside a transaction (``SET``,
    temporary tables, prepared statements, advisory locks) and the
    connection's Python attributes (``autocommit``, ``isolation_level``,
    ``read_only``) stay as the block left them; see :func:`psycopg_discard_all`.
    It raises at once on a connection with a command still running (a
    ``cursor.stream()`` left half-read), where psycopg's rollback would hang.
    """
    _psycopg_refuse_busy(conn)
    conn.rollback()


def psycopg_discard_all(conn: psycopg.Connection[Any]) -> None:
    """``reset``: roll back, then ``DISCARD ALL``: the session as a new one.

    ``DISCARD ALL`` resets every ``SET`` (``search_path``, ``statement_timeout``,
    ``SET ROLE``...), drops temporary tables, deallocates prepared statements
    (psycopg notices and forgets its own), releases advisory locks and stops
    ``LISTEN``. It cannot run in a transaction block, so it runs after the
    rollback, with autocommit switched on for it and restored afterwards.
    Costs one round trip more than :func:`psycopg_reset`. The connection's
    Python attributes (``autocommit``, ``isolation_level``, ``read_only``) stay
    as the block left them. Like :func:`psycopg_reset`, it raises on a
    connection with a command still running.
    """
    psycopg_reset(conn)
    _psycopg_run_outside_transaction(conn, "DISCARD ALL")


def psycopg_broken(conn: psycopg.Connection[Any], exc: Optional[BaseException]) -> bool:
    """``broken``: discard a connection only when psycopg says it is lost or busy.

    psycopg marks a connection ``closed`` the moment it finds it lost. The
    default rule (:func:`~poodle_cherrypy.is_broken`) also discards one whose
    block raised any ``OperationalError``, which in psycopg includes deadlocks,
    serialization failures, lock and statement timeouts: with this rule those
    cost a rollback instead of a reconnect. A connection left with a command
    still running (a half-read result) is discarded as well, and so is one
    whose block raised SQLSTATE 25006 (a write refused: the server is a
    standby now, or the transaction was read-only) or 57P01-57P03 (the server
    is shutting the session down): the server's role may have changed, and
    the next connect (with ``target_session_attrs=read-write``) finds the
    primary. Use it with
    :func:`psycopg_reset` or :func:`psycopg_discard_all`, which put a failed
    transaction back in order.
    """
    from psycopg import pq

    from .records import ROLE_CHANGED_SQLSTATES

    if getattr(exc, "sqlstate", None) in ROLE_CHANGED_SQLSTATES:
        return True

    status = conn.info.transaction_status
    return conn.closed or status in (pq.TransactionStatus.ACTIVE, pq.TransactionStatus.UNKNOWN)


def psycopg_pgbouncer_connect(conninfo: str = "", **kwargs: Any) -> psycopg.Connection[Any]:
    """``factory``: a psycopg 3 connection for PgBouncer in transaction (or statement) mode.

    In transaction mode PgBouncer lends a server connection for one
    transaction (one statement, in autocommit), so consecutive statements of
    one client run on different server sessions. psycopg prepares a query it
    has run five times, and the next run of it, on another session, fails
    with "prepared statement does not exist": this factory turns preparing
    off (``prepare_threshold=None``; PgBouncer 1.21+ can track prepared
    statements with ``max_prepared_statements``, 1.18 cannot). ``kwargs`` go to
    ``psycopg.connect`` (``autocommit=True``, ``application_name``...) and may
    not set ``prepare_threshold`` otherwise.

    Use it with ``reset`` :func:`psycopg_reset` (a rollback: ends what a block
    left open, which would otherwise pin a server connection), ``check``
    :func:`psycopg_check` and ``broken`` :func:`psycopg_broken`. Not
    :func:`psycopg_discard_all`: ``DISCARD ALL`` would run on whatever server
    session PgBouncer lends for it, not on the one the block used; PgBouncer
    resets server sessions itself (``server_reset_query``, in session mode
    only). Session state does not survive a transaction there, so these break
    (or, worse, leak to another client) outside a transaction: ``SET`` (use
    ``SET LOCAL`` inside the transaction), ``LISTEN``/``NOTIFY`` listeners,
    session advisory locks (``pg_advisory_lock``; ``pg_advisory_xact_lock``
    is fine), ``WITH HOLD`` cursors, temporary tables kept past a commit and
    ``PREPARE``/``DEALLOCATE`` in SQL.
    """
    import psycopg

    if "prepare_threshold" in kwargs and kwargs["prepare_threshold"] is not None:
        raise ValueError(
            "psycopg_pgbouncer_connect turns prepared statements off; got "
            f"prepare_threshold={kwargs['prepare_threshold']!r}"
        )
    kwargs["prepare_threshold"] = None
    return psycopg.connect(conninfo, **kwargs)


#: What :func:`psycopg_failover_connect` sets unless the conninfo or the
#: keyword arguments set it: connect to a primary only; give up on a host
#: after 2 s (libpq's per-host default is as long as the OS's TCP connect
#: timeout, about 130 s on Linux, far beyond a pool's ``timeout``), and on
#: unacknowledged data to a host after 2 s (``tcp_user_timeout``, in ms: a
#: host gone without a reset, a silent network). psycopg applies
#: ``connect_timeout`` to each host in turn.
FAILOVER_DEFAULTS = {
    "target_session_attrs": "read-write",
    "connect_timeout": "2",
    "tcp_user_timeout": "2000",
}

#: The most connects :func:`psycopg_failover_connect` runs at once for one
#: conninfo in one process: after a failover every connection of a pool is
#: lost at once, and each of its callers would otherwise log in together.
FAILOVER_MAX_CONNECTING = 2

_connecting_lock = threading.Lock()
_connecting: dict[str, threading.BoundedSemaphore] = {}


def _connect_gate(conninfo: str) -> threading.BoundedSemaphore:
    with _connecting_lock:
        gate = _connecting.get(conninfo)
        if gate is None:
            gate = _connecting[conninfo] = threading.BoundedSemaphore(FAILOVER_MAX_CONNECTING)
        return gate


def psycopg_failover_connect(conninfo: str = "", **kwargs: Any) -> psycopg.Connection[Any]:
    """``factory``: a connection to whichever of several servers is the primary now.

    ``conninfo`` names every server, as libpq's multi-host syntax does::

        host=db1,db2 port=5432,5432 dbname=app user=app

    (or ``postgresql://app@db1:5432,db2:5432/app``). The hosts are tried in
    order, and only a read-write server is kept (``target_session_attrs``):
    after the old primary is gone and a standby promoted, the next connect
    finds the new primary, and the probe thread of a pool whose circuit is
    open checks the role as well as liveness, since its connect is this one.
    :data:`FAILOVER_DEFAULTS` (``target_session_attrs=read-write``,
    ``connect_timeout=2``, ``tcp_user_timeout=2000``) apply unless
    ``conninfo`` or ``kwargs`` set them, so that one connect attempt takes at
    most 2 s per host: keep the pool's ``timeout`` above that times the hosts.

    Connects are paced: at most :data:`FAILOVER_MAX_CONNECTING` (2) run at
    once per ``conninfo`` in a process, the others wait for one to end (up to
    one attempt's budget, then raise ``OperationalError``), so that a pool
    whose every connection a failover closed does not log in all at once.

    The connection counts its writes (:func:`psycopg_connect`: a request
    whose connection was lost before it wrote answers 503, not 500);
    ``kwargs`` go to ``psycopg.connect`` (``autocommit=True``...). Use it with
    ``check`` :func:`psycopg_primary_check` and ``broken``
    :func:`psycopg_primary_broken`.
    """
    return _paced_connect(conninfo, FAILOVER_DEFAULTS, kwargs)


#: What :func:`psycopg_replica_connect` sets unless the conninfo or the
#: keyword arguments do: a standby if one answers, else the primary.
REPLICA_DEFAULTS = {**FAILOVER_DEFAULTS, "target_session_attrs": "prefer-standby"}


def psycopg_replica_connect(conninfo: str = "", **kwargs: Any) -> psycopg.Connection[Any]:
    """``factory``: a connection for reads, to a standby if one answers, else the primary.

    As :func:`psycopg_failover_connect` (the same multi-host ``conninfo``,
    the same timeouts and pacing), with :data:`REPLICA_DEFAULTS`:
    ``target_session_attrs=prefer-standby`` (libpq 14+), so that the hosts
    are tried for a standby first and the primary serves when none answers.
    Give ``target_session_attrs=standby`` for standbys only. For the pool a
    request's reads go to (``tools.poodle.read_pool``); use it with
    :func:`psycopg_check` and :func:`psycopg_broken`, not the primary
    recipes, which would discard every standby connection.
    """
    return _paced_connect(conninfo, REPLICA_DEFAULTS, kwargs)


def _paced_connect(
    conninfo: str, defaults: dict[str, str], kwargs: dict[str, Any]
) -> psycopg.Connection[Any]:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(conninfo)
    options = dict(kwargs)
    for name, value in defaults.items():
        if name not in given and name not in options:
            options[name] = value
    hosts = max(1, len(str(given.get("host", options.get("host", ""))).split(",")))
    timeout = options.get("connect_timeout", given.get("connect_timeout"))
    budget = hosts * max(2.0, float(timeout if timeout is not None else 2))
    # One gate per conninfo and role sought: a read pool does not queue
    # behind the primary's reconnects.
    role = options.get("target_session_attrs", given.get("target_session_attrs", ""))
    gate = _connect_gate(f"{conninfo}\0{role}")
    if not gate.acquire(timeout=budget):
        raise psycopg.OperationalError(
            f"{FAILOVER_MAX_CONNECTING} connects to {conninfo!r} still under way after "
            f"{budget:g} s"
        )
    try:
        return psycopg_connect(conninfo, **options)
    finally:
        gate.release()


def _in_hot_standby(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server said it is a standby (read-only), as PostgreSQL 14+
    reports to the client at start and on promotion (``in_hot_standby``): no
    round trip. None (a server before 14, or PgBouncer) is not known: False."""
    return conn.info.parameter_status("in_hot_standby") == "on"


def psycopg_primary_check(conn: psycopg.Connection[Any]) -> None:
    """``check``: :func:`psycopg_check` (one round trip), then raise if the
    server says it is a standby now (``in_hot_standby``, which the round trip
    brought up to date: PostgreSQL 14+; older servers and PgBouncer do not
    report it, and then only liveness is checked)."""
    psycopg_check(conn)
    if _in_hot_standby(conn):
        raise RuntimeError("the server is a standby (in_hot_standby=on): not the primary")


def psycopg_primary_broken(conn: psycopg.Connection[Any], exc: Optional[BaseException]) -> bool:
    """``broken``: :func:`psycopg_broken`, and discard a connection whose
    server says it is a standby (``in_hot_standby``: read without a round
    trip; not known, so not broken, on servers before 14 and through
    PgBouncer). For a pool that must reach the primary
    (:func:`psycopg_failover_connect`): a connection found broken moves the
    pool's epoch, so every other one is checked before it is lent again. Not
    for a pool of read-only connections to a standby, which this would
    discard every time."""
    return psycopg_broken(conn, exc) or (not conn.closed and _in_hot_standby(conn))


def psycopg_set_deadline(
    conn: psycopg.Connection[Any], seconds: float
) -> Optional[Callable[[], None]]:
    """``tools.poodle.deadline_hook``: end any statement of the request that
    runs past ``seconds`` (what is left of its deadline), on the server.

    Sets ``statement_timeout`` (in whole milliseconds, at least 1), so that
    PostgreSQL cancels a statement still running then (``QueryCanceled``,
    SQLSTATE 57014; the connection stays usable: use ``broken``
    :func:`psycopg_broken`, which keeps it). One round trip. On a connection
    with autocommit off it is ``SET LOCAL``: it opens the request's
    transaction and ends with it (with ``tools.poodle.transaction``, the
    whole request); a handler that commits and goes on runs its later
    statements without it. With autocommit on it is a session ``SET``, and
    the returned callable (which the tool calls before the connection goes
    back) rolls back a transaction left open and runs ``RESET
    statement_timeout``: one more round trip.
    """
    from psycopg import pq

    milliseconds = str(max(1, int(seconds * 1000)))
    if not conn.autocommit:
        conn.execute("SELECT set_config('statement_timeout', %s, true)", (milliseconds,))
        return None
    conn.execute("SELECT set_config('statement_timeout', %s, false)", (milliseconds,))

    def undo() -> None:
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            conn.rollback()
        conn.execute("RESET statement_timeout")

    return undo


# -- MariaDB/MySQL: PyMySQL ---------------------------------------------------

#: The protocol command that resets a session (MySQL 5.7.3+, MariaDB 10.2.4+).
_COM_RESET_CONNECTION = 0x1F


def pymysql_check(conn: Any) -> None:
    """``check``: ``COM_PING``, one round trip; raises if the server is gone.

    It never reconnects (``reconnect=False``): the pool replaces a dead
    connection itself, and counts it.
    """
    conn.ping(reconnect=False)


def pymysql_reset(conn: Any) -> None:
    """``reset``: ``ROLLBACK``, one round trip, every time.

    It undoes uncommitted writes and releases row locks; it always asks the
    server, because PyMySQL does not track whether a transaction is open (with
    autocommit off even a ``SELECT`` opens one). It does not touch the rest of
    the session: user variables (``@x``), ``SET SESSION`` variables, temporary
    tables, ``USE``, ``SET NAMES``, ``GET_LOCK()`` locks and prepared
    statements survive into the next checkout. See :func:`pymysql_reset_session`.
    """
    conn.rollback()


def pymysql_reset_session(conn: Any) -> None:
    """``reset``: reset the whole session, then redo PyMySQL's connect-time set-up.

    Sends ``COM_RESET_CONNECTION``, which rolls back and clears user and
    session variables, temporary tables, prepared statements and locks, on the
    same connection (same connection id, no new authentication). PyMySQL has
    no public call for it, so it is sent through PyMySQL's internal
    ``_execute_command``/``_read_ok_packet``, the calls its own ``ping()`` makes
    (tested with PyMySQL 1.2 on MariaDB 10.11): should a PyMySQL
    release drop them, this raises and the pool discards the connection,
    degrading to a reconnect, never to reusing a dirty session.

    The server's reset also reverts what PyMySQL set up when it connected, so
    that is done again, as ``connect()`` does it: the configured database
    (the server keeps the one a ``USE`` chose), ``SET NAMES``, ``sql_mode``,
    ``init_command`` and the autocommit mode. About four round trips in all.
    """
    conn._execute_command(_COM_RESET_CONNECTION, b"")
    conn._read_ok_packet()
    if conn.db:
        conn.select_db(conn.db)
    conn.set_character_set(conn.charset, conn.collation)
    if conn.sql_mode is not None:
        with conn.cursor() as cursor:
            cursor.execute("SET sql_mode=%s", (conn.sql_mode,))
    if conn.init_command is not None:
        with conn.cursor() as cursor:
            cursor.execute(conn.init_command)
    if conn.autocommit_mode is not None:
        conn.autocommit(conn.autocommit_mode)


def pymysql_set_deadline(conn: Any, seconds: float) -> Callable[[], None]:
    """``tools.poodle.deadline_hook``: MariaDB ends any statement of the request
    that runs past ``seconds`` (what is left of its deadline).

    ``SET SESSION max_statement_time`` (MariaDB 10.1+, seconds, to the
    microsecond; a statement past it fails with error 1969, which PyMySQL
    raises as an ``OperationalError``, so the default ``broken`` rule
    replaces the connection). One round trip; the returned callable, which
    the tool calls before the connection goes back, sets it back to the
    server's default (one more). MySQL has no such variable
    (``max_execution_time`` covers ``SELECT`` only): there this raises, and
    the request answers 500.
    """
    with conn.cursor() as cursor:
        cursor.execute("SET SESSION max_statement_time = %s", (max(0.000001, seconds),))

    def undo() -> None:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION max_statement_time = DEFAULT")

    return undo


# -- Redis: redis-py ----------------------------------------------------------


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """``factory``: a ``redis.Redis`` for ``url`` that owns exactly one connection.

    The pooled "connection" is a ``redis.Redis`` made with
    ``single_connection_client=True``: one socket, connected here and
    answered one ``PING`` (so an outage reaches the pool's circuit breaker:
    a restarted Redis accepts connections, and its ``HELLO``, while it loads
    its dataset, and answers every other command ``-LOADING``; the ``PING``
    makes that a failed connect, a ``BusyLoadingError``, not a connection lent
    to fail at its first command), with the whole command API. A
    plain ``redis.Redis`` would be a pool inside the pool, and a request's
    ``SELECT`` or ``MULTI`` would land on whichever socket it lent. A bare
    ``redis.Connection`` has the socket but none of the commands. (A
    ``pipeline()`` still borrows a second socket from the client's own pool;
    it cleans up after itself, and it is closed with the client.)

    redis-py's own retries are turned off (in redis-py 8, ``Redis()`` retries
    a lost connection 10 times with backoff, ``from_url()`` not at all): a
    retry reconnects behind the pool's back, hides the loss from ``broken``
    and stretches every command of an outage; the pool's circuit breaker
    deals with outages.
    ``kwargs`` go to ``redis.Redis.from_url`` and override these defaults.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "single_connection_client": True,
        "retry": Retry(NoBackoff(), 0),
    }
    options.update(kwargs)
    client = redis.Redis.from_url(url, **options)
    try:
        client.ping()
    except BaseException:
        client.close()
        raise
    return client


def redis_check(conn: redis.Redis) -> None:
    """``check``: ``PING``, one round trip; raises if the server is gone."""
    conn.ping()


def redis_reset(conn: redis.Redis) -> None:
    """``reset``: undo what a request can leave on its connection, in one round trip.

    For a client made by :func:`redis_client`: raises if the connection was
    lost, has replies left unread or was closed by the server (all seen
    without a round trip), then sends ``DISCARD`` (ends a ``MULTI`` left open;
    its error when there is none is expected), ``UNWATCH`` and ``SELECT`` of
    the configured database together, and raises unless the last two answer
    OK. Not undone: ``CLIENT SETNAME``, ``CLIENT TRACKING``, ``READONLY`` and
    pub/sub subscriptions (use a separate client for pub/sub).
    """
    from redis import exceptions

    connection: Any = conn.connection  # redis-py leaves its Connection methods untyped
    if connection is None:
        raise TypeError(
            "redis_reset needs a client made with single_connection_client=True "
            "(see poodle_cherrypy.drivers.redis_client)"
        )
    # redis-py drops the socket of a connection that failed (in a block that
    # caught the error); can_read() would then reconnect behind the pool's back.
    if connection._sock is None:
        raise exceptions.ConnectionError("the connection was lost")
    if connection.can_read():
        raise exceptions.ConnectionError("the connection has unread replies")
    connection.send_packed_command(
        connection.pack_commands([("DISCARD",), ("UNWATCH",), ("SELECT", connection.db)]),
        check_health=False,
    )
    with contextlib.suppress(exceptions.ResponseError):  # "DISCARD without MULTI", as usual
        connection.read_response()
    for command in ("UNWATCH", "SELECT"):
        reply = connection.read_response()
        if reply not in (b"OK", "OK"):
            raise exceptions.ResponseError(f"unexpected reply to {command} in reset: {reply!r}")
