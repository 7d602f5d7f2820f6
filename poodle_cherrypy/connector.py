"""One connection at a time: making it, vetting it, resetting it, closing it.

:class:`Connector` is a pool's HikariCP ``PoolBase``. It calls the factory
with the pool's arguments (the callable ones called at each connect), asks
the :class:`~poodle_cherrypy.breaker.CircuitBreaker` first, and counts and
times the connects (the ``created``, ``errors`` and ``create_time`` figures
of :class:`~poodle_cherrypy.PoolStats`); it runs the pool's ``check``,
``reset``, ``broken`` rule and ``dispose`` on one connection. It has no lock,
clock or thread of its own: the pool calls the methods that change its state
under the pool's lock and hands them the time, then raises and logs what
they return. The pool's slots, idle stack and epochs stay with the pool.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Optional, TypeVar

from .breaker import CircuitBreaker, Trip
from .errors import PoolUnavailable
from .options import check_callable
from .records import is_broken, reports_closed
from .stats import BUCKET_BOUNDS, Histogram

__all__ = ["Connector", "check_arguments"]

CT = TypeVar("CT")

logger = logging.getLogger("poodle_cherrypy")


def check_arguments(args: object, kwargs: object, where: str = "") -> None:
    """Raise a ``TypeError`` unless ``args`` is a sequence of positional
    arguments (not a str) and ``kwargs`` a mapping (or None); ``where`` says
    what gave them (empty: the caller, who may pass callables instead)."""
    if not (where == "" and callable(args)) and (
        isinstance(args, (str, bytes)) or not isinstance(args, Sequence)
    ):
        if where:
            raise TypeError(f"{where}: the args callable must return a sequence, got {args!r}")
        raise TypeError(
            f"args must be a tuple of positional arguments (or a callable returning one), "
            f"got {args!r}"
            + (f"; did you mean args=({args!r},)?" if isinstance(args, (str, bytes)) else "")
        )
    caller_may_defer = where == "" and (kwargs is None or callable(kwargs))
    if not isinstance(kwargs, Mapping) and not caller_may_defer:
        if where:
            raise TypeError(f"{where}: the kwargs callable must return a mapping, got {kwargs!r}")
        raise TypeError(
            f"kwargs must be a mapping of keyword arguments (or a callable returning one), "
            f"got {kwargs!r}"
        )


class Connector(Generic[CT]):
    """Opens connections for the pool ``name`` with ``factory(*args, **kwargs)``
    and runs ``check``, ``reset``, ``broken`` and ``dispose`` on them, each
    option as :class:`~poodle_cherrypy.Pool` documents it.

    ``args`` and ``kwargs`` may each be a callable taking no argument, called
    at every connect; the breaker's options are passed on to
    :class:`~poodle_cherrypy.breaker.CircuitBreaker`.
    """

    def __init__(
        self,
        name: str,
        factory: Callable[..., CT],
        args: Any,
        kwargs: Any,
        *,
        check: Optional[Callable[[CT], Any]] = None,
        reset: Optional[Callable[[CT], Any]] = None,
        dispose: Optional[Callable[[CT], Any]] = None,
        broken: Optional[Callable[[CT, Optional[BaseException]], bool]] = None,
        **breaker_options: Any,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {factory!r}")
        check_arguments(args, kwargs)
        self.name = name
        self.factory = factory
        self.args: Any = args if callable(args) else tuple(args)
        self.kwargs: Any = kwargs if callable(kwargs) else dict(kwargs or {})
        self.breaker = CircuitBreaker(**breaker_options)
        """The circuit breaker every connect asks first."""
        self._check = check_callable("check", check)
        self._reset = check_callable("reset", reset)
        self._dispose = check_callable("dispose", dispose)
        self._broken = check_callable("broken", broken)
        self.forget()

    def forget(self) -> None:
        """The counters and the breaker, fresh (a forked child starts afresh)."""
        self.created = 0
        """Connections the factory opened."""
        self.errors = 0
        """Factory calls that raised."""
        self.create_counts = [0] * (len(BUCKET_BOUNDS) + 1)
        self.create_sum = 0.0
        self.breaker.reset()

    # -- one connection, without the pool's lock -------------------------------

    def check(self, conn: CT) -> Optional[str]:
        """Run ``check`` on ``conn`` (the pool has one): why it failed, or
        None. An interruption (``KeyboardInterrupt``) propagates."""
        assert self._check is not None
        try:
            if self._check(conn) is False:
                return "check returned False"
        except Exception as exc:
            return f"check raised {exc!r}"
        return None

    def reset(self, conn: CT) -> Optional[Exception]:
        """Run ``reset`` on a returning ``conn``, if there is one: what it raised, or None."""
        if self._reset is not None:
            try:
                self._reset(conn)
            except Exception as exc:
                return exc
        return None

    def is_broken(self, conn: CT, exc: Optional[BaseException]) -> bool:
        """The ``broken`` rule (default :func:`~poodle_cherrypy.is_broken`); a
        rule that raises counts as True, and is logged."""
        try:
            if self._broken is not None:
                return bool(self._broken(conn, exc))
            return is_broken(conn, exc)
        except Exception:
            logger.warning(
                "pool %r: the broken rule raised; discarding %r", self.name, conn, exc_info=True
            )
            return True

    def came_back_broken(self, conn: CT, has_closed: bool) -> Optional[str]:
        """Why a connection that came back without an error is lost, or None:
        the ``broken`` rule says so, or (the default rule, ``has_closed``) it
        is closed."""
        if self._broken is not None:
            return "the broken rule judged it lost" if self.is_broken(conn, None) else None
        return "it came back closed" if has_closed and reports_closed(conn) else None

    def dispose(self, conn: CT) -> None:
        """Close a connection the pool drops (``dispose``, else its ``close()``);
        log, never raise."""
        try:
            if self._dispose is not None:
                self._dispose(conn)
            else:
                close = getattr(conn, "close", None)
                if callable(close):
                    close()
        except Exception:
            logger.warning("pool %r: closing %r failed", self.name, conn, exc_info=True)

    def call(self) -> CT:
        """Call the factory (without the pool's lock), the callable arguments called now."""
        args = self.args() if callable(self.args) else self.args
        kwargs = self.kwargs() if callable(self.kwargs) else self.kwargs
        check_arguments(args, kwargs, f"pool {self.name!r}")
        return self.factory(*args, **kwargs)

    # -- under the pool's lock ---------------------------------------------------

    def admit(self, now: float) -> tuple[Optional[bool], Optional[PoolUnavailable]]:
        """May a connect start at ``now``? ``(probe, None)``: yes (as the
        circuit's probe, if ``probe``); ``(None, refusal)``: no, raise the
        refusal (chained to the last factory error)."""
        breaker = self.breaker
        probe = breaker.admit(now)
        if probe is not None:
            return probe, None
        wait = max(0.0, (breaker.retry_at or now) - now)
        return None, PoolUnavailable(
            f"pool {self.name!r}: connecting failed {breaker.failures} times in a row; "
            f"failing fast until the next attempt in {wait:.2f} s "
            f"(last error: {breaker.last_error!r})"
        )

    def succeeded(self, took: float) -> bool:
        """A connect that took ``took`` seconds succeeded: count it, close the
        circuit. Whether the circuit was open (see :meth:`say_recovered`)."""
        self.created += 1
        self.create_counts[bisect.bisect_left(BUCKET_BOUNDS, took)] += 1
        self.create_sum += took
        return self.breaker.succeeded()

    def failed(self, exc: BaseException, probe: bool, now: float) -> Optional[Trip]:
        """A connect (the probe, if ``probe``) raised ``exc`` at ``now``: count
        it; what it did to the breaker (see :meth:`say_failed`)."""
        self.errors += 1
        return self.breaker.failed(exc, probe, now)

    def create_time(self) -> Histogram:
        """The ``create_time`` histogram as it is now."""
        return Histogram.of_counts(self.create_counts, self.create_sum)

    # -- without the lock: the log lines -----------------------------------------

    def say_recovered(self) -> None:
        """Log that the circuit closed (after :meth:`succeeded` said it was open)."""
        logger.warning("pool %r: connecting works again; circuit closed", self.name)

    def say_failed(self, trip: Trip, exc: BaseException) -> None:
        """Log what a failed connect changed: one line per state change, the
        outage's traceback once, at its start."""
        if trip.failures == 1:
            logger.warning("pool %r: connecting failed (%r)", self.name, exc, exc_info=exc)
        if trip.delay is None:
            return
        if trip.over == 0:
            logger.warning(
                "pool %r: connecting failed %d times in a row (%r); circuit opened: failing "
                "fast, next attempt in %.2f s",
                self.name, trip.failures, exc, trip.delay,
            )
            return
        # The probe thread tries every probe_interval: its first failure and
        # every 20th after it say the outage goes on, the rest are DEBUG.
        logger.log(
            logging.WARNING if (trip.over - 1) % 20 == 0 else logging.DEBUG,
            "pool %r: a probe failed (%r); circuit still open, next attempt in %.2f s",
            self.name, exc, trip.delay,
        )
