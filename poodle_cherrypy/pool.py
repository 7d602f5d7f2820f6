"""The pool core: a bounded, fair, thread-safe pool of factory-made connections.

Nothing here imports CherryPy: the pool serves any connection a factory makes
(DB-API, Redis, sockets, HTTP sessions).

How it stays correct and fast (docs/pool.rst, "How the pool is built"):

- One plain ``threading.Lock`` guards the bookkeeping, held only for a few
  list and counter operations: never while user code runs (the ``with`` body,
  ``factory``, ``check``, ``reset``, ``dispose``, logging handlers).
- ``size`` counts slots: idle, in use, or being opened (``pending``), each
  reserved under the lock *before* the factory runs.
- Waiters queue first come, first served: a returning connection (or a freed
  slot) goes straight to the longest waiter, so no later thread barges in.
- A thread's nested ``get()`` yields the connection it already holds.
- ``os.register_at_fork`` resets every pool in a child process, dropping the
  parent's connections unclosed, at no cost on the hot path.
- Timing costs one clock reading per checkout and one per return, and the
  histograms are counters bumped under the lock the pool takes anyway.

:class:`Pool` keeps the ledger (size = idle + in use + pending, the epochs,
closed) and its policy, in sections. Beside it: :mod:`~poodle_cherrypy.records`,
:mod:`~poodle_cherrypy.connector` (make, vet, close one connection),
:mod:`~poodle_cherrypy.breaker`, :mod:`~poodle_cherrypy.housekeeping`,
:mod:`~poodle_cherrypy.stats` and :mod:`~poodle_cherrypy.options`.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Optional, TypeVar, Union

from . import housekeeping
from .connector import Connector
from .errors import PoolClosed, PoolTimeout, TooManyWaiters
from .options import check_optional_seconds, check_seconds, check_size
from .records import (
    CLOSED,
    CREATE,
    Local,
    Record,
    Sentinel,
    ThreadState,
    Waiter,
    is_broken,
    reports_closed,
)
from .stats import BUCKET_BOUNDS, RECENT_SECONDS, Histogram, PoolStats, RecentWindow

__all__ = ["RECENT_SECONDS", "Lease", "Pool", "is_broken"]

CT = TypeVar("CT")

logger = logging.getLogger("poodle_cherrypy")

_monotonic = time.monotonic
_bucket = bisect.bisect_left
_FIRST_BOUND = BUCKET_BOUNDS[0]
_names = itertools.count(1)


def _now() -> float:
    """The pool's clock, for housekeeping (a test may replace ``_monotonic``)."""
    return _monotonic()

