"""A pool's housekeeping: the work beside lending, in named steps.

:class:`~poodle_cherrypy.Pool` keeps its ledger (size = idle + in use +
pending, the epochs, closed) in one class under one lock, as psycopg_pool's
``ConnectionPool`` and HikariCP's ``HikariPool`` do. What it does besides
lending is here, as HikariCP keeps its ``HouseKeeper`` and psycopg_pool its
maintenance tasks apart:

- :func:`fill`: open connections in the slots reserved for them (by
  ``open()``, ``recycle()`` and ``maintain()``), and open another in the slot
  of one that ``recycle()`` retired while it was being opened;
- :func:`maintain`: the steps of ``Pool.maintain()``: :func:`sweep` the idle
  connections (expire them, pick those due a keepalive check), dispose of the
  expired, run the :func:`keepalive` checks, :func:`report_leaks` (noted at
  checkout by :func:`track_checkout`, HikariCP's ``ProxyLeakTask``), refill;
- :func:`probe_loop` and :func:`probe_step`: the probe thread while the
  circuit is open, which puts the connection that closes it in the pool;
- :class:`Threads`: the threads a pool starts, which ``close()`` stops and
  joins.

The pure steps (:func:`sweep`, :func:`overdue`) are handed the time and the
records and return decisions. The others change the ledger under the pool's
lock, as the pool's own methods do, and call its small slot methods
(``_shelve``, ``_free_slot``, ``_give_up_slot``, ``_lost``). They read the
time from the clock the pool hands them (only :class:`Threads` times its
joins, in real seconds), so that a test's fake clock drives both.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional

from .errors import PoolUnavailable
from .records import Record

if TYPE_CHECKING:  # for annotations only: pool.py imports this module
    from .pool import Pool

__all__ = [
    "Threads", "fill", "fill_gave_up", "keepalive", "maintain", "overdue", "probe_loop",
    "probe_step", "report_leaks", "sweep", "track_checkout",
]

logger = logging.getLogger("poodle_cherrypy")


# -- the pure steps ------------------------------------------------------------


def sweep(
    idle: Sequence[Record],
    now: float,
    *,
    size: int,
    min_size: int,
    epoch: int,
    max_lifetime: Optional[float],
    max_idle: Optional[float],
    keepalive: Optional[float],
    check: bool,
) -> tuple[list[Record], list[Record], list[Record]]:
    """Sort the idle connections (oldest first) at ``now`` into (expired,
    to check, kept), of a pool of ``size`` connections whose epoch is ``epoch``.

    Expired: past ``max_lifetime``, or idle for ``max_idle`` while the pool
    would stay at ``min_size`` or more without it. To check (only with a
    ``check``): suspects (of an older epoch) and those idle for
    ``keepalive``. The order of each list is the order of ``idle``.
    """
    expired: list[Record] = []
    to_check: list[Record] = []
    kept: list[Record] = []
    open_count = size
    for rec in idle:
        too_old = max_lifetime is not None and now - rec.created >= max_lifetime
        too_idle = (
            max_idle is not None and now - rec.last_used >= max_idle and open_count > min_size
        )
        if too_old or too_idle:
            expired.append(rec)
            open_count -= 1
        elif check and (
            rec.epoch != epoch or (keepalive is not None and now - rec.last_used >= keepalive)
        ):
            to_check.append(rec)
        else:
            kept.append(rec)
    return expired, to_check, kept


def overdue(lent: Iterable[Record], now: float, leak_timeout: float) -> list[tuple[Record, float]]:
    """The lent connections held ``leak_timeout`` or longer at ``now`` and not
    reported yet, with how long each was held; each is marked reported."""
    leaks = []
    for rec in lent:
        held = now - rec.checked_out
        if not rec.leak_reported and held >= leak_timeout:
            rec.leak_reported = True
            leaks.append((rec, held))
    return leaks


# -- the steps that call the pool ------------------------------------------------
# They change the ledger under the pool's lock, as Pool's own methods do: the
# counts stay one invariant under one lock, written in these two modules only.


def maintain(pool: Pool[Any], clock: Callable[[], float]) -> None:
    """``Pool.maintain()``'s steps, in order (see its docstring), on the
    pool's ``clock``."""
    now = clock()
    with pool._lock:
        if pool._closed:
            return
        pool._mark_recent(now)
        expired, to_check, kept = sweep(
            pool._idle, now, size=pool._size, min_size=pool._min_size, epoch=pool._epoch,
            max_lifetime=pool._max_lifetime, max_idle=pool._max_idle,
            keepalive=pool._keepalive, check=pool._has_check,
        )
        if expired or to_check:
            pool._idle = kept
            pool._size -= len(expired)
            pool._discarded += len(expired)
            pool._pending += len(to_check)  # out to be checked, their slots kept
        leaks = []
        if pool._leak_timeout is not None:
            leaks = overdue(pool._lent, now, pool._leak_timeout)
            pool._leaks += len(leaks)
    for rec in expired:
        pool._connector.dispose(rec.conn)
    keepalive(pool, to_check, clock)
    report_leaks(pool, leaks)
    # After the checks, so that what they dropped is refilled by this run.
    with pool._lock:
        need = pool._reserve_to_min()
    fill(pool, need, raise_errors=False)


