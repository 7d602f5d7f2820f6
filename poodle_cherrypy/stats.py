"""A point-in-time snapshot of a pool's state, counters and timing histograms."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from typing import Any, Optional

__all__ = ["BUCKET_BOUNDS", "RECENT_SECONDS", "Histogram", "PoolStats", "RecentWindow"]

#: The upper bounds, in seconds, of the buckets every pool histogram counts in:
#: from a tenth of a millisecond (a checkout that did not wait) to a minute (a
#: connect through a dead network path). A last bucket, above the highest
#: bound, counts everything longer.
BUCKET_BOUNDS: tuple[float, ...] = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A frozen snapshot of one fixed-bucket histogram of durations in seconds.

    ``buckets[i]`` is the cumulative count of the values at or under
    ``bounds[i]``, as in Prometheus (``le``); the last item,
    ``buckets[len(bounds)]``, counts everything and equals ``count``.
    """

    count: int
    """How many values were recorded."""
    sum: float
    """Their sum, in seconds."""
    bounds: tuple[float, ...]
    """The buckets' upper bounds, in seconds, increasing."""
    buckets: tuple[int, ...]
    """Cumulative counts: one per bound, then the total."""

    @property
    def mean(self) -> Optional[float]:
        """The mean value in seconds, or None when nothing was recorded."""
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> Optional[float]:
        """An estimate of the ``q`` quantile (0 <= q <= 1) in seconds, or None
        when nothing was recorded.

        As Prometheus's ``histogram_quantile`` does, the value is interpolated
        linearly inside the bucket it falls in (the first bucket starting at
        0); one that falls above the highest bound gives that bound, so read
        ``60.0`` as "60 s or more". The true value lies in the same bucket.
        """
        if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 <= q <= 1:
            raise ValueError(f"q must be a number from 0 to 1, got {q!r}")
        if not self.count:
            return None
        rank = q * self.count
        lower = 0.0
        below = 0
        for bound, cumulative in zip(self.bounds, self.buckets, strict=False):
            if cumulative >= rank and cumulative > below:
                return lower + (bound - lower) * (rank - below) / (cumulative - below)
            lower, below = bound, cumulative
        return self.bounds[-1] if self.bounds else math.nan

    def since(self, earlier: Histogram) -> Histogram:
        """What was recorded after ``earlier``, an older snapshot of the same
        histogram: count, sum and buckets subtracted."""
        if earlier.bounds != self.bounds:
            raise ValueError("cannot subtract histograms with different bounds")
        return Histogram(
            count=self.count - earlier.count,
            sum=self.sum - earlier.sum,
            bounds=self.bounds,
            buckets=tuple(a - b for a, b in zip(self.buckets, earlier.buckets, strict=False)),
        )

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict of int, float and lists: ``json.dumps`` takes it."""
        return {
            "count": self.count,
            "sum": self.sum,
            "bounds": list(self.bounds),
            "buckets": list(self.buckets),
        }

    @classmethod
    def of_counts(cls, counts: list[int], total: float) -> Histogram:
        """A snapshot of per-bucket (not cumulative) ``counts`` over
        :data:`BUCKET_BOUNDS` (one more than the bounds) and their ``total``."""
        cumulative = []
        running = 0
        for n in counts:
            running += n
            cumulative.append(running)
        return cls(count=running, sum=total, bounds=BUCKET_BOUNDS, buckets=tuple(cumulative))


@dataclasses.dataclass(frozen=True)
class PoolStats:
    """What :meth:`Pool.stats` returns: a frozen, consistent snapshot.

    The gauges (``size``, ``idle``, ``in_use``, ``pending``, ``waiting``) were
    read under the pool's lock at one instant, so ``size == idle + in_use +
    pending`` always holds in a snapshot. The counters only grow, from the
    pool's construction (a fork starts them afresh in the child).

    The histograms were read at the same instant, so ``wait_time.count ==
    checkouts``, ``use_time.count == checkouts - in_use`` and
    ``create_time.count == created``.
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
    wait_time: Histogram
    """Per checkout, seconds from ``get()`` to having a connection, zero waits
    included (a checkout served at once from the idle connections counts 0)."""
    use_time: Histogram
    """Per return, seconds the connection was checked out (the outermost
    ``with`` block of a thread's nested ones)."""
    create_time: Histogram
    """Per connection the factory opened, seconds the factory call took."""

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict of str, int, float, bool, lists and
        dicts (the histograms): ``json.dumps`` takes it."""
        data = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
        }
        for key, value in data.items():
            if isinstance(value, Histogram):
                data[key] = value.as_dict()
        return data


#: Seconds of history the "recent" figures of a PoolTimeout message cover at
#: least (up to twice as much: see :class:`RecentWindow`).
RECENT_SECONDS = 60.0


class RecentWindow:
    """The recent stretch of a pool's wait and use histograms, for the figures
    a :class:`~poodle_cherrypy.PoolTimeout` message gives ("in the last 75 s:
    wait p99 0.2 s over 812 checkouts, mean use 0.04 s over 805 returns").

    It keeps two snapshots (when, wait_time, use_time), the older first, and
    counts from the older one. A new one is taken when the newest is
    ``seconds`` old, so the figures cover 1 to 2 times ``seconds`` as long as
    :meth:`mark` runs regularly (the plugin's maintenance runs every 10 s).
    Like the breaker it has no lock or clock: the pool calls it under its
    lock and gives it the time.
    """

    __slots__ = ("_marks", "seconds")

    def __init__(self, now: float, seconds: float = RECENT_SECONDS) -> None:
        empty = Histogram.of_counts([0] * (len(BUCKET_BOUNDS) + 1), 0.0)
        self.seconds = seconds
        """How old the newest snapshot gets before a new one is taken."""
        self._marks: deque[tuple[float, Histogram, Histogram]] = deque(
            [(now, empty, empty)], maxlen=2
        )

    def due(self, now: float) -> bool:
        """Whether :meth:`mark` would take a snapshot at ``now``."""
        return now - self._marks[-1][0] >= self.seconds

    def mark(self, now: float, wait_time: Histogram, use_time: Histogram) -> None:
        """Take a snapshot of the histograms as they are at ``now``, if one is due."""
        if self.due(now):
            self._marks.append((now, wait_time, use_time))

    def describe(self, now: float, wait_time: Histogram, use_time: Histogram) -> str:
        """The recent wait p99 and mean use, from the histograms as they are at ``now``."""
        since, wait_mark, use_mark = self._marks[0]
        waits = wait_time.since(wait_mark)
        uses = use_time.since(use_mark)
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
