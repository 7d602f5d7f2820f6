"""The pool core: a bounded, fair, thread-safe pool of factory-made connections.

Nothing here imports CherryPy: the pool serves any connection a factory makes
(DB-API, Redis, sockets, HTTP sessions).

How it stays correct and fast:

- One plain ``threading.Lock`` guards the bookkeeping, and it is held only for
  a few list and counter operations: never while the ``with`` body, ``factory``,
  ``check``, ``reset`` or ``dispose`` run, and never while logging (handlers are
  user code too).
- ``size`` counts slots: connections that are idle, in use, or being opened
  (``pending``). A slot is reserved under the lock *before* the factory runs, so
  the bound holds however many threads connect at once.
- Waiters queue first come, first served. A returning connection (or a freed
  slot) is handed straight to the longest waiter, so a thread arriving later
  can never barge in ahead of it.
- A thread's nested ``get()`` yields the connection it already holds.
- ``os.register_at_fork`` resets every pool in a child process, dropping the
  parent's connections without closing them, at no cost on the hot path.
- Timing costs one clock reading per checkout and one per return: a checkout
  served at once from the idle stack records a wait of 0, and the histograms
  are plain counters bumped under the lock the pool takes anyway.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
import random
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Optional, TypeVar, Union

from .errors import PoolClosed, PoolTimeout, PoolUnavailable, TooManyWaiters
from .stats import BUCKET_BOUNDS, Histogram, PoolStats

__all__ = ["Lease", "Pool", "is_broken"]

CT = TypeVar("CT")

logger = logging.getLogger("poodle_cherrypy")

_monotonic = time.monotonic
_bucket = bisect.bisect_left
_FIRST_BOUND = BUCKET_BOUNDS[0]
_names = itertools.count(1)

#: Seconds of history the "recent" figures of a PoolTimeout message cover at
#: least (up to twice as much: see Pool._mark_recent).
RECENT_SECONDS = 60.0

#: A timing listener: called as ``listener(metric, seconds)``.
TimingListener = Callable[[str, float], object]

#: Exception class names (anywhere in the MRO) that mean "this connection is
#: gone": DB-API's OperationalError and InterfaceError, and the
#: ConnectionError/TimeoutError of drivers that do not derive them from OSError
#: (redis-py).
_BROKEN_EXCEPTION_NAMES = frozenset(
    {"OperationalError", "InterfaceError", "ConnectionError", "TimeoutError"}
)


def _reports_closed(conn: object) -> bool:
    closed = getattr(conn, "closed", False)
    # psycopg 3 has a bool, psycopg2 an int; a method named closed says nothing.
    return not callable(closed) and bool(closed)


def is_broken(conn: object, exc: Optional[BaseException]) -> bool:
    """The default rule for "this connection must not be reused".

    Called as ``broken(conn, exc)`` when a ``with pool.get()`` block exits,
    ``exc`` being the exception the block raised, or None. True when ``exc`` is
    an ``OSError`` (``ConnectionError``, socket errors), or has a class named
    ``OperationalError``, ``InterfaceError``, ``ConnectionError`` or
    ``TimeoutError`` in its MRO (DB-API drivers, redis-py); or when the
    connection has a ``closed`` attribute that is true (psycopg, psycopg2).
    Pass ``broken=`` to :class:`Pool` to use another rule; it may call this one.
    """
    if exc is not None:
        if isinstance(exc, OSError):
            return True
        for cls in type(exc).__mro__:
            if cls.__name__ in _BROKEN_EXCEPTION_NAMES:
                return True
    return _reports_closed(conn)


class _Conn:
    """A pooled connection and what the pool knows about it."""

    __slots__ = (
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


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: What a waiter may be handed instead of a connection.
_CREATE = _Sentinel("CREATE")  # a free slot: open a connection in it yourself
_CLOSED = _Sentinel("CLOSED")  # the pool closed while you waited


class _Waiter:
    __slots__ = ("lock", "result", "since")

    def __init__(self, since: float) -> None:
        self.since = since  # when its get() began: the start of its wait
        # Acquired now, released by whoever serves this waiter: the cheapest
        # one-shot wake-up the threading module has.
        self.lock = threading.Lock()
        self.lock.acquire()
        self.result: Union[_Conn, _Sentinel, None] = None


class _ThreadState:
    """What one thread holds from one pool: the connection and the nesting depth."""

    __slots__ = ("depth", "doomed", "rec")

    def __init__(self) -> None:
        self.rec: Optional[_Conn] = None
        self.depth = 0
        self.doomed = False


class _Local(threading.local):
    def __init__(self) -> None:
        self.state = _ThreadState()


class Lease(Generic[CT]):
    """The context manager :meth:`Pool.get` returns.

    ``with pool.get() as conn:`` checks a connection out on entry and gives it
    back on exit, whatever happens in the block. Entering it in a thread that
    already holds a connection from the same pool yields that connection; it
    goes back when the outermost block exits. A lease is entered once; it may
    be exited from another thread (an integration that hands work over).
    """

    __slots__ = ("_pool", "_state", "_timeout")

    def __init__(self, pool: Pool[CT], timeout: Optional[float]) -> None:
        self._pool = pool
        self._timeout = timeout
        self._state: Optional[_ThreadState] = None

    def __enter__(self) -> CT:
        if self._state is not None:
            raise RuntimeError("this lease is already entered: call pool.get() again")
        pool = self._pool
        state: _ThreadState = pool._local.state
        rec = state.rec
        if rec is None:
            # Pool._acquire does it all; the commonest case is inlined here
            # because a method call costs as much as the rest of the checkout.
            with pool._lock:
                if pool._idle and pool._plain_checkout and not pool._closed:
                    rec = pool._idle.pop()
                    rec.uses += 1
                    rec.checked_out = _monotonic()
                    pool._in_use += 1
                    # No wait: its 0 s is counted in the first bucket by
                    # Pool._wait_time.
                    pool._checkouts += 1
            if rec is None:
                rec = pool._acquire(self._timeout, _monotonic())
            state.rec = rec
            state.doomed = False
        state.depth += 1
        self._state = state
        conn: CT = rec.conn
        return conn

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        state = self._state
        if state is None:
            raise RuntimeError("this lease was not entered")
        self._state = None
        rec: _Conn = state.rec  # type: ignore[assignment]
        pool = self._pool
        if exc is not None and not state.doomed:
            state.doomed = pool._is_broken(rec, exc)
        state.depth -= 1
        if state.depth:
            return
        state.rec = None
        if (
            pool._plain_return
            and not state.doomed
            and not (rec.has_closed and _reports_closed(rec.conn))
        ):
            # Pool._release does it all; the commonest case is inlined here.
            # A closed or forked pool has a new epoch, so its connections
            # never take this path.
            used = _monotonic() - rec.checked_out
            with pool._lock:
                if rec.epoch == pool._epoch and not pool._waiters and pool._size <= pool._max_size:
                    pool._in_use -= 1
                    # A use in the first bucket is counted there by Pool._use_time.
                    if used > _FIRST_BOUND:
                        pool._use_counts[_bucket(BUCKET_BOUNDS, used)] += 1
                    pool._use_sum += used
                    pool._idle.append(rec)
                    return
            pool._release(rec, False, rec.checked_out + used)
            return
        pool._release(rec, state.doomed)


def _probe_loop(ref: weakref.ReferenceType[Pool[Any]]) -> None:
    """The probe thread of a pool whose circuit is open. It holds the pool
    only weakly between steps, so that a pool dropped without ``close()``
    is collected and its thread ends."""
    while True:
        pool = ref()
        if pool is None:
            return
        delay = pool._probe_once()
        del pool
        if delay is None:
            return
        if delay > 0:
            time.sleep(delay)


def _check_size(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def _check_seconds(name: str, value: object, *, allow_zero: bool, optional: bool) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return float(value)


def _check_callable(name: str, value: object) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {value!r}")
    return value


class Pool(Generic[CT]):
    """A bounded, thread-safe pool of connections made by ``factory``.

    ``factory(*args, **kwargs)`` opens a connection. Constructing a pool never
    connects: connections are opened on demand by :meth:`get`, or ahead of time
    by :meth:`open` and :meth:`maintain` (up to ``min_size``). ``args`` and
    ``kwargs`` may each be a callable taking no argument, called at every
    connect for the arguments of that connect (a password or token that
    rotates); what it raises counts as a failed connect.

    Options (keyword-only; seconds are floats):

    - ``name``: used in log lines, errors and stats (default ``"pool-N"``).
    - ``min_size`` (0): connections :meth:`open` and :meth:`maintain` keep open.
    - ``max_size`` (10): the most connections open at once.
    - ``timeout`` (30.0): how long :meth:`get` waits, unless it is given one.
    - ``max_waiting`` (0, no limit): with N > 0, the caller that would be
      waiter N + 1 gets :class:`TooManyWaiters` at once.
    - ``check(conn)``: runs when an idle connection is checked out; if it
      raises or returns False the connection is disposed of and the caller
      gets another one.
    - ``check_after`` (0.5): ``check`` is skipped for a connection last
      returned less than this many seconds ago (0: check every time), so a
      busy pool pays no round trip and an idle one pays it only after idling.
    - ``keepalive``: :meth:`maintain` runs ``check`` on connections idle
      longer than this many seconds (disposing of those that fail), so a
      server restart in a quiet period is found before any caller meets it.
    - ``reset(conn)``: runs when a connection comes back (say, a rollback); if
      it raises, the connection is disposed of.
    - ``dispose(conn)``: closes a connection the pool drops (default:
      ``conn.close()`` where there is one). Its errors are logged, not raised.
    - ``broken(conn, exc)``: whether a connection whose block raised ``exc``
      (None if it raised nothing) must be disposed of rather than reused; the
      default is :func:`is_broken`. When a connection is found broken (by
      this rule, a failing ``reset`` or ``check``), every connection opened
      before it is suspect: with a ``check``, an idle one is checked before it
      is handed out, whatever ``check_after`` says; without one, idle ones are
      disposed of at once. Busy ones are disposed of when they come back. One
      dead connection found means the others are tested, not met by callers
      one by one.
    - ``max_lifetime``: seconds after which a connection is retired.
    - ``max_idle``: :meth:`maintain` closes connections idle for longer (down
      to ``min_size``).
    - ``max_uses``: checkouts after which a connection is retired.
    - ``leak_timeout``: :meth:`maintain` logs a WARNING, once, with the stack
      of the checkout, for a connection held longer. The stack is captured only
      when this is set.
    - ``fail_fast_after`` (5; 0 turns it off): after this many consecutive
      factory failures the pool stops calling the factory and raises
      :class:`PoolUnavailable` at once (chained to the last factory error)
      where it would have connected, so an outage costs callers nothing.
      Idle connections are still handed out meanwhile. Only a probe's
      failure counts while the circuit is open: connects that were already
      under way when it opened are the same outage, not more of it.
    - ``probe_interval`` (0.5): while the circuit is open, a thread of the
      pool's own tries the factory every ``probe_interval`` seconds (+-25%
      jitter) and callers all fail fast; a successful probe's connection
      joins the pool and closes the circuit, so service is back within about
      ``probe_interval`` of the server's return, whatever runs
      :meth:`maintain`. With None there is no such thread: after
      ``retry_delay`` (0.5) seconds one caller (or :meth:`maintain`) tries
      again; each failed try doubles the delay, up to ``max_retry_delay``
      (5.0), with +-25% jitter; the first success closes the circuit.

    ``with Pool(...) as pool:`` opens the pool and closes it at the end.
    """

    def __init__(
        self,
        factory: Callable[..., CT],
        args: Union[Sequence[Any], Callable[[], Sequence[Any]]] = (),
        kwargs: Union[Mapping[str, Any], Callable[[], Mapping[str, Any]], None] = None,
        *,
        name: Optional[str] = None,
        min_size: int = 0,
        max_size: int = 10,
        timeout: float = 30.0,
        max_waiting: int = 0,
        check: Optional[Callable[[CT], Any]] = None,
        check_after: float = 0.5,
        keepalive: Optional[float] = None,
        reset: Optional[Callable[[CT], Any]] = None,
        dispose: Optional[Callable[[CT], Any]] = None,
        broken: Optional[Callable[[CT, Optional[BaseException]], bool]] = None,
        max_lifetime: Optional[float] = None,
        max_idle: Optional[float] = None,
        max_uses: Optional[int] = None,
        leak_timeout: Optional[float] = None,
        fail_fast_after: int = 5,
        retry_delay: float = 0.5,
        max_retry_delay: float = 5.0,
        probe_interval: Optional[float] = 0.5,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {factory!r}")
        if callable(args):
            pass  # called at each connect, its result checked then
        elif isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise TypeError(
                f"args must be a tuple of positional arguments (or a callable returning "
                f"one), got {args!r}"
                + (f"; did you mean args=({args!r},)?" if isinstance(args, (str, bytes)) else "")
            )
        if kwargs is not None and not callable(kwargs) and not isinstance(kwargs, Mapping):
            raise TypeError(
                f"kwargs must be a mapping of keyword arguments (or a callable returning "
                f"one), got {kwargs!r}"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        min_size = _check_size("min_size", min_size, 0)
        max_size = _check_size("max_size", max_size, 1)
        if min_size > max_size:
            raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
        if max_uses is not None:
            max_uses = _check_size("max_uses", max_uses, 1)

        self._factory = factory
        self._args: Any = args if callable(args) else tuple(args)
        self._kwargs: Any = kwargs if callable(kwargs) else dict(kwargs or {})
        self._name = name if name is not None else f"pool-{next(_names)}"
        self._min_size = min_size
        self._max_size = max_size
        self._timeout: float = _check_seconds("timeout", timeout, allow_zero=True, optional=False)
        self._max_waiting = _check_size("max_waiting", max_waiting, 0)
        self._check = _check_callable("check", check)
        self._check_after: float = _check_seconds(
            "check_after", check_after, allow_zero=True, optional=False
        )
        self._keepalive: Optional[float] = _check_seconds(
            "keepalive", keepalive, allow_zero=False, optional=True
        )
        self._probe_interval: Optional[float] = _check_seconds(
            "probe_interval", probe_interval, allow_zero=False, optional=True
        )
        self._reset = _check_callable("reset", reset)
        self._dispose_fn = _check_callable("dispose", dispose)
        self._broken = _check_callable("broken", broken)
        self._max_lifetime: Optional[float] = _check_seconds(
            "max_lifetime", max_lifetime, allow_zero=False, optional=True
        )
        self._max_idle: Optional[float] = _check_seconds(
            "max_idle", max_idle, allow_zero=False, optional=True
        )
        self._max_uses = max_uses
        self._leak_timeout: Optional[float] = _check_seconds(
            "leak_timeout", leak_timeout, allow_zero=False, optional=True
        )
        self._fail_fast_after = _check_size("fail_fast_after", fail_fast_after, 0)
        self._retry_delay: float = _check_seconds(
            "retry_delay", retry_delay, allow_zero=False, optional=False
        )
        self._max_retry_delay: float = _check_seconds(
            "max_retry_delay", max_retry_delay, allow_zero=False, optional=False
        )
        if self._max_retry_delay < self._retry_delay:
            raise ValueError(
                f"max_retry_delay ({max_retry_delay!r}) must not be less than "
                f"retry_delay ({retry_delay!r})"
            )
        # Flags read on the hot path, so that an option left unset costs nothing:
        # idle connections need vetting at checkout only with these set...
        self._vet = check is not None or max_lifetime is not None
        # ...a plain checkout is "pop the idle stack and count"...
        self._plain_checkout = not self._vet and leak_timeout is None
        self._plain_checkout_option = self._plain_checkout  # without listeners
        # ...a returning connection needs the clock only for these (check_after
        # and keepalive read the time it came back)...
        self._timed = (
            max_lifetime is not None
            or max_idle is not None
            or (check is not None and (self._check_after > 0 or keepalive is not None))
        )
        # ...and a plain return is "push it on the idle stack and count".
        self._plain_return = (
            reset is None
            and broken is None
            and not self._timed
            and max_uses is None
            and leak_timeout is None
        )
        self._plain_return_option = self._plain_return

        self._listeners: tuple[TimingListener, ...] = ()
        self._lock = threading.Lock()
        self._init_state()
        self._closed = False
        _live_pools.add(self)

    def _init_state(self) -> None:
        """The mutable state, fresh: at construction and in a forked child."""
        self._pid = os.getpid()
        self._local = _Local()
        self._idle: list[_Conn] = []  # a stack: the most recently returned last
        self._waiters: deque[_Waiter] = deque()
        self._lent: set[_Conn] = set()  # only filled when leak_timeout is set
        self._size = 0
        self._pending = 0
        self._in_use = 0
        self._epoch = getattr(self, "_epoch", 0) + 1
        # Connections of an epoch below this one were retired by recycle():
        # no check vouches for them (a check vouches for a suspect only).
        self._retired_below = self._epoch
        self._drained: Optional[threading.Event] = None
        self._filling = 0  # slots reserved by fills (to min_size), not yet filled or freed
        self._filled = threading.Condition(self._lock)  # notified when _filling drops to 0
        self._created = 0
        self._discarded = 0
        self._checkouts = 0
        self._timeouts = 0
        self._rejected = 0
        self._errors = 0
        self._leaks = 0
        # The circuit breaker (see _connect): open while _retry_at is set.
        self._failures = 0
        self._retry_at: Optional[float] = None
        self._probing = False
        self._last_error: Optional[BaseException] = None
        self._unavailable = 0
        self._prober = False  # a probe thread runs (probe_interval set, circuit open)
        # Histograms: per-bucket counts over BUCKET_BOUNDS (one more than the
        # bounds: the last is "longer") and the sum of the values, in seconds.
        # The hot paths in Lease leave some first-bucket counts implicit: see
        # _wait_time and _use_time, the only readers.
        buckets = len(BUCKET_BOUNDS) + 1
        self._wait_counts = [0] * buckets
        self._wait_sum = 0.0
        self._use_counts = [0] * buckets
        self._use_sum = 0.0
        self._create_counts = [0] * buckets
        self._create_sum = 0.0
        # (when, wait_time, use_time) snapshots, the older first: what the
        # recent figures of a PoolTimeout message are counted from.
        empty = Histogram.of_counts(self._wait_counts, 0.0)
        self._marks: deque[tuple[float, Histogram, Histogram]] = deque(
            [(_monotonic(), empty, empty)], maxlen=2
        )

    # -- public API ----------------------------------------------------------

    @property
    def name(self) -> str:
        """The pool's name, as in its log lines, errors and stats."""
        return self._name

    @property
    def closed(self) -> bool:
        """True after :meth:`close`, until :meth:`open` reopens the pool."""
        return self._closed

    def get(self, timeout: Optional[float] = None) -> Lease[CT]:
        """A context manager that checks a connection out and always gives it back.

        ``with pool.get() as conn:`` takes the most recently returned idle
        connection, else opens one while fewer than ``max_size`` are open, else
        waits in line, up to ``timeout`` seconds (default: the pool's), then
        raises :class:`PoolTimeout`. Raises :class:`TooManyWaiters` at once
        when ``max_waiting`` callers already wait, :class:`PoolClosed` when the
        pool is closed, and whatever the factory raised if opening a
        connection failed.

        On exit the connection is ``reset`` and goes back, or, if the block's
        exception marks it broken (see ``broken``) or ``reset`` fails, it is
        disposed of. The block's own exception always propagates unchanged.
        Nested in a thread that already holds a connection from this pool, it
        yields that same connection.
        """
        if timeout is not None:
            timeout = _check_seconds("timeout", timeout, allow_zero=True, optional=False)
        return Lease(self, timeout)

    def add_timing_listener(self, listener: TimingListener) -> None:
        """Call ``listener(metric, seconds)`` with every value the pool's
        histograms record, ``metric`` being ``"wait_time"``, ``"use_time"`` or
        ``"create_time"`` (the :class:`PoolStats` fields).

        It runs in the thread that checked out, returned or connected, after
        the pool's lock is released, so it must be quick and thread-safe (an
        exporter's ``Histogram.record``). If it raises, the error is logged and
        the listener removed. Adding one already added does nothing.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        with self._lock:
            if listener not in self._listeners:
                self._listeners = (*self._listeners, listener)
            self._set_plain_paths()

    def remove_timing_listener(self, listener: TimingListener) -> None:
        """Stop calling a listener added by :meth:`add_timing_listener`; one
        that is not there is ignored."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x != listener)
            self._set_plain_paths()

    def _set_plain_paths(self) -> None:
        # Under the lock: the inlined paths in Lease call no listener, so a
        # pool with listeners takes the full ones.
        self._plain_checkout = self._plain_checkout_option and not self._listeners
        self._plain_return = self._plain_return_option and not self._listeners

    def open(self, wait: bool = False, *, fill: bool = True) -> None:
        """Open the pool and fill it to ``min_size``; reopen it if it was closed.

        With ``fill=False`` it is only opened (usable: connections are opened
        on demand), to be filled by a later ``open()`` or :meth:`maintain`.

        With ``wait=False`` the connections are opened by a background thread
        (failures are logged). With ``wait=True`` they are opened before this
        returns, those a fill already running is opening included (waiting
        for it at most the pool's ``timeout``, then raising
        :class:`PoolTimeout`), and the first factory error is raised, after
        which the pool is still open and usable.
        """
        with self._lock:
            reopened = self._closed
            self._closed = False
            need = self._reserve_to_min() if fill else 0
        if reopened:
            logger.info("pool %r: reopened", self._name)
        if not fill:
            return
        if wait:
            self._fill(need, raise_errors=True)
            self._await_fills()
            with self._lock:
                need = self._reserve_to_min()  # what a failed fill left unfilled
            self._fill(need, raise_errors=True)
        else:
            self._fill_in_background(need)

    def _await_fills(self) -> None:
        """Wait (up to the pool's timeout) until no fill has a slot reserved."""
        timeout = min(self._timeout, threading.TIMEOUT_MAX)
        with self._lock:
            done = self._filled.wait_for(lambda: not self._filling or self._closed, timeout)
            filling = self._filling
        if not done:
            raise PoolTimeout(
                f"pool {self._name!r}: open(wait=True): {filling} connection(s) still being "
                f"opened by another fill after {timeout:g} s"
            )

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool; calling it again does nothing.

        Later :meth:`get` calls, and callers waiting now, get
        :class:`PoolClosed`. A fill to ``min_size`` running in the background
        ends at its current connect. Idle connections are disposed of at once, and
        checked-out ones when they come back; ``close`` waits up to ``timeout``
        seconds for them and logs a warning about any still out.
        """
        timeout = _check_seconds("timeout", timeout, allow_zero=True, optional=False)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._epoch += 1
            idle, self._idle = self._idle, []
            self._size -= len(idle)
            self._discarded += len(idle)
            waiters = list(self._waiters)
            self._waiters.clear()
            for waiter in waiters:
                waiter.result = _CLOSED
            in_use = self._in_use
            drained = self._drained = threading.Event() if in_use else None
        for waiter in waiters:
            waiter.lock.release()
        for rec in idle:
            self._dispose(rec)
        if drained is not None and not drained.wait(timeout):
            with self._lock:
                in_use = self._in_use
            if in_use:
                logger.warning(
                    "pool %r: closed with %d connection(s) still in use after %g s; "
                    "they will be closed when they come back",
                    self._name,
                    in_use,
                    timeout,
                )
        logger.info("pool %r: closed", self._name)

    def recycle(self) -> None:
        """Retire every connection open now, without closing the pool.

        Idle connections are disposed of at once and checked-out ones when
        they come back; callers meanwhile get fresh connections, and
        ``min_size`` is refilled in the background. Use it after a database
        failover or a credentials change; the CherryPy plugin calls it on
        ``graceful`` (SIGUSR1). On a closed pool it does nothing.
        """
        with self._lock:
            if self._closed:
                return
            # Connections of an older epoch are disposed of when they come back.
            self._epoch += 1
            self._retired_below = self._epoch
            idle, self._idle = self._idle, []
            self._size -= len(idle)
            self._discarded += len(idle)
            need = self._reserve_to_min()
        for rec in idle:
            self._dispose(rec)
        logger.info("pool %r: recycled %d idle connection(s)", self._name, len(idle))
        self._fill_in_background(need)

    def maintain(self) -> None:
        """Expire, refill and report leaks; safe from any thread, at any time.

        Disposes of idle connections past ``max_lifetime``, and of those idle
        longer than ``max_idle`` while more than ``min_size`` are open; runs
        ``check`` on idle connections idle longer than ``keepalive`` and on
        suspect ones (see ``broken``), disposing of those that fail; opens
        connections up to ``min_size``; logs a WARNING once for each
        connection held longer than ``leak_timeout``. Factory errors are
        logged, not raised. On a closed pool it does nothing.
        """
        now = _monotonic()
        with self._lock:
            if self._closed:
                return
            self._mark_recent(now)
            expired: list[_Conn] = []
            keep: list[_Conn] = []
            probe: list[_Conn] = []
            open_count = self._size
            check = self._check is not None
            keepalive = self._keepalive
            for rec in self._idle:  # oldest first
                too_old = self._max_lifetime is not None and now - rec.created >= self._max_lifetime
                too_idle = (
                    self._max_idle is not None
                    and now - rec.last_used >= self._max_idle
                    and open_count > self._min_size
                )
                if too_old or too_idle:
                    expired.append(rec)
                    open_count -= 1
                elif check and (
                    rec.epoch != self._epoch
                    or (keepalive is not None and now - rec.last_used >= keepalive)
                ):
                    probe.append(rec)
                else:
                    keep.append(rec)
            if expired or probe:
                self._idle = keep
                self._size -= len(expired)
                self._discarded += len(expired)
                self._pending += len(probe)  # out to be checked, their slots kept
            leaks: list[tuple[_Conn, float]] = []
            if self._leak_timeout is not None:
                for rec in self._lent:
                    held = now - rec.checked_out
                    if not rec.leak_reported and held >= self._leak_timeout:
                        rec.leak_reported = True
                        leaks.append((rec, held))
                self._leaks += len(leaks)
        for rec in expired:
            self._dispose(rec)
        for index, rec in enumerate(probe):
            try:
                reason = self._run_check(rec)
            except BaseException:
                for other in probe[index + 1:]:  # interrupted: drop the unchecked rest
                    with self._lock:
                        self._discarded += 1
                    self._dispose(other)
                    self._give_up_slot()
                raise
            self._after_keepalive_check(rec, reason)
        for rec, held in leaks:
            stack = "".join(rec.stack.format()) if rec.stack is not None else ""
            logger.warning(
                "pool %r: connection %r checked out %.1f s ago and not returned "
                "(leak_timeout=%g s); checked out at:\n%s",
                self._name,
                rec.conn,
                held,
                self._leak_timeout,
                stack,
            )
        with self._lock:  # after the checks: what they dropped is refilled too
            need = self._reserve_to_min()
        self._fill(need, raise_errors=False)

    def resize(self, min_size: Optional[int] = None, max_size: Optional[int] = None) -> None:
        """Change ``min_size`` and/or ``max_size`` while the pool is in use.

        Growing ``max_size`` lets waiting callers through at once. Shrinking
        it disposes of excess idle connections now and of excess busy ones
        when they come back. A larger ``min_size`` is filled by the next
        :meth:`maintain` or :meth:`open`.
        """
        with self._lock:
            new_min = self._min_size if min_size is None else _check_size("min_size", min_size, 0)
            new_max = self._max_size if max_size is None else _check_size("max_size", max_size, 1)
            if new_min > new_max:
                raise ValueError(f"min_size ({new_min}) must not exceed max_size ({new_max})")
            self._min_size = new_min
            self._max_size = new_max
            excess: list[_Conn] = []
            while self._size > new_max and self._idle:
                excess.append(self._idle.pop(0))  # the oldest first
                self._size -= 1
            self._discarded += len(excess)
            wake: list[_Waiter] = []
            while self._waiters and self._size < new_max and not self._closed:
                self._size += 1
                wake.append(self._serve_slot())
        for rec in excess:
            self._dispose(rec)
        for waiter in wake:
            waiter.lock.release()

    def is_broken(self, conn: CT, exc: Optional[BaseException]) -> bool:
        """Whether the pool's ``broken`` rule judges ``conn`` lost after ``exc``.

        This is what the pool decides when the connection comes back with that
        exception; a rule that raises counts as True (and is logged).
        """
        try:
            if self._broken is not None:
                return bool(self._broken(conn, exc))
            return is_broken(conn, exc)
        except Exception:
            logger.warning(
                "pool %r: the broken rule raised; discarding %r", self._name, conn,
                exc_info=True,
            )
            return True

    def stats(self) -> PoolStats:
        """A consistent snapshot of the pool's gauges and counters."""
        with self._lock:
            return PoolStats(
                name=self._name,
                closed=self._closed,
                min_size=self._min_size,
                max_size=self._max_size,
                size=self._size,
                idle=len(self._idle),
                in_use=self._in_use,
                pending=self._pending,
                waiting=len(self._waiters),
                created=self._created,
                discarded=self._discarded,
                checkouts=self._checkouts,
                timeouts=self._timeouts,
                rejected=self._rejected,
                errors=self._errors,
                leaks=self._leaks,
                unavailable=self._unavailable,
                connect_failures=self._failures,
                circuit=(
                    "closed"
                    if self._retry_at is None
                    else "half-open" if self._probing else "open"
                ),
                wait_time=self._wait_time(),
                use_time=self._use_time(),
                create_time=Histogram.of_counts(self._create_counts, self._create_sum),
            )

    def __enter__(self) -> Pool[CT]:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._name!r} size={self._size}/{self._max_size}"
            f" idle={len(self._idle)} in_use={self._in_use}"
            f" waiting={len(self._waiters)}{' closed' if self._closed else ''}>"
        )

    # -- checkout ------------------------------------------------------------

    def _acquire(self, timeout: Optional[float], since: float) -> _Conn:
        """Check a connection out for the calling thread (lent and counted);
        ``since`` is when its ``get()`` began."""
        vet = False
        waiter = None
        with self._lock:
            if self._closed:
                raise PoolClosed(f"pool {self._name!r} is closed")
            if self._idle:
                rec: Union[_Conn, _Sentinel, None] = self._idle.pop()
                if self._vet and self._needs_vetting(rec, since):  # type: ignore[arg-type]
                    vet = True
                    self._pending += 1
                else:
                    self._lend(rec, since, since)  # type: ignore[arg-type]
            elif self._size < self._max_size:
                rec = self._hand_slot_to_self()
            elif self._max_waiting and len(self._waiters) >= self._max_waiting:
                self._rejected += 1
                raise TooManyWaiters(
                    f"pool {self._name!r}: {len(self._waiters)} callers already waiting "
                    f"(max_waiting={self._max_waiting}, max_size={self._max_size})"
                )
            else:
                waiter = _Waiter(since)
                self._waiters.append(waiter)
        if waiter is not None:
            rec = self._wait(waiter, self._timeout if timeout is None else timeout)
        if rec is _CREATE:
            rec = self._open_lent(since)
        elif vet:
            rec = self._vetted(rec, since)  # type: ignore[arg-type]
        if self._leak_timeout is not None:
            self._track(rec)  # type: ignore[arg-type]
        if self._listeners:
            # The very difference _lend recorded.
            self._notify("wait_time", rec.checked_out - since)  # type: ignore[union-attr]
        return rec  # type: ignore[return-value]

    def _lend(self, rec: _Conn, since: float, now: float) -> None:
        # Under the lock: lend ``rec`` at ``now`` to a get() begun at ``since``.
        rec.uses += 1
        rec.checked_out = now
        self._in_use += 1
        self._checkouts += 1
        waited = now - since
        self._wait_counts[_bucket(BUCKET_BOUNDS, waited)] += 1
        self._wait_sum += waited

    def _notify(self, metric: str, seconds: float) -> None:
        """Pass a recorded value to the timing listeners (without the lock)."""
        for listener in self._listeners:
            try:
                listener(metric, seconds)
            except Exception:
                self.remove_timing_listener(listener)
                logger.warning(
                    "pool %r: timing listener %r raised; removed", self._name, listener,
                    exc_info=True,
                )

    def _wait_time(self) -> Histogram:
        # Under the lock. The checkouts Lease inlined are not in the counts:
        # they waited 0 s, in the first bucket.
        counts = list(self._wait_counts)
        counts[0] += self._checkouts - sum(counts)
        return Histogram.of_counts(counts, self._wait_sum)

    def _use_time(self) -> Histogram:
        # Under the lock. Every checkout not in use now was returned, and the
        # returns Lease inlined that fell in the first bucket are not in the
        # counts.
        counts = list(self._use_counts)
        counts[0] += self._checkouts - self._in_use - sum(counts)
        return Histogram.of_counts(counts, self._use_sum)

    def _mark_recent(self, now: float) -> None:
        # Under the lock: start a new stretch of "recent" history when the
        # newest mark is RECENT_SECONDS old, so that the older mark, which the
        # recent figures count from, is 1 to 2 RECENT_SECONDS old when
        # maintain() runs regularly (the plugin runs it every 10 s).
        if now - self._marks[-1][0] >= RECENT_SECONDS:
            self._marks.append(
                (
                    now,
                    self._wait_time(),
                    self._use_time(),
                )
            )

    def _recent(self, now: float) -> str:
        """Under the lock: the recent wait p99 and mean use, for a PoolTimeout."""
        since, wait_mark, use_mark = self._marks[0]
        waits = self._wait_time().since(wait_mark)
        uses = self._use_time().since(use_mark)
        p99 = waits.quantile(0.99)
        mean = uses.mean
        wait = (
            "no checkout"
            if p99 is None
            else f"wait p99 {p99:.3g} s over {waits.count} checkout(s)"
        )
        use = (
            "no connection returned"
            if mean is None
            else f"mean use {mean:.3g} s over {uses.count} return(s)"
        )
        return f"in the last {now - since:.0f} s: {wait}, {use}"

    def _hand_slot_to_self(self) -> _Sentinel:
        # Under the lock: reserve a slot for a connection the caller will open.
        self._size += 1
        self._pending += 1
        return _CREATE

    def _serve_slot(self) -> _Waiter:
        # Under the lock: give the longest waiter a slot (already counted in
        # _size) to open a connection in.
        waiter = self._waiters.popleft()
        self._pending += 1
        waiter.result = _CREATE
        return waiter

    def _shelve(self, rec: _Conn, now: float) -> Optional[_Waiter]:
        # Under the lock: a healthy connection goes straight to the longest
        # waiter (no barging), else on top of the idle stack. Returns the
        # waiter to wake.
        if self._waiters:
            waiter = self._waiters.popleft()
            self._lend(rec, waiter.since, now)
            waiter.result = rec
            return waiter
        rec.last_used = now
        self._idle.append(rec)
        return None

    def _wait(self, waiter: _Waiter, timeout: float) -> Union[_Conn, _Sentinel]:
        try:
            served = waiter.lock.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))
        except BaseException:
            self._abandon(waiter)
            raise
        if not served:
            with self._lock:
                if waiter.result is None:
                    self._waiters.remove(waiter)
                    self._timeouts += 1
                    waiting = len(self._waiters)
                    in_use = self._in_use
                    now = _monotonic()
                    self._mark_recent(now)
                    recent = self._recent(now)
                    served = False
                else:
                    served = True  # served just as the wait ran out
            if not served:
                raise PoolTimeout(
                    f"pool {self._name!r}: no connection available within {timeout:g} s "
                    f"(max_size={self._max_size}, in_use={in_use}, "
                    f"{waiting} other caller(s) waiting); {recent}"
                )
        result = waiter.result
        assert result is not None
        if result is _CLOSED:
            raise PoolClosed(f"pool {self._name!r} was closed while waiting for a connection")
        return result

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter was interrupted (KeyboardInterrupt...): leave the line, give back."""
        with self._lock:
            result = waiter.result
            if result is None:
                self._waiters.remove(waiter)
                return
        if isinstance(result, _Conn):
            self._release(result, False)
        elif result is _CREATE:
            self._give_up_slot()

    def _open_lent(self, since: float) -> _Conn:
        """Open a connection in a slot this thread reserved, and lend it to the
        get() begun at ``since``."""
        epoch = self._epoch  # a recycle() during the factory call retires the connection
        try:
            rec = self._connect()
        except BaseException:
            self._give_up_slot()
            raise
        with self._lock:
            self._pending -= 1
            if not self._closed:
                # Retired, it is lent once and disposed of when it comes back.
                rec.epoch = self._epoch if epoch >= self._retired_below else epoch
                self._lend(rec, since, rec.created)
                return rec
            self._discarded += 1
            waiter = self._free_slot()
        assert waiter is None  # a closed pool has no waiters
        self._dispose(rec)
        raise PoolClosed(f"pool {self._name!r} was closed while opening a connection")

    def _connect(self) -> _Conn:
        """Call the factory (without the lock), through the circuit breaker.

        After ``fail_fast_after`` consecutive failures the circuit opens:
        callers get :class:`PoolUnavailable` at once instead of each paying
        for a connect that is bound to fail (or each waiting out the full
        timeout). After a jittered delay one caller at a time probes the
        factory; the delay doubles after each failed probe, up to
        ``max_retry_delay``; the first success closes the circuit. With
        ``probe_interval`` set, the pool's probe thread does the probing and
        every caller fails fast (see :meth:`_probe_loop`).
        """
        probe = False
        with self._lock:
            retry_at = self._retry_at
            if retry_at is not None:
                now = _monotonic()
                if self._probing or self._prober or now < retry_at:
                    self._unavailable += 1
                    failures = self._failures
                    last_error = self._last_error
                    probe = False
                else:
                    self._probing = probe = True
        if retry_at is not None and not probe:
            raise PoolUnavailable(
                f"pool {self._name!r}: connecting failed {failures} times in a row; "
                f"failing fast until the next attempt in {max(0.0, retry_at - now):.2f} s "
                f"(last error: {last_error!r})"
            ) from last_error
        start = _monotonic()
        try:
            conn = self._call_factory()
        except BaseException as exc:
            self._connect_failed(exc, probe)
            raise
        return self._connected(conn, start)

    def _call_factory(self) -> CT:
        """Call the factory with the pool's arguments, the callable ones called now."""
        args = self._args() if callable(self._args) else self._args
        kwargs = self._kwargs() if callable(self._kwargs) else self._kwargs
        if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise TypeError(
                f"pool {self._name!r}: the args callable must return a sequence, got {args!r}"
            )
        if not isinstance(kwargs, Mapping):
            raise TypeError(
                f"pool {self._name!r}: the kwargs callable must return a mapping, got {kwargs!r}"
            )
        return self._factory(*args, **kwargs)

    def _connected(self, conn: CT, start: float) -> _Conn:
        """A factory call begun at ``start`` succeeded: wrap the connection,
        close the circuit."""
        rec = _Conn(conn, _monotonic(), self._pid)
        took = rec.created - start
        with self._lock:
            recovered = self._close_circuit(took)
        if recovered:
            logger.warning("pool %r: connecting works again; circuit closed", self._name)
        if self._listeners:
            self._notify("create_time", took)
        return rec

    def _close_circuit(self, took: float) -> bool:
        """Under the lock: a connect that took ``took`` seconds succeeded.
        Whether the circuit was open."""
        self._created += 1
        self._create_counts[_bucket(BUCKET_BOUNDS, took)] += 1
        self._create_sum += took
        recovered = self._retry_at is not None
        self._failures = 0
        self._retry_at = None
        self._probing = False
        self._last_error = None
        return recovered

    def _connect_failed(self, exc: BaseException, probe: bool) -> None:
        with self._lock:
            self._errors += 1
            if probe:
                self._probing = False
            if not isinstance(exc, Exception):
                return  # KeyboardInterrupt and the like say nothing about the server
            self._last_error = exc
            if self._retry_at is not None and not probe:
                # Under way when the circuit opened: the same outage, counted already.
                return
            self._failures += 1
            failures = self._failures
            over = failures - self._fail_fast_after
            delay: Optional[float] = None
            start_prober = False
            if self._fail_fast_after and over >= 0:
                if self._probe_interval is not None:
                    delay = self._probe_interval
                    start_prober = not self._prober
                    self._prober = True
                else:
                    delay = min(self._max_retry_delay, self._retry_delay * 2.0 ** over)
                # Jitter spreads the probes of many pools (and processes) apart.
                delay *= random.uniform(0.75, 1.25)
                self._retry_at = _monotonic() + delay
        if start_prober:
            threading.Thread(
                target=_probe_loop, args=(weakref.ref(self),), name=f"{self._name}-probe",
                daemon=True,
            ).start()
        # One line per state change; the outage's traceback once, at its start.
        if failures == 1:
            logger.warning("pool %r: connecting failed (%r)", self._name, exc, exc_info=exc)
        if delay is None:
            return
        if over == 0:
            logger.warning(
                "pool %r: connecting failed %d times in a row (%r); circuit opened: failing "
                "fast, next attempt in %.2f s",
                self._name, failures, exc, delay,
            )
        else:
            # The probe thread tries every probe_interval: its first failure and
            # every 20th after it say the outage goes on, the rest are DEBUG.
            level = logging.WARNING if (over - 1) % 20 == 0 else logging.DEBUG
            logger.log(
                level,
                "pool %r: a probe failed (%r); circuit still open, next attempt in %.2f s",
                self._name, exc, delay,
            )

    def _probe_once(self) -> Optional[float]:
        """One step of the probe thread (see :func:`_probe_loop`): try the
        factory if the next attempt is due, and put the connection made in the
        pool, which closes the circuit. The seconds to sleep before the next
        step, or None when the circuit (checked under the lock, so a circuit
        that opens again keeps its thread) or the pool is closed."""
        assert self._probe_interval is not None
        try:
            with self._lock:
                retry_at = self._retry_at
                if self._closed or retry_at is None:
                    self._prober = False
                    return None
                delay = retry_at - _monotonic()
                if delay <= 0:
                    self._probing = True
            if delay > 0:
                return min(delay, self._probe_interval * 1.25)
            start = _monotonic()
            try:
                conn = self._call_factory()
            except Exception as exc:
                self._connect_failed(exc, probe=True)
                return 0.0
            self._adopt(conn, start)
            return 0.0
        except BaseException:
            with self._lock:
                self._prober = False
                self._probing = False
            raise

    def _adopt(self, conn: CT, start: float) -> None:
        """A probe's connection, its connect begun at ``start``, opened outside
        any slot: close the circuit and keep it if a slot is free, in one step
        (so that no caller opens another one meanwhile)."""
        rec = _Conn(conn, _monotonic(), self._pid)
        took = rec.created - start
        with self._lock:
            recovered = self._close_circuit(took)
            keep = not self._closed and self._size < self._max_size
            if keep:
                self._size += 1
                rec.epoch = self._epoch
                waiter = self._shelve(rec, rec.created)
            else:
                self._discarded += 1
                waiter = None
        if recovered:  # else a caller's connect closed it first, and said so
            logger.warning("pool %r: connecting works again; circuit closed", self._name)
        if self._listeners:
            self._notify("create_time", took)
        if not keep:
            self._dispose(rec)
        if waiter is not None:
            waiter.lock.release()

    def _give_up_slot(self) -> None:
        """A reserved slot will not be used: pass it to a waiter, or free it."""
        with self._lock:
            self._pending -= 1
            waiter = self._free_slot()
        if waiter is not None:
            waiter.lock.release()

    def _run_check(self, rec: _Conn) -> Optional[str]:
        """Run ``check`` on a connection taken out with a pending slot: why it
        failed, or None. Interrupted, it disposes of it, frees the slot, re-raises."""
        assert self._check is not None
        try:
            if self._check(rec.conn) is False:
                return "check returned False"
        except Exception as exc:
            return f"check raised {exc!r}"
        except BaseException:
            # Interrupted mid-check: the connection's state is unknown.
            with self._lock:
                self._discarded += 1
            self._dispose(rec)
            self._give_up_slot()
            raise
        return None

    def _needs_vetting(self, rec: _Conn, now: float) -> bool:
        """Under the lock: whether an idle connection is past max_lifetime or due
        a check: idle for ``check_after`` or more, or suspect (opened before a
        connection was found broken), however recently it was used."""
        return (
            self._max_lifetime is not None and now - rec.created >= self._max_lifetime
        ) or (
            self._check is not None
            and (rec.epoch != self._epoch or now - rec.last_used >= self._check_after)
        )

    def _vetted(self, rec: _Conn, since: float) -> _Conn:
        """An idle connection due vetting, taken out with a pending slot by a
        get() begun at ``since``: check it, lend it (or dispose of it and open
        another in its slot)."""
        reason = None
        checked = False
        if self._max_lifetime is not None and since - rec.created >= self._max_lifetime:
            reason = "max_lifetime reached"
        elif self._check is not None:
            reason = self._run_check(rec)
            checked = True
        if reason is None:
            now = _monotonic()
            with self._lock:
                retired = rec.epoch < self._retired_below  # recycle() ran meanwhile
                if not retired:
                    self._pending -= 1
                    if not self._closed:
                        if checked:
                            rec.epoch = self._epoch  # vouched for: a suspect no more
                        self._lend(rec, since, now)
                        return rec
                    self._discarded += 1
                    waiter = self._free_slot()
            if not retired:
                assert waiter is None  # a closed pool has no waiters
                self._dispose(rec)
                raise PoolClosed(f"pool {self._name!r} was closed while checking a connection")
            reason = "recycled while it was checked"
        logger.info("pool %r: discarding %r: %s", self._name, rec.conn, reason)
        with self._lock:
            self._discarded += 1
        self._dispose(rec)
        if checked:
            self._lost(rec)
        # The slot is still ours (pending): open a fresh connection in it.
        return self._open_lent(since)

    def _after_keepalive_check(self, rec: _Conn, reason: Optional[str]) -> None:
        """Put back an idle connection :meth:`maintain` checked, or drop it."""
        if reason is None:
            with self._lock:
                self._pending -= 1
                # Closed, shrunk by resize() or recycled while this one was checked.
                if (
                    not self._closed
                    and self._size <= self._max_size
                    and rec.epoch >= self._retired_below
                ):
                    rec.epoch = self._epoch  # vouched for: a suspect no more
                    waiter = self._shelve(rec, _monotonic())
                    keep = True
                else:
                    self._discarded += 1
                    waiter = self._free_slot()  # a waiter's, unless closed or shrunk
                    keep = False
            if waiter is not None:
                waiter.lock.release()
            if keep:
                return
        else:
            logger.info("pool %r: discarding idle %r: %s", self._name, rec.conn, reason)
            with self._lock:
                self._discarded += 1
            self._lost(rec)
            self._give_up_slot()
        self._dispose(rec)

    def _lost(self, rec: _Conn) -> None:
        """``rec`` was found broken: every connection opened before now is suspect.

        The pool's epoch moves on: busy connections of the old one are
        disposed of when they come back; idle ones are checked before they
        are handed out, or, without a ``check``, disposed of now. A suspect
        found broken brings no news (its epoch is old already), so an outage
        met by many connections moves the epoch once, not once per connection.
        """
        with self._lock:
            if rec.epoch != self._epoch or self._closed:
                return
            self._epoch += 1
            idle: list[_Conn] = []
            if self._check is None:
                idle, self._idle = self._idle, []
                self._size -= len(idle)
                self._discarded += len(idle)
            suspects = len(self._idle) + self._in_use
        for other in idle:
            self._dispose(other)
        logger.warning(
            "pool %r: a connection was found broken; %s, %d other(s) now suspect",
            self._name,
            f"disposed of {len(idle)} idle connection(s)" if idle else "nothing disposed of",
            suspects,
        )

    def _track(self, rec: _Conn) -> None:
        """Note where a connection was checked out (leak_timeout set; _lend
        noted when)."""
        rec.leak_reported = False
        rec.stack = traceback.StackSummary.extract(
            traceback.walk_stack(sys._getframe(3)), limit=40, lookup_lines=False
        )
        rec.stack.reverse()
        with self._lock:
            self._lent.add(rec)

    # -- return --------------------------------------------------------------

    def _is_broken(self, rec: _Conn, exc: Optional[BaseException]) -> bool:
        return self.is_broken(rec.conn, exc)

    def _release(self, rec: _Conn, doomed: bool, now: Optional[float] = None) -> None:
        """Give back a connection lent by :meth:`_acquire`, returned at ``now``
        (by default, now)."""
        if rec.pid != self._pid:
            return  # inherited from the parent process: neither ours to count nor to close
        if now is None:
            now = _monotonic()
        used = now - rec.checked_out
        if not doomed:
            if self._reset is not None:
                try:
                    self._reset(rec.conn)
                except Exception:
                    logger.warning(
                        "pool %r: reset failed; discarding %r", self._name, rec.conn,
                        exc_info=True,
                    )
                    doomed = True
                except BaseException:
                    self._release(rec, True, now)  # interrupted: dispose of it, free the slot
                    raise
            if not doomed:
                if self._broken is None:
                    doomed = rec.has_closed and _reports_closed(rec.conn)
                else:
                    doomed = self._is_broken(rec, None)
        with self._lock:
            self._in_use -= 1
            self._use_counts[_bucket(BUCKET_BOUNDS, used)] += 1
            self._use_sum += used
            if self._leak_timeout is not None:
                self._lent.discard(rec)
            if (
                doomed
                or rec.epoch != self._epoch
                or self._size > self._max_size
                or (self._max_uses is not None and rec.uses >= self._max_uses)
                or (self._max_lifetime is not None and now - rec.created >= self._max_lifetime)
            ):
                self._discarded += 1
                waiter = self._free_slot()
                discard = True
            elif self._waiters:
                waiter = self._shelve(rec, now)
                discard = False
            else:
                # The hot path, inlined from _shelve.
                rec.last_used = now
                self._idle.append(rec)
                waiter = None
                discard = False
            if self._drained is not None and not self._in_use:
                self._drained.set()
                self._drained = None
        try:
            if discard:
                self._dispose(rec)
        finally:
            if waiter is not None:
                waiter.lock.release()
        if doomed:
            self._lost(rec)
        if self._listeners:
            self._notify("use_time", used)

    def _free_slot(self) -> Optional[_Waiter]:
        """Under the lock: a slot was vacated. Hand it to the longest waiter
        (who opens a connection in it), or shrink. Returns the waiter to wake."""
        if self._waiters and not self._closed and self._size <= self._max_size:
            return self._serve_slot()
        self._size -= 1
        return None

    def _dispose(self, rec: _Conn) -> None:
        """Close a connection the pool drops; log, never raise."""
        conn = rec.conn
        try:
            if self._dispose_fn is not None:
                self._dispose_fn(conn)
            else:
                close = getattr(conn, "close", None)
                if callable(close):
                    close()
        except Exception:
            logger.warning("pool %r: closing %r failed", self._name, conn, exc_info=True)

    # -- filling -------------------------------------------------------------

    def _reserve_to_min(self) -> int:
        # Under the lock: reserve the slots needed to reach min_size.
        need = max(0, self._min_size - self._size) if not self._closed else 0
        self._size += need
        self._pending += need
        self._filling += need
        return need

    def _fill_gave_up(self, left: int) -> None:
        """A fill will not open connections in its ``left`` remaining slots."""
        for _ in range(left):
            self._give_up_slot()
        with self._lock:
            self._filling -= left
            if not self._filling:
                self._filled.notify_all()

    def _fill_in_background(self, need: int) -> None:
        """Open connections in ``need`` reserved slots from a daemon thread."""
        if need:
            threading.Thread(
                target=self._fill,
                args=(need, False),
                name=f"{self._name}-fill",
                daemon=True,
            ).start()

    def _fill(self, need: int, raise_errors: bool) -> None:
        """Open connections in ``need`` reserved slots and put them in the pool."""
        for done in range(need):
            with self._lock:
                closed = self._closed
                epoch = self._epoch  # a recycle() during the factory call retires the connection
            if closed:
                self._fill_gave_up(need - done)  # no connect starts after close()
                return
            try:
                rec = self._connect()
            except Exception as exc:
                self._fill_gave_up(need - done)
                if raise_errors:
                    raise
                if isinstance(exc, PoolUnavailable):
                    return  # the breaker logged the outage once already
                # _connect_failed logged the outage (its start, the circuit).
                logger.debug(
                    "pool %r: could not open a connection to fill min_size=%d: %s",
                    self._name,
                    self._min_size,
                    exc,
                )
                return
            except BaseException:
                self._fill_gave_up(need - done)
                raise
            with self._lock:
                self._pending -= 1
                self._filling -= 1
                if not self._filling:
                    self._filled.notify_all()
                # Closed, shrunk by resize() or recycled while this one was opening.
                if (
                    self._closed
                    or self._size > self._max_size
                    or epoch < self._retired_below
                ):
                    self._discarded += 1
                    discard = True
                    waiter = self._free_slot()  # a waiter's, unless closed or shrunk
                else:
                    rec.epoch = self._epoch
                    discard = False
                    waiter = self._shelve(rec, rec.created)
            if discard:
                self._dispose(rec)
            if waiter is not None:
                waiter.lock.release()

    # -- fork ----------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # The parent's connections share its sockets: drop them unclosed.
        self._lock = threading.Lock()
        self._init_state()


_live_pools: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()
_forking: list[Pool[Any]] = []


def _before_fork() -> None:
    # Hold every pool's lock across fork() so the child never sees a
    # half-made change (the lock is never held across user code, so this waits
    # a few microseconds at most).
    _forking[:] = list(_live_pools)
    for pool in _forking:
        pool._lock.acquire()


def _after_fork_in_parent() -> None:
    for pool in _forking:
        pool._lock.release()
    _forking.clear()


def _after_fork_in_child() -> None:
    for pool in _forking:
        pool._after_fork_in_child()
    _forking.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