def keepalive(pool: Pool[Any], to_check: Sequence[Record], clock: Callable[[], float]) -> None:
    """Check the idle connections :func:`sweep` picked (taken out of the idle
    stack, their slots pending): put back those that pass (to a waiter
    first), drop those that fail, which makes the others suspect."""
    for index, rec in enumerate(to_check):
        try:
            reason = pool._connector.check(rec.conn)
        except BaseException:
            for other in to_check[index:]:  # interrupted: its state is unknown; drop the rest
                pool._drop(other)
            raise
        if reason is not None:
            with pool._lock:
                pool._discarded += 1
            pool._lost(rec, f"discarded idle {rec.conn!r}: {reason}")
            pool._give_up_slot()
            pool._connector.dispose(rec.conn)
            continue
        with pool._lock:
            pool._pending -= 1
            # Closed, shrunk by resize() or recycled while this one was checked.
            keep = (
                not pool._closed
                and pool._size <= pool._max_size
                and rec.epoch >= pool._retired_below
            )
            if keep:
                rec.epoch = pool._epoch  # vouched for: a suspect no more
                waiter = pool._shelve(rec, clock())
            else:
                pool._discarded += 1
                waiter = pool._free_slot()  # a waiter's, unless closed or shrunk
        if waiter is not None:
            waiter.lock.release()
        if not keep:
            pool._connector.dispose(rec.conn)


def track_checkout(pool: Pool[Any], rec: Record) -> None:
    """Note where ``rec`` was checked out, for :func:`report_leaks` (with
    ``leak_timeout``; the pool noted when). Called by ``Pool._acquire``, so
    the caller's frame is three up."""
    rec.leak_reported = False
    rec.stack = traceback.StackSummary.extract(
        traceback.walk_stack(sys._getframe(3)), limit=40, lookup_lines=False
    )
    rec.stack.reverse()
    with pool._lock:
        pool._lent.add(rec)


def report_leaks(pool: Pool[Any], leaks: Iterable[tuple[Record, float]]) -> None:
    """Log a WARNING, with the checkout's stack, for each connection :func:`overdue` found."""
    for rec, held in leaks:
        stack = "".join(rec.stack.format()) if rec.stack is not None else ""
        logger.warning(
            "pool %r: connection %r checked out %.1f s ago and not returned "
            "(leak_timeout=%g s); checked out at:\n%s",
            pool.name, rec.conn, held, pool._leak_timeout, stack,
        )


def fill(pool: Pool[Any], need: int, raise_errors: bool) -> None:
    """Open connections in ``need`` slots reserved for a fill and put them in the pool.

    Stops at the first factory error (raised with ``raise_errors``, else
    logged at DEBUG: the breaker logged the outage), and when the pool
    closes (no connect starts after ``close()``). A connection that
    ``recycle()`` retired while it was being opened is disposed of and
    another is opened in its slot at once.
    """
    left = need
    while left:
        with pool._lock:
            closed = pool._closed
            epoch = pool._epoch  # a recycle() during the factory call retires the connection
        if closed:
            fill_gave_up(pool, left)
            return
        try:
            rec = pool._connect()
        except Exception as exc:
            fill_gave_up(pool, left)
            if raise_errors:
                raise
            if not isinstance(exc, PoolUnavailable):  # which the breaker logged already
                logger.debug(
                    "pool %r: could not open a connection to fill min_size=%d: %s",
                    pool.name, pool._min_size, exc,
                )
            return
        except BaseException:
            fill_gave_up(pool, left)
            raise
        with pool._lock:
            retired = epoch < pool._retired_below
            if retired and not pool._closed and pool._size <= pool._max_size:
                # Retired while it was opening: the slot is still this fill's.
                pool._discarded += 1
                again, keep, waiter = True, False, None
            else:
                again = False
                pool._pending -= 1
                pool._filling -= 1
                if not pool._filling:
                    pool._fills_done.notify_all()
                keep = not retired and not pool._closed and pool._size <= pool._max_size
                if keep:
                    rec.epoch = pool._epoch
                    waiter = pool._shelve(rec, rec.created)
                else:  # closed or shrunk by resize() while it was opening
                    pool._discarded += 1
                    waiter = pool._free_slot()  # a waiter's, unless closed or shrunk
        if not keep:
            pool._connector.dispose(rec.conn)
        if waiter is not None:
            waiter.lock.release()
        if not again:
            left -= 1


