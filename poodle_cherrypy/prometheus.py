"""Prometheus metrics for poodle pools: a collector, and a page serving them.

Needs ``prometheus_client`` (``pip install 'poodle_cherrypy[prometheus]'``)::

    from prometheus_client import REGISTRY
    from poodle_cherrypy.prometheus import MetricsPage, PoolCollector

    REGISTRY.register(PoolCollector())          # every pool of the engine's PoodlePlugin
    cherrypy.tree.mount(MetricsPage(), "/metrics")

The metric names are the ones OpenTelemetry's Prometheus exporter makes of
the semantic conventions (dots become underscores, a counter gets ``_total``,
a histogram in seconds gets ``_seconds``); the labels are ``pool_name`` and,
on ``db_client_connection_count``, ``state`` (``idle`` or ``used``):

=============================================  =========  ==========================
metric                                         type       from :class:`PoolStats`
=============================================  =========  ==========================
``db_client_connection_count{state="idle"}``   gauge      ``idle``
``db_client_connection_count{state="used"}``   gauge      ``in_use``
``db_client_connection_idle_max``              gauge      ``max_size``
``db_client_connection_idle_min``              gauge      ``min_size``
``db_client_connection_max``                   gauge      ``max_size``
``db_client_connection_pending_requests``      gauge      ``waiting``
``db_client_connection_timeouts_total``        counter    ``timeouts``
``db_client_connection_create_time_seconds``   histogram  ``create_time``
``db_client_connection_wait_time_seconds``     histogram  ``wait_time``
``db_client_connection_use_time_seconds``      histogram  ``use_time``
=============================================  =========  ==========================

Every value comes from one :meth:`Pool.stats` snapshot per pool and scrape,
so a scrape is consistent; the histograms' buckets are the pool's own
(:data:`~poodle_cherrypy.BUCKET_BOUNDS`), exact rather than re-sampled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Optional

import cherrypy
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .metrics import (
    COUNT,
    COUNT_STATES,
    GAUGES,
    HISTOGRAMS,
    TIMEOUTS,
    MetricSpec,
    PoolSource,
    checked_source,
    pools_of,
)

__all__ = ["MetricsPage", "PoolCollector", "prometheus_name"]


def prometheus_name(name: str, unit: str) -> str:
    """The name OpenTelemetry's Prometheus exporter gives the metric ``name``
    in ``unit``: ``db.client.connection.wait_time`` in ``s`` is
    ``db_client_connection_wait_time_seconds`` (a counter's ``_total`` is
    added by ``prometheus_client``)."""
    base = name.replace(".", "_")
    return base + "_seconds" if unit == "s" else base


_UNIT = "seconds"  # what an OpenMetrics exposition gives as the histograms' unit


def _name(spec: MetricSpec) -> str:
    return prometheus_name(spec.name, spec.unit)


class PoolCollector(Collector):
    """A ``prometheus_client`` collector of the pools of ``pools`` (see
    :data:`~poodle_cherrypy.metrics.PoolSource`; default: every pool of the
    :class:`~poodle_cherrypy.PoodlePlugin` on ``cherrypy.engine``, looked up
    at each scrape).

    ``labels`` are added to every sample, for instance ``{"worker": "3"}`` to
    tell apart the processes that serve one app (see docs/observability.rst).
    Register it once: ``REGISTRY.register(PoolCollector())``.
    """

    def __init__(self, pools: PoolSource = None, *, labels: Optional[Mapping[str, str]] = None):
        self._source = checked_source(pools)
        labels = dict(labels or {})
        for key, value in labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"labels must map str to str, got {key!r}: {value!r}")
            if key in ("pool_name", "state", "le"):
                raise ValueError(f"label {key!r} is the collector's own; choose another name")
        self._label_names = ["pool_name", *labels]
        self._label_values = list(labels.values())

    def collect(self) -> Iterator[Metric]:
        """One metric family per metric, with a sample per pool."""
        names = self._label_names
        count = GaugeMetricFamily(_name(COUNT), COUNT.description, labels=[*names, "state"])
        gauges = [
            (spec, GaugeMetricFamily(_name(spec), spec.description, labels=names))
            for spec in GAUGES
        ]
        timeouts = CounterMetricFamily(_name(TIMEOUTS), TIMEOUTS.description, labels=names)
        histograms = [
            (spec, HistogramMetricFamily(_name(spec), spec.description, labels=names, unit=_UNIT))
            for spec in HISTOGRAMS
        ]
        for name, pool in pools_of(self._source):
            stats = pool.stats()
            values = [name, *self._label_values]
            for state, field in COUNT_STATES:
                count.add_metric([*values, state], getattr(stats, field))
            for spec, family in gauges:
                family.add_metric(values, spec.value(stats))
            timeouts.add_metric(values, stats.timeouts)
            for spec, histogram in histograms:
                h = spec.value(stats)
                buckets: list[tuple[str, float]] = [
                    (repr(float(bound)), float(n))
                    for bound, n in zip(h.bounds, h.buckets, strict=False)
                ]
                buckets.append(("+Inf", float(h.count)))
                histogram.add_metric(values, buckets, sum_value=h.sum)
        yield count
        for _, family in gauges:
            yield family
        yield timeouts
        for _, histogram in histograms:
            yield histogram


class MetricsPage:
    """A CherryPy handler serving ``registry`` (default: ``prometheus_client``'s
    global ``REGISTRY``) in the text exposition format, or in OpenMetrics when
    the scraper asks for it (``Accept``). Mount it where Prometheus scrapes:
    ``cherrypy.tree.mount(MetricsPage(), "/metrics")``, or as an attribute
    of a root (``root.metrics = MetricsPage()``)."""

    exposed = True

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = REGISTRY if registry is None else registry

    def __call__(self, **params: Any) -> bytes:
        """The exposition of every metric of the registry."""
        encoder, content_type = choose_encoder(cherrypy.request.headers.get("Accept", ""))
        cherrypy.response.headers["Content-Type"] = content_type
        body: bytes = encoder(self.registry)
        return body
