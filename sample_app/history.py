"""The pools' recent past: a sample of every pool's gauges each second.

:class:`PoolHistory` is a CherryPy ``Monitor``: while the engine runs, a
background thread reads each pool's :meth:`~poodle_cherrypy.Pool.stats` every
``interval`` seconds into a ring buffer holding the last ``seconds``. The
status page draws it, so the chart has its history as soon as it loads.

Each sample also keeps the 99th percentile of the waits for a connection
since the previous sample (the first: since the pool was made), as
``wait_time_p99``, in seconds, None when no checkout happened in between.
It comes from the pool's wait-time histogram: an estimate within the
bucket, see :meth:`poodle_cherrypy.Histogram.quantile`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Optional

from cherrypy.process.plugins import Monitor

from poodle_cherrypy import Histogram, PoodlePlugin, Pool

__all__ = ["COLUMNS", "GAUGES", "PoolHistory"]

#: The gauges sampled, in the order each sample keeps them.
GAUGES = ("in_use", "idle", "waiting", "size")
#: Every column of a pool's history but ``t``.
COLUMNS = (*GAUGES, "max_size", "wait_time_p99")


class PoolHistory(Monitor):  # type: ignore[misc]  # cherrypy is untyped
    """Samples every pool of the bus's PoodlePlugin each ``interval`` seconds,
    keeping the last ``seconds`` of samples (the oldest are dropped)."""

    def __init__(self, bus: Any, *, seconds: float = 300.0, interval: float = 1.0) -> None:
        if not interval > 0 or not seconds >= interval:
            raise ValueError(
                f"need 0 < interval <= seconds, got interval={interval!r}, seconds={seconds!r}"
            )
        super().__init__(bus, self.sample, frequency=interval, name="sample_app pool history")
        self.interval = float(interval)
        self.seconds = float(seconds)
        self._lock = threading.Lock()
        # (unix time, {pool name: (in_use, idle, waiting, size, max_size, wait_time_p99)})
        self._samples: deque[tuple[float, dict[str, tuple[Any, ...]]]] = deque(
            maxlen=round(seconds / interval)
        )
        # Each pool's wait-time histogram at the previous sample.
        self._waits: dict[str, tuple[Pool[Any], Histogram]] = {}

    def start(self) -> None:
        """Take a first sample, then one every ``interval`` seconds."""
        self.sample()
        super().start()

    # Monitor's own priority; kept explicit since start() is overridden.
    start.priority = 70  # type: ignore[attr-defined]

    def sample(self) -> None:
        """Record the gauges of every pool now. Never raises: an exception
        would end the Monitor's thread."""
        try:
            try:
                pools = PoodlePlugin.for_bus(self.bus).pools
            except LookupError:
                return
            now = time.time()
            row = {}
            for name, pool in list(pools.items()):
                stats = pool.stats()
                with self._lock:
                    previous = self._waits.get(name)
                    self._waits[name] = (pool, stats.wait_time)
                waits = stats.wait_time
                if previous is not None and previous[0] is pool:
                    waits = waits.since(previous[1])
                p99 = waits.quantile(0.99)
                row[name] = (
                    *(getattr(stats, gauge) for gauge in GAUGES),
                    stats.max_size,
                    None if p99 is None else round(p99, 6),
                )
            with self._lock:
                self._samples.append((now, row))
        except Exception:
            self.bus.log("sampling the pools failed", level=logging.ERROR, traceback=True)

    def wait_time_p99(self, name: str) -> Optional[float]:
        """The pool ``name``'s wait p99 in seconds at the latest sample (over the
        interval before it), or None (no checkout then, or no sample)."""
        with self._lock:
            for _, row in reversed(self._samples):
                if name in row:
                    value: Optional[float] = row[name][-1]
                    return value
        return None

    def as_dict(self) -> dict[str, Any]:
        """The samples, by pool, as columns: ``{"interval": 1.0, "seconds": 300.0,
        "pools": {name: {"t": [...], "in_use": [...], "idle": [...],
        "waiting": [...], "size": [...], "max_size": [...],
        "wait_time_p99": [...]}}}``; ``t`` is unix time in seconds, oldest
        first; a ``wait_time_p99`` is seconds, or None."""
        with self._lock:
            samples = list(self._samples)
        columns: dict[str, dict[str, list[Any]]] = {}
        for t, row in samples:
            for name, values in row.items():
                pool = columns.setdefault(name, {key: [] for key in ("t", *COLUMNS)})
                pool["t"].append(round(t, 3))
                for key, value in zip(COLUMNS, values, strict=True):
                    pool[key].append(value)
        return {"interval": self.interval, "seconds": self.seconds, "pools": columns}
