"""What a pool exports as metrics, whatever the exporter: the names, kinds and
units of OpenTelemetry's semantic conventions for database client connection
pools (``db.client.connection.*``), and which pools to read.

The exporters, :mod:`poodle_cherrypy.otel` and :mod:`poodle_cherrypy.prometheus`,
both read :meth:`Pool.stats() <poodle_cherrypy.Pool.stats>` through this module,
so that they cannot disagree on a name or a value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Union

from .plugin import PoodlePlugin
from .pool import Pool
from .stats import PoolStats

__all__ = [
    "GAUGES",
    "HISTOGRAMS",
    "POOL_NAME",
    "STATE",
    "TIMEOUTS",
    "MetricSpec",
    "PoolSource",
    "checked_source",
    "pools_of",
]

#: The attribute naming the pool on every metric.
POOL_NAME = "db.client.connection.pool.name"
#: The attribute of ``db.client.connection.count``: ``"idle"`` or ``"used"``.
STATE = "db.client.connection.state"

#: Where the pools to export come from: ``None`` (the pools of the
#: :class:`PoodlePlugin` on ``cherrypy.engine``, looked up at each
#: collection, so pools added later count), a :class:`PoodlePlugin` (its
#: pools, at each collection), one :class:`Pool`, or an iterable of them.
PoolSource = Union[None, PoodlePlugin, Pool[Any], Iterable[Pool[Any]]]


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric: its semantic-convention name, instrument kind, unit and
    description, and the :class:`~poodle_cherrypy.PoolStats` field it reads."""

    name: str
    """The OpenTelemetry name, such as ``db.client.connection.max``."""
    kind: str
    """``"updowncounter"``, ``"counter"`` or ``"histogram"``."""
    unit: str
    """The UCUM unit: ``{connection}``, ``{request}``, ``{timeout}`` or ``s``."""
    description: str
    """What it measures, as the conventions put it (and what it is here)."""
    field: str
    """The :class:`~poodle_cherrypy.PoolStats` field it reads."""

    def value(self, stats: PoolStats) -> Any:
        """The metric's value in ``stats``."""
        return getattr(stats, self.field)


#: ``db.client.connection.count``, by ``db.client.connection.state``:
#: ``idle`` connections and ``used`` ones (checked out). Connections being
#: opened are in neither.
COUNT_STATES = (("idle", "idle"), ("used", "in_use"))
COUNT = MetricSpec(
    "db.client.connection.count",
    "updowncounter",
    "{connection}",
    "The number of connections that are currently in state described by the state attribute",
    "size",
)

#: The up-down counters that read one field each.
GAUGES = (
    MetricSpec(
        "db.client.connection.idle.max",
        "updowncounter",
        "{connection}",
        "The maximum number of idle open connections allowed (the pool's max_size)",
        "max_size",
    ),
    MetricSpec(
        "db.client.connection.idle.min",
        "updowncounter",
        "{connection}",
        "The minimum number of idle open connections allowed (the pool's min_size)",
        "min_size",
    ),
    MetricSpec(
        "db.client.connection.max",
        "updowncounter",
        "{connection}",
        "The maximum number of open connections allowed",
        "max_size",
    ),
    MetricSpec(
        "db.client.connection.pending_requests",
        "updowncounter",
        "{request}",
        "The number of current pending requests for an open connection (callers waiting)",
        "waiting",
    ),
)

TIMEOUTS = MetricSpec(
    "db.client.connection.timeouts",
    "counter",
    "{timeout}",
    "The number of connection timeouts that have occurred trying to obtain a connection "
    "from the pool",
    "timeouts",
)

HISTOGRAMS = (
    MetricSpec(
        "db.client.connection.create_time",
        "histogram",
        "s",
        "The time it took to create a new connection",
        "create_time",
    ),
    MetricSpec(
        "db.client.connection.wait_time",
        "histogram",
        "s",
        "The time it took to obtain an open connection from the pool",
        "wait_time",
    ),
    MetricSpec(
        "db.client.connection.use_time",
        "histogram",
        "s",
        "The time between borrowing a connection and returning it to the pool",
        "use_time",
    ),
)


def pools_of(source: PoolSource) -> list[tuple[str, Pool[Any]]]:
    """``(name, pool)`` for each pool of ``source`` (see :data:`PoolSource`),
    read now. A plugin's pools are named by their plugin name (``poodle.<name>``),
    others by :attr:`Pool.name <poodle_cherrypy.Pool.name>`. With ``source``
    None and no plugin on ``cherrypy.engine``, there are none."""
    if source is None:
        try:
            source = PoodlePlugin.for_bus()
        except LookupError:
            return []
    if isinstance(source, PoodlePlugin):
        return list(source.pools.items())
    if isinstance(source, Pool):
        return [(source.name, source)]
    if isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
        raise TypeError(
            f"pools must be None, a PoodlePlugin, a Pool or an iterable of Pools, got {source!r}"
        )
    pools = list(source)
    names: set[str] = set()
    for pool in pools:
        if not isinstance(pool, Pool):
            raise TypeError(f"pools must hold Pool objects only, got {pool!r}")
        if pool.name in names:
            # Their samples would carry the same labels, and a scrape refuses that.
            raise ValueError(
                f"two pools are named {pool.name!r}: give each a name of its own (Pool(name=...))"
            )
        names.add(pool.name)
    return [(pool.name, pool) for pool in pools]


def checked_source(source: PoolSource) -> PoolSource:
    """``source``, checked (a :class:`TypeError` names a bad one, a
    ``ValueError`` two pools of one name) and, if it
    is an iterable of pools, copied into a tuple: what an exporter keeps."""
    if source is None or isinstance(source, (PoodlePlugin, Pool)):
        return source
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        source = tuple(source)
    pools_of(source)
    return source