def fill_gave_up(pool: Pool[Any], left: int) -> None:
    """A fill will not open connections in its ``left`` remaining slots."""
    for _ in range(left):
        pool._give_up_slot()
    with pool._lock:
        pool._filling -= left
        if not pool._filling:
            pool._fills_done.notify_all()


def probe_loop(
    ref: weakref.ReferenceType[Pool[Any]], stopping: threading.Event, clock: Callable[[], float]
) -> None:
    """The probe thread of a pool whose circuit is open: :func:`probe_step`
    until it says the circuit (or the pool) is closed.

    It holds the pool only weakly between steps, so that a pool dropped
    without ``close()`` is collected and its thread ends, and it sleeps on
    ``stopping``, which ``close()`` sets, so that it ends at once then.
    """
    while True:
        pool = ref()
        if pool is None:
            return
        delay = probe_step(pool, clock)
        del pool
        if delay is None:
            return
        if delay > 0:
            stopping.wait(delay)


def probe_step(pool: Pool[Any], clock: Callable[[], float]) -> Optional[float]:
    """One step of the probe thread: probe if the breaker says it is due.

    The probe's connection, opened outside any slot, closes the circuit and
    joins the pool in one step under the lock (so that no caller opens
    another one meanwhile), if a slot is free and ``recycle()`` did not
    retire it during the connect. Returns the seconds to sleep first, or
    None when the circuit or the pool is closed (checked under the lock, so
    that a circuit that opens again keeps its thread).
    """
    breaker = pool._breaker
    try:
        with pool._lock:
            delay = None if pool._closed else breaker.probe_due(clock())
            if delay is None:
                breaker.stop_probing()
            epoch = pool._epoch  # a recycle() during the factory call retires it
        if delay is None or delay > 0:
            return delay
        start = clock()
        try:
            conn = pool._connector.call()
        except Exception as exc:
            pool._connect_failed(exc, probe=True)
            return 0.0
        rec = Record(conn, clock(), pool._pid)
    except BaseException:
        with pool._lock:
            breaker.stop_probing()
        raise
    took = rec.created - start
    with pool._lock:
        recovered = pool._connector.succeeded(took)
        keep = not pool._closed and pool._size < pool._max_size and epoch >= pool._retired_below
        if keep:
            pool._size += 1
            rec.epoch = pool._epoch
            waiter = pool._shelve(rec, rec.created)
        else:
            pool._discarded += 1
            waiter = None
    pool._say_connected(took, recovered)
    if not keep:
        pool._connector.dispose(rec.conn)
    if waiter is not None:
        waiter.lock.release()
    return 0.0


# -- threads -------------------------------------------------------------------


class Threads:
    """The threads one pool starts (fills, the probe), for ``close()`` to join.

    ``stopping`` is set by :meth:`stop_and_join` and cleared by
    :meth:`resume`: what a sleeping probe waits on.
    """

    __slots__ = ("_threads", "stopping")

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        """Set while the pool is closing or closed."""

    def start(self, target: Callable[..., object], args: tuple[Any, ...], name: str) -> None:
        """Start a daemon thread running ``target(*args)``, kept for :meth:`stop_and_join`."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def resume(self) -> None:
        """The pool (re)opened: threads may sleep again."""
        self.stopping.clear()

    def stop_and_join(self, timeout: float, name: str) -> list[threading.Thread]:
        """Set ``stopping`` and join the threads, ``timeout`` seconds in all;
        the threads still alive then (each in a connect that has not
        returned), logged as a WARNING naming the pool ``name``. The calling
        thread, if one of them, is not waited for."""
        self.stopping.set()
        clock = time.monotonic  # a real wait, whatever clock the pool's logic runs on
        deadline = clock() + timeout
        current = threading.current_thread()
        alive = []
        for thread in self._threads:
            if thread is current:
                continue
            thread.join(max(0.0, min(deadline - clock(), threading.TIMEOUT_MAX)))
            if thread.is_alive():
                alive.append(thread)
        self._threads = alive
        if alive:
            logger.warning(
                "pool %r: closed while %s still connecting after %g s (the pool's timeout); "
                "left to end in the background, the connection closed when it returns",
                name, ", ".join(repr(thread.name) for thread in alive), timeout,
            )
        return alive