#: A timing listener: called as ``listener(metric, seconds)``.
TimingListener = Callable[[str, float], object]

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
        self._state: Optional[ThreadState] = None

    def __enter__(self) -> CT:
        if self._state is not None:
            raise RuntimeError("this lease is already entered: call pool.get() again")
        pool = self._pool
        state: ThreadState = pool._local.state
        rec = state.rec
        if rec is None:
            # Pool._acquire does it all; the commonest case is inlined here
            # because a method call costs as much as the rest of the checkout.
            # acquire()/release(), not "with": a few instructions fewer.
            (lock := pool._lock).acquire()
            try:
                if pool._idle and pool._plain_checkout and not pool._closed:
                    rec = pool._idle.pop()
                    rec.uses += 1
                    rec.checked_out = _monotonic()
                    pool._in_use += 1
                    # No wait: its 0 s is counted in the first bucket by
                    # Pool._wait_time.
                    pool._checkouts += 1
            finally:
                lock.release()
            if rec is None:
                rec = pool._acquire(self._timeout, _monotonic())
            state.rec = rec
            state.doomed = None
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
        rec: Record = state.rec  # type: ignore[assignment]
        pool = self._pool
        if exc is not None and not state.doomed and pool.is_broken(rec.conn, exc):
            state.doomed = f"its block raised {exc!r}"
        state.depth -= 1
        if state.depth:
            return
        state.rec = None
        if (
            pool._plain_return
            and not state.doomed
            and not (rec.has_closed and reports_closed(rec.conn))
        ):
            # Pool._release does it all; the commonest case is inlined here.
            # A closed or forked pool has a new epoch, so its connections
            # never take this path.
            used = _monotonic() - rec.checked_out
            (lock := pool._lock).acquire()  # as in __enter__
            try:
                if rec.epoch == pool._epoch and not pool._waiters and pool._size <= pool._max_size:
                    pool._in_use -= 1
                    # A use in the first bucket is counted there by Pool._use_time.
                    if used > _FIRST_BOUND:
                        pool._use_counts[_bucket(BUCKET_BOUNDS, used)] += 1
                    pool._use_sum += used
                    pool._idle.append(rec)
                    return
            finally:
                lock.release()
            pool._release(rec, None, rec.checked_out + used)
            return
        pool._release(rec, state.doomed)


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
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        self._name = name if name is not None else f"pool-{next(_names)}"
        # Makes, vets and closes one connection, through the breaker; both
        # check their options.
        self._connector: Connector[CT] = Connector(
            self._name, factory, args, kwargs, check=check, reset=reset, dispose=dispose,
            broken=broken, fail_fast_after=fail_fast_after, retry_delay=retry_delay,
            max_retry_delay=max_retry_delay, probe_interval=probe_interval,
        )
        self._breaker = self._connector.breaker
        min_size = check_size("min_size", min_size, 0)
        max_size = check_size("max_size", max_size, 1)
        if min_size > max_size:
            raise ValueError(f"min_size ({min_size}) must not exceed max_size ({max_size})")
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = check_seconds("timeout", timeout)
        self._max_waiting = check_size("max_waiting", max_waiting, 0)
        self._has_check = check is not None
        self._check_after = check_seconds("check_after", check_after)
        self._keepalive = check_optional_seconds("keepalive", keepalive, allow_zero=False)
        self._max_lifetime = check_optional_seconds("max_lifetime", max_lifetime, allow_zero=False)
        self._max_idle = check_optional_seconds("max_idle", max_idle, allow_zero=False)
        self._max_uses = None if max_uses is None else check_size("max_uses", max_uses, 1)
        self._leak_timeout = check_optional_seconds("leak_timeout", leak_timeout, allow_zero=False)
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
        self._local = Local()
        self._idle: list[Record] = []  # a stack: the most recently returned last
        self._waiters: deque[Waiter] = deque()
        self._lent: set[Record] = set()  # only filled when leak_timeout is set
        self._size = 0
        self._pending = 0
        self._in_use = 0
        self._epoch = getattr(self, "_epoch", 0) + 1
        # Connections of an epoch below this one were retired by recycle():
        # no check vouches for them (a check vouches for a suspect only).
        self._retired_below = self._epoch
        self._drained: Optional[threading.Event] = None
        self._filling = 0  # slots reserved by fills (to min_size), not yet filled or freed
        self._fills_done = threading.Condition(self._lock)  # notified when _filling drops to 0
        self._threads = housekeeping.Threads()
        self._discarded = 0
        self._checkouts = 0
        self._timeouts = 0
        self._rejected = 0
        self._leaks = 0
        self._connector.forget()
        # Histograms: counts per bucket of BUCKET_BOUNDS (and one "longer"), and
        # the sums. Lease leaves some first-bucket counts implicit (_wait_time).
        buckets = len(BUCKET_BOUNDS) + 1
        self._wait_counts = [0] * buckets
        self._wait_sum = 0.0
        self._use_counts = [0] * buckets
        self._use_sum = 0.0
        self._recent = RecentWindow(_monotonic())

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
            timeout = check_seconds("timeout", timeout)
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
            self._threads.resume()
            need = self._reserve_to_min() if fill else 0
        if reopened:
            logger.info("pool %r: reopened", self._name)
        if not fill:
            return
        if wait:
            housekeeping.fill(self, need, raise_errors=True)
            self._await_fills()
            with self._lock:
                need = self._reserve_to_min()  # what a failed fill left unfilled
            housekeeping.fill(self, need, raise_errors=True)
        else:
            self._fill_in_background(need)

    def _await_fills(self) -> None:
        """Wait (up to the pool's timeout) until no fill has a slot reserved."""
        timeout = min(self._timeout, threading.TIMEOUT_MAX)
        with self._lock:
            done = self._fills_done.wait_for(lambda: not self._filling or self._closed, timeout)
            filling = self._filling
        if not done:
            raise PoolTimeout(
                f"pool {self._name!r}: open(wait=True): {filling} connection(s) still being "
                f"opened by another fill after {timeout:g} s"
            )

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool; calling it again does nothing.

        Later :meth:`get` calls, and callers waiting now, get
        :class:`PoolClosed`. Idle connections are disposed of at once, and
        checked-out ones when they come back; ``close`` waits up to ``timeout``
        seconds for them and logs a warning about any still out.

        When it returns, no thread the pool started is running: a fill to
        ``min_size`` ends at its current connect and the probe thread at once,
        and ``close`` joins them, waiting at most the pool's ``timeout`` for a
        connect under way. One still under way then is left to end in the
        background (its connection closed when it returns), and a WARNING
        says so.
        """
        timeout = check_seconds("timeout", timeout)
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
                waiter.result = CLOSED
            in_use = self._in_use
            drained = self._drained = threading.Event() if in_use else None
        for waiter in waiters:
            waiter.lock.release()
        for rec in idle:
            self._connector.dispose(rec.conn)
        self._threads.stop_and_join(self._timeout, self._name)
        if drained is not None and not drained.wait(timeout):
            with self._lock:
                in_use = self._in_use
            if in_use:
                logger.warning(
                    "pool %r: closed with %d connection(s) still in use after %g s; "
                    "they will be closed when they come back", self._name, in_use, timeout)
        logger.info("pool %r: closed", self._name)

    def recycle(self) -> None:
        """Retire every connection open now, without closing the pool.

        Idle connections are disposed of at once and checked-out ones when
        they come back, as are those being opened or checked now; callers
        meanwhile get fresh connections, and ``min_size`` is refilled in the
        background. Use it after a database failover or a credentials
        change; the CherryPy plugin calls it on ``graceful`` (SIGUSR1). On a
        closed pool it does nothing.
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
            self._connector.dispose(rec.conn)
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
        logged, not raised. On a closed pool it does nothing. (The steps are
        :func:`poodle_cherrypy.housekeeping.maintain`.)
        """
        housekeeping.maintain(self, _now)

    def resize(self, min_size: Optional[int] = None, max_size: Optional[int] = None) -> None:
        """Change ``min_size`` and/or ``max_size`` while the pool is in use.

        Growing ``max_size`` lets waiting callers through at once. Shrinking
        it disposes of excess idle connections now and of excess busy ones
        when they come back. A larger ``min_size`` is filled by the next
        :meth:`maintain` or :meth:`open`.
        """
        with self._lock:
            new_min = self._min_size if min_size is None else check_size("min_size", min_size, 0)
            new_max = self._max_size if max_size is None else check_size("max_size", max_size, 1)
            if new_min > new_max:
                raise ValueError(f"min_size ({new_min}) must not exceed max_size ({new_max})")
            self._min_size = new_min
            self._max_size = new_max
            excess: list[Record] = []
            while self._size > new_max and self._idle:
                excess.append(self._idle.pop(0))  # the oldest first
                self._size -= 1
            self._discarded += len(excess)
            wake: list[Waiter] = []
            while self._waiters and self._size < new_max and not self._closed:
                self._size += 1
                wake.append(self._serve_slot())
        for rec in excess:
            self._connector.dispose(rec.conn)
        for waiter in wake:
            waiter.lock.release()

    def is_broken(self, conn: CT, exc: Optional[BaseException]) -> bool:
        """Whether the pool's ``broken`` rule judges ``conn`` lost after ``exc``.

        This is what the pool decides when the connection comes back with that
        exception; a rule that raises counts as True (and is logged).
        """
        return self._connector.is_broken(conn, exc)

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
                created=self._connector.created,
                discarded=self._discarded,
                checkouts=self._checkouts,
                timeouts=self._timeouts,
                rejected=self._rejected,
                errors=self._connector.errors,
                leaks=self._leaks,
                unavailable=self._breaker.unavailable,
                connect_failures=self._breaker.failures,
                circuit=self._breaker.state,
                wait_time=self._wait_time(),
                use_time=self._use_time(),
                create_time=self._connector.create_time(),
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

    # -- lending: checkout and the FIFO hand-off -------------------------------

    def _acquire(self, timeout: Optional[float], since: float) -> Record:
        """Check a connection out for the calling thread (lent and counted);
        ``since`` is when its ``get()`` began."""
        vet = False
        waiter = None
        with self._lock:
            if self._closed:
                raise PoolClosed(f"pool {self._name!r} is closed")
            if self._idle:
                rec: Union[Record, Sentinel, None] = self._idle.pop()
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
                waiter = Waiter(since)
                self._waiters.append(waiter)
        if waiter is not None:
            rec = self._wait(waiter, self._timeout if timeout is None else timeout)
        if rec is CREATE:
            rec = self._open_lent(since)
        elif vet:
            rec = self._vetted(rec, since)  # type: ignore[arg-type]
        if self._leak_timeout is not None:
            housekeeping.track_checkout(self, rec)  # type: ignore[arg-type]
        if self._listeners:
            # The very difference _lend recorded.
            self._notify("wait_time", rec.checked_out - since)  # type: ignore[union-attr]
        return rec  # type: ignore[return-value]

    def _lend(self, rec: Record, since: float, now: float) -> None:
        # Under the lock: lend ``rec`` at ``now`` to a get() begun at ``since``
        # (not before: a releaser's reading may predate a waiter's start).
        now = max(now, since)
        rec.uses += 1
        rec.checked_out = now
        self._in_use += 1
        self._checkouts += 1
        waited = now - since
        self._wait_counts[_bucket(BUCKET_BOUNDS, waited)] += 1
        self._wait_sum += waited

    def _hand_slot_to_self(self) -> Sentinel:
        self._size += 1  # under the lock: a slot for a connection the caller opens
        self._pending += 1
        return CREATE

    def _serve_slot(self) -> Waiter:
        # Under the lock: the longest waiter gets a slot (in _size) to open one in.
        waiter = self._waiters.popleft()
        self._pending += 1
        waiter.result = CREATE
        return waiter

    def _shelve(self, rec: Record, now: float) -> Optional[Waiter]:
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

    def _free_slot(self) -> Optional[Waiter]:
        """Under the lock: a slot was vacated. Hand it to the longest waiter
        (who opens a connection in it), or shrink. Returns the waiter to wake."""
        if self._waiters and not self._closed and self._size <= self._max_size:
            return self._serve_slot()
        self._size -= 1
        return None

    def _give_up_slot(self) -> None:
        """A reserved slot will not be used: pass it to a waiter, or free it."""
        with self._lock:
            self._pending -= 1
            waiter = self._free_slot()
        if waiter is not None:
            waiter.lock.release()

    def _wait(self, waiter: Waiter, timeout: float) -> Union[Record, Sentinel]:
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
                    recent = self._recent.describe(now, self._wait_time(), self._use_time())
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
        if result is CLOSED:
            raise PoolClosed(f"pool {self._name!r} was closed while waiting for a connection")
        return result

    def _abandon(self, waiter: Waiter) -> None:
        """A waiter was interrupted (KeyboardInterrupt...): leave the line, give back."""
        with self._lock:
            result = waiter.result
            if result is None:
                self._waiters.remove(waiter)
                return
        if isinstance(result, Record):
            self._release(result, None)
        elif result is CREATE:
            self._give_up_slot()

    # -- opening: the factory call, through the circuit breaker ----------------

    def _open_lent(self, since: float) -> Record:
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
        self._connector.dispose(rec.conn)
        raise PoolClosed(f"pool {self._name!r} was closed while opening a connection")

    def _connect(self) -> Record:
        """Open a connection (without the lock), through the circuit breaker.

        After ``fail_fast_after`` consecutive failures the circuit opens:
        callers get :class:`PoolUnavailable` at once instead of each paying
        for a connect that is bound to fail. Then the probe thread (with
        ``probe_interval``) or one caller at a time after a doubling delay
        tries again; the first success closes the circuit.
        """
        connector = self._connector
        with self._lock:
            probe, refusal = connector.admit(_monotonic())
        if refusal is not None:
            raise refusal from connector.breaker.last_error
        start = _monotonic()
        try:
            conn = connector.call()
        except BaseException as exc:
            self._connect_failed(exc, bool(probe))
            raise
        rec = Record(conn, _monotonic(), self._pid)
        took = rec.created - start
        with self._lock:
            recovered = connector.succeeded(took)
        self._say_connected(took, recovered)
        return rec

    def _say_connected(self, took: float, recovered: bool) -> None:
        """After a connect succeeded, without the lock: log, tell the listeners."""
        if recovered:  # else another connect closed it first, and said so
            self._connector.say_recovered()
        if self._listeners:
            self._notify("create_time", took)

    def _connect_failed(self, exc: BaseException, probe: bool) -> None:
        """A connect (the circuit's probe, if ``probe``) raised ``exc``: tell
        the connector, start the probe thread if the circuit opened, log."""
        with self._lock:
            trip = self._connector.failed(exc, probe, _monotonic())
        if trip is None:
            return
        if trip.start_prober:
            self._threads.start(
                housekeeping.probe_loop, (weakref.ref(self), self._threads.stopping, _now),
                f"{self._name}-probe",
            )
        self._connector.say_failed(trip, exc)

    # -- vetting: check, check_after, max_lifetime, epochs ----------------------

    def _needs_vetting(self, rec: Record, now: float) -> bool:
        """Under the lock: whether an idle connection is past max_lifetime or due
        a check: idle for ``check_after`` or more, or suspect (opened before a
        connection was found broken), however recently it was used."""
        return (
            self._max_lifetime is not None and now - rec.created >= self._max_lifetime
        ) or (
            self._has_check
            and (rec.epoch != self._epoch or now - rec.last_used >= self._check_after)
        )

    def _vetted(self, rec: Record, since: float) -> Record:
        """An idle connection due vetting, taken out with a pending slot by a
        get() begun at ``since``: check it and lend it. One that fails is
        disposed of and another opened in its slot; while the circuit is open
        (opening would fail fast) the next idle connection is tried first."""
        while True:
            reason = None
            checked = failed = False
            if self._max_lifetime is not None and since - rec.created >= self._max_lifetime:
                reason = "max_lifetime reached"
            elif self._has_check:
                try:
                    reason = self._connector.check(rec.conn)
                except BaseException:
                    self._drop(rec)  # interrupted mid-check: its state is unknown
                    raise
                checked = True
                failed = reason is not None
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
                    self._connector.dispose(rec.conn)
                    raise PoolClosed(f"pool {self._name!r} was closed while checking a connection")
                reason = "recycled while it was checked"
            with self._lock:
                self._discarded += 1
            self._connector.dispose(rec.conn)
            self._lost(rec, f"discarded {rec.conn!r}: {reason}", found_broken=failed)
            with self._lock:
                following = (
                    self._idle.pop()
                    if self._breaker.retry_at is not None and self._idle and not self._closed
                    else None
                )
                # Its slot is pending now; the failed one's is given up.
                waiter = self._free_slot() if following is not None else None
            if following is None:
                # The slot is still ours (pending): open a fresh connection in it.
                return self._open_lent(since)
            if waiter is not None:
                waiter.lock.release()
            rec = following

    def _lost(
        self,
        rec: Record,
        what: str,
        *,
        found_broken: bool = True,
        exc_info: Optional[BaseException] = None,
    ) -> None:
        """Log ``what`` the pool did with ``rec``, in one line. ``found_broken``
        (by its check, its reset or the broken rule): the epoch moves on and
        every other connection is suspect (busy ones disposed of when they come
        back, idle ones checked before they are lent, or without a ``check``
        disposed of now), and a WARNING names them. A suspect found broken
        brings no news, so an outage moves the epoch once: its line is INFO
        (a failed reset, with its traceback, always a WARNING)."""
        news = already = False
        idle: list[Record] = []
        suspects = 0
        if found_broken:
            with self._lock:
                already = rec.epoch != self._epoch
                news = not already and not self._closed
                if news:
                    self._epoch += 1
                    if not self._has_check:
                        idle, self._idle = self._idle, []
                        self._size -= len(idle)
                        self._discarded += len(idle)
                    suspects = len(self._idle) + self._in_use
            for other in idle:
                self._connector.dispose(other.conn)
        if news:
            done = f"disposed of {len(idle)} idle connection(s)" if idle else "nothing disposed of"
            logger.warning(
                "pool %r: %s; found broken: %s, %d other(s) now suspect",
                self._name, what, done, suspects, exc_info=exc_info)
        else:
            logger.log(
                logging.INFO if exc_info is None else logging.WARNING,
                "pool %r: %s%s", self._name, what, "; it was suspect already" if already else "",
                exc_info=exc_info,
            )

    # -- returning -------------------------------------------------------------

    def _release(
        self, rec: Record, broken: Optional[str], now: Optional[float] = None, keep: bool = False
    ) -> None:
        """Give back a connection lent by :meth:`_acquire`, returned at ``now`` (default:
        now); ``broken``: why to drop it (``keep``: free its slot but leave it open)."""
        if rec.pid != self._pid:
            return  # inherited from the parent process: neither ours to count nor to close
        if now is None:
            now = _monotonic()
        used = now - rec.checked_out
        reset_error = None
        if broken is None:
            try:
                reset_error = self._connector.reset(rec.conn)
            except BaseException:
                self._release(rec, "interrupted in reset", now)  # dispose of it, free the slot
                raise
            if reset_error is not None:
                broken = f"reset failed ({reset_error!r})"
            else:
                broken = self._connector.came_back_broken(rec.conn, rec.has_closed)
        with self._lock:
            self._in_use -= 1
            self._use_counts[_bucket(BUCKET_BOUNDS, used)] += 1
            self._use_sum += used
            if self._leak_timeout is not None:
                self._lent.discard(rec)
            if (
                broken is not None
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
            if discard and not keep:
                self._connector.dispose(rec.conn)
        finally:
            if waiter is not None:
                waiter.lock.release()
        if broken is not None and not keep:
            self._lost(rec, f"discarded {rec.conn!r}: {broken}", exc_info=reset_error)
        if self._listeners:
            self._notify("use_time", used)

    def _drop(self, rec: Record) -> None:
        """Dispose of a connection taken out with a pending slot, and give the slot up."""
        with self._lock:
            self._discarded += 1
        self._connector.dispose(rec.conn)
        self._give_up_slot()

    # -- housekeeping: the ledger's side of housekeeping.py's steps -------------

    def _reserve_to_min(self) -> int:
        # Under the lock: reserve the slots needed to reach min_size.
        need = max(0, self._min_size - self._size) if not self._closed else 0
        self._size += need
        self._pending += need
        self._filling += need
        return need

    def _fill_in_background(self, need: int) -> None:
        """Open connections in ``need`` reserved slots from a thread of the pool's."""
        if need:
            self._threads.start(housekeeping.fill, (self, need, False), f"{self._name}-fill")

    # -- timing ------------------------------------------------------------------

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
        # Under the lock: a snapshot for the recent figures, when one is due.
        if self._recent.due(now):
            self._recent.mark(now, self._wait_time(), self._use_time())

    # -- fork --------------------------------------------------------------------

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
        before=_before_fork, after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
