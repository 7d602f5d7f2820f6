"""A point-in-time snapshot of a pool's state and counters."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["PoolStats"]


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """What :meth:`Pool.stats` returns: a frozen, consistent snapshot.

    The gauges (``size``, ``idle``, ``in_use``, ``pending``, ``waiting``) were
    read under the pool's lock at one instant, so ``size == idle + in_use +
    pending`` always holds in a snapshot. The counters only grow, from the
    pool's construction (a fork starts them afresh in the child).
    """

    name: str
    """The pool's name, as used in its log lines and errors."""
    closed: bool
    """Whether the pool was closed when the snapshot was taken."""
    min_size: int
    """Connections the pool keeps open even when idle."""
    max_size: int
    """Most connections the pool opens at once."""
    size: int
    """Connections open or being opened (idle + in_use + pending)."""
    idle: int
    """Open connections waiting in the pool to be checked out."""
    in_use: int
    """Connections checked out by a caller (a thread's nested ``get()`` counts once)."""
    pending: int
    """Connections the factory is opening right now."""
    waiting: int
    """Callers waiting for a connection."""
    created: int
    """Connections the factory opened successfully."""
    discarded: int
    """Connections the pool disposed of (broken, expired, retired, excess or closed)."""
    checkouts: int
    """Successful outermost ``get()`` calls."""
    timeouts: int
    """``get()`` calls that ended in :class:`PoolTimeout`."""
    rejected: int
    """``get()`` calls refused with :class:`TooManyWaiters`."""
    errors: int
    """Factory calls that raised."""
    leaks: int
    """Connections reported as held longer than ``leak_timeout``."""
    unavailable: int
    """Connection attempts refused with :class:`PoolUnavailable` (circuit open)."""
    connect_failures: int
    """Factory failures in a row, up to now (0 once a connect succeeds)."""
    circuit: str
    """``"closed"`` (connecting normally), ``"open"`` (failing fast) or
    ``"half-open"`` (one caller is trying the factory again)."""

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict of str, int and bool: ``json.dumps`` takes it."""
        return dataclasses.asdict(self)
