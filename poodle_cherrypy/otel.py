"""OpenTelemetry metrics for poodle pools, with the semantic conventions' names.

Needs ``opentelemetry-api`` (``pip install 'poodle_cherrypy[otel]'``) and, to
export anything, an SDK set up by the application::

    from opentelemetry.sdk.metrics import MeterProvider
    from poodle_cherrypy import otel

    otel.instrument(meter_provider=provider)   # every pool of the engine's PoodlePlugin
    otel.instrument([pool])                    # given pools, the global MeterProvider

What is emitted, each with ``db.client.connection.pool.name``:

=========================================  =============  ================  =============
instrument                                 kind           unit              from
=========================================  =============  ================  =============
``db.client.connection.count``             UpDownCounter  ``{connection}``  ``idle``,
                                                                            ``in_use``
``db.client.connection.idle.max``          UpDownCounter  ``{connection}``  ``max_size``
``db.client.connection.idle.min``          UpDownCounter  ``{connection}``  ``min_size``
``db.client.connection.max``               UpDownCounter  ``{connection}``  ``max_size``
``db.client.connection.pending_requests``  UpDownCounter  ``{request}``     ``waiting``
``db.client.connection.timeouts``          Counter        ``{timeout}``     ``timeouts``
``db.client.connection.create_time``       Histogram      ``s``             each connect
``db.client.connection.wait_time``         Histogram      ``s``             each checkout
``db.client.connection.use_time``          Histogram      ``s``             each return
=========================================  =============  ================  =============

``db.client.connection.count`` has ``db.client.connection.state`` =
``idle`` or ``used``. The up-down counters and the counter are observable:
read from :meth:`Pool.stats` when the SDK collects. The histograms are
recorded value by value, through a timing listener of each pool
(:meth:`Pool.add_timing_listener`), with the pool's own bucket bounds as the
explicit-bucket advice: the OpenTelemetry API takes no pre-aggregated
histogram, and recording each value keeps sum, count and buckets exact, equal
to the pool's own histograms for what happened after :func:`instrument`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation

from .metrics import (
    COUNT,
    COUNT_STATES,
    GAUGES,
    HISTOGRAMS,
    POOL_NAME,
    STATE,
    TIMEOUTS,
    MetricSpec,
    PoolSource,
    checked_source,
    pools_of,
)
from .pool import Pool
from .stats import BUCKET_BOUNDS

__all__ = ["Instrumentation", "instrument"]

#: The instrumentation scope's name.
SCOPE = "poodle_cherrypy"


class Instrumentation:
    """What :func:`instrument` returns: the instruments of a set of pools on
    one meter; :meth:`uninstrument` stops them."""

    def __init__(
        self, source: PoolSource, meter: Meter, attributes: Mapping[str, Any]
    ) -> None:
        self._source = source
        self._attributes = dict(attributes)
        self._lock = threading.Lock()
        self._listened: dict[int, tuple[Pool[Any], Any]] = {}  # id(pool): (pool, listener)
        self._stopped = False
        self._histograms: dict[str, Histogram] = {
            spec.field: _histogram(meter, spec) for spec in HISTOGRAMS
        }
        meter.create_observable_up_down_counter(
            COUNT.name, [self._observe_count], unit=COUNT.unit, description=COUNT.description
        )
        for spec in GAUGES:
            meter.create_observable_up_down_counter(
                spec.name, [self._observer(spec)], unit=spec.unit, description=spec.description
            )
        meter.create_observable_counter(
            TIMEOUTS.name, [self._observer(TIMEOUTS)], unit=TIMEOUTS.unit,
            description=TIMEOUTS.description,
        )
        self._pools()

    def uninstrument(self) -> None:
        """Stop recording and observing (the SDK keeps the instruments, which
        report nothing more)."""
        with self._lock:
            self._stopped = True
            listened = list(self._listened.values())
            self._listened.clear()
        for pool, listener in listened:
            pool.remove_timing_listener(listener)

    def _pools(self) -> list[tuple[str, Pool[Any]]]:
        """The pools now, each with a timing listener (pools that appeared
        since the last collection get theirs now)."""
        pools = pools_of(self._source)
        with self._lock:
            if self._stopped:
                return []
            for name, pool in pools:
                if id(pool) not in self._listened:
                    listener = self._listener({**self._attributes, POOL_NAME: name})
                    self._listened[id(pool)] = (pool, listener)
                    pool.add_timing_listener(listener)
        return pools

    def _listener(self, attributes: dict[str, Any]) -> Any:
        histograms = self._histograms

        def record(metric: str, seconds: float) -> None:
            histograms[metric].record(seconds, attributes)

        return record

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for name, pool in self._pools():
            stats = pool.stats()
            for state, field in COUNT_STATES:
                attributes = {**self._attributes, POOL_NAME: name, STATE: state}
                observations.append(Observation(getattr(stats, field), attributes))
        return observations

    def _observer(self, spec: MetricSpec) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(spec.value(pool.stats()), {**self._attributes, POOL_NAME: name})
                for name, pool in self._pools()
            ]

        return observe


def _histogram(meter: Meter, spec: MetricSpec) -> Histogram:
    try:
        return meter.create_histogram(
            spec.name,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=list(BUCKET_BOUNDS),
        )
    except TypeError:  # opentelemetry-api before 1.23 takes no advice
        return meter.create_histogram(spec.name, unit=spec.unit, description=spec.description)


def instrument(
    pools: PoolSource = None,
    *,
    meter_provider: Optional[MeterProvider] = None,
    attributes: Optional[Mapping[str, Any]] = None,
) -> Instrumentation:
    """Emit the semantic-convention metrics of ``pools`` on ``meter_provider``.

    ``pools``: None (the default) for every pool of the
    :class:`~poodle_cherrypy.PoodlePlugin` on ``cherrypy.engine``, a plugin
    for its pools (both looked up at each collection, so pools declared later
    are included from then on), or a :class:`~poodle_cherrypy.Pool` or an
    iterable of them. ``meter_provider``: default, the global one
    (``opentelemetry.metrics.get_meter_provider()``). ``attributes`` are added
    to every measurement (``db.client.connection.pool.name`` is set per pool).

    Call it once per set of pools and provider: each call adds its own
    instruments. Returns an :class:`Instrumentation`, whose ``uninstrument()``
    stops it.
    """
    source = checked_source(pools)
    attributes = dict(attributes or {})
    for key in attributes:
        if not isinstance(key, str):
            raise TypeError(f"attribute names must be str, got {key!r}")
    meter = metrics.get_meter(SCOPE, _version(), meter_provider=meter_provider)
    return Instrumentation(source, meter, attributes)


def _version() -> str:
    from . import __version__

    return __version__
