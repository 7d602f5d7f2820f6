"""The circuit breaker of a pool's factory: when to stop connecting, when to try again.

:class:`CircuitBreaker` is a pure state object, as psycopg_pool's
``AttemptWithBackoff`` is: it has no lock, clock, thread or pool of its own.
The pool calls it under the pool's lock, hands it the time, and acts on what
it returns: the pool raises :class:`~poodle_cherrypy.PoolUnavailable`, logs
the state changes and runs the probe thread. So it is tested alone, with
made-up times.

The states: *closed* (connecting normally); after ``fail_fast_after``
consecutive failures, *open* (connects are refused until ``retry_at``);
*half-open* while one probe tries the factory. The first success closes it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple, Optional

from .options import check_optional_seconds, check_seconds, check_size

__all__ = ["CircuitBreaker", "Trip"]


class Trip(NamedTuple):
    """What a failed connect did to the breaker, for the pool to log and act on."""

    failures: int
    """Consecutive failures, this one included."""
    over: int
    """Failures beyond ``fail_fast_after`` (0: this one opened the circuit; < 0: still closed)."""
    delay: Optional[float]
    """Seconds until the next attempt, or None while the circuit stays closed."""
    start_prober: bool
    """Whether the pool must start its probe thread now."""


class CircuitBreaker:
    """The breaker's options and its six fields of state.

    Options, as :class:`~poodle_cherrypy.Pool` takes them (checked here, the
    errors naming the option): ``fail_fast_after`` (5; 0 turns the breaker
    off), ``retry_delay`` (0.5) and ``max_retry_delay`` (5.0) for the doubling
    delay between callers' retries, ``probe_interval`` (0.5, or None: no
    probe thread). ``jitter(a, b)`` draws the +-25% factor (default
    ``random.uniform``), so that many pools do not retry in step.

    Every method is called under the pool's lock, with ``now`` from the pool's
    clock.
    """

    __slots__ = (
        "fail_fast_after",
        "failures",
        "jitter",
        "last_error",
        "max_retry_delay",
        "probe_interval",
        "prober",
        "probing",
        "retry_at",
        "retry_delay",
        "unavailable",
    )

    def __init__(
        self,
        *,
        fail_fast_after: int = 5,
        retry_delay: float = 0.5,
        max_retry_delay: float = 5.0,
        probe_interval: Optional[float] = 0.5,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.fail_fast_after = check_size("fail_fast_after", fail_fast_after, 0)
        self.retry_delay = check_seconds("retry_delay", retry_delay, allow_zero=False)
        self.max_retry_delay = check_seconds("max_retry_delay", max_retry_delay, allow_zero=False)
        if self.max_retry_delay < self.retry_delay:
            raise ValueError(
                f"max_retry_delay ({max_retry_delay!r}) must not be less than "
                f"retry_delay ({retry_delay!r})"
            )
        self.probe_interval = check_optional_seconds(
            "probe_interval", probe_interval, allow_zero=False
        )
        self.jitter = jitter
        self.reset()

    def reset(self) -> None:
        """Forget every failure: a new pool's state (or a forked child's)."""
        self.failures = 0
        """Consecutive factory failures (0 once a connect succeeds)."""
        self.retry_at: Optional[float] = None
        """When the next attempt is due; set while the circuit is open."""
        self.probing = False
        """Whether one attempt (a caller's or the probe thread's) is under way while open."""
        self.last_error: Optional[BaseException] = None
        """The last factory error, which a refusal is chained to."""
        self.unavailable = 0
        """Connects refused while open (the ``unavailable`` counter of PoolStats)."""
        self.prober = False
        """Whether the pool's probe thread runs."""

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``, as PoolStats says."""
        if self.retry_at is None:
            return "closed"
        return "half-open" if self.probing else "open"

    def admit(self, now: float) -> Optional[bool]:
        """May a caller connect at ``now``? False: yes, as usual; True: yes, as
        the circuit's probe (tell :meth:`failed` so); None: no, fail fast (counted
        in ``unavailable``)."""
        if self.retry_at is None:
            return False
        if self.probing or self.prober or now < self.retry_at:
            self.unavailable += 1
            return None
        self.probing = True
        return True

    def succeeded(self) -> bool:
        """A connect succeeded: close the circuit. Whether it was open."""
        recovered = self.retry_at is not None
        self.failures = 0
        self.retry_at = None
        self.probing = False
        self.last_error = None
        return recovered

    def failed(self, exc: BaseException, probe: bool, now: float) -> Optional[Trip]:
        """A connect (the probe, if ``probe``) raised ``exc`` at ``now``.

        None when it says nothing new about the server: an interruption
        (``KeyboardInterrupt``), or a connect that was under way when the
        circuit opened (the same outage, counted already).
        """
        if probe:
            self.probing = False
        if not isinstance(exc, Exception):
            return None
        self.last_error = exc
        if self.retry_at is not None and not probe:
            return None
        self.failures += 1
        over = self.failures - self.fail_fast_after
        if not self.fail_fast_after or over < 0:
            return Trip(self.failures, over, None, False)
        start_prober = False
        if self.probe_interval is not None:
            delay = self.probe_interval
            start_prober = not self.prober
            self.prober = True
        else:
            delay = min(self.max_retry_delay, self.retry_delay * 2.0**over)
        delay *= self.jitter(0.75, 1.25)
        self.retry_at = now + delay
        return Trip(self.failures, over, delay, start_prober)

    def probe_due(self, now: float) -> Optional[float]:
        """The probe thread's step at ``now``: seconds to sleep first (> 0), 0
        to probe now (the circuit is half-open from here), or None when the
        circuit is closed and the thread is to end."""
        if self.retry_at is None:
            self.prober = False
            return None
        delay = self.retry_at - now
        if delay > 0:
            assert self.probe_interval is not None
            return min(delay, self.probe_interval * 1.25)
        self.probing = True
        return 0.0

    def stop_probing(self) -> None:
        """The probe thread ends (the pool closed, or its step was interrupted)."""
        self.prober = False
        self.probing = False
