"""A health endpoint for load balancers: :class:`PoodleHealth`.

Mount it anywhere in a CherryPy app; it answers ``GET`` with the state of the
engine's pools, as JSON, and a status a load balancer's check can act on::

    class Root:
        health = PoodleHealth(ping=drivers.psycopg_check)

    # HAProxy:  option httpchk GET /health
    #           server app1 10.0.0.1:8000 check inter 2s fall 2 rise 2

- **200** ``{"status": "ok", "pid": ..., "pools": {name: {...}}}`` when every
  pool can serve;
- **503** ``{"status": "unavailable", ...}`` while a pool cannot serve: with
  ``ping``, while a connection cannot be checked out and pinged; without,
  while its circuit breaker is not closed (its database unreachable: see the
  ``fail_fast_after`` option of :class:`~poodle_cherrypy.Pool`). Each pool's
  entry says why (``"reason"``).

The balancer then takes the node out of rotation while its database path is
down and puts it back when it recovers, with no traffic needed to find out:
the pool's probe thread (``probe_interval``) reconnects by itself, or, with
``probe_interval=None``, the health check's own checkout is the pool's retry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional

import cherrypy

from .errors import PoolTimeout, PoolUnavailable, TooManyWaiters
from .plugin import PoodlePlugin

__all__ = ["PoodleHealth"]


class PoodleHealth:
    """A CherryPy handler (``exposed``) answering 200, or 503 while a pool cannot serve.

    - ``pools``: the names of the pools to report and judge (default: every
      pool of the engine's :class:`~poodle_cherrypy.PoodlePlugin`).
    - ``ping``: a callable run on a connection checked out of each pool at
      each check (``poodle_cherrypy.drivers.psycopg_check``,
      ``pymysql_check``, ``redis_check``): one round trip that proves the
      database answers, and that finds a lost connection before a request
      does. None (the default): the pools' state only, no database traffic;
      a database lost while connections sit idle then shows only once a
      request has failed on them and reconnecting has failed
      ``fail_fast_after`` times.
    - ``timeout`` (1.0): seconds the check waits for a connection. A pool
      whose connections are all in use is busy, not down: that answers 200,
      with ``"reason": "busy"``.
    - ``bus``: the engine (default ``cherrypy.engine``).

    Each pool's entry holds its ``circuit``, ``size``, ``idle``, ``in_use``
    and ``waiting`` (see :class:`~poodle_cherrypy.PoolStats`), ``ok`` and a
    ``reason`` (None when ok). No DSN, no password.
    """

    exposed = True

    def __init__(
        self,
        pools: Optional[Sequence[str]] = None,
        *,
        ping: Optional[Callable[[Any], Any]] = None,
        timeout: float = 1.0,
        bus: Any = None,
    ) -> None:
        if pools is not None and (
            isinstance(pools, str) or not all(isinstance(name, str) for name in pools)
        ):
            raise TypeError(f"pools must be a sequence of pool names, got {pools!r}")
        if ping is not None and not callable(ping):
            raise TypeError(f"ping must be callable, got {ping!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.pools = None if pools is None else tuple(pools)
        """The names of the pools judged (None: all)."""
        self.ping = ping
        """The round trip run on each pool's connection, or None."""
        self.timeout = float(timeout)
        """Seconds a check waits for a connection."""
        self.bus = bus

    def __call__(self, **params: Any) -> bytes:
        """The JSON answer; sets the status (200 or 503)."""
        report = self.report()
        response = cherrypy.serving.response
        response.status = 200 if report["status"] == "ok" else 503
        response.headers["Content-Type"] = "application/json"
        response.headers["Cache-Control"] = "no-store"
        return json.dumps(report).encode()

    def report(self) -> dict[str, Any]:
        """What ``GET`` answers, as a dict (``"status"``: ``"ok"`` or ``"unavailable"``)."""
        try:
            pools = PoodlePlugin.for_bus(self.bus).pools
        except LookupError:
            pools = {}
        names = sorted(pools) if self.pools is None else list(self.pools)
        entries = {}
        for name in names:
            pool = pools.get(name)
            entries[name] = (
                {"ok": False, "reason": "no such pool"} if pool is None else self._judge(pool)
            )
        ok = all(entry["ok"] for entry in entries.values())
        return {"status": "ok" if ok else "unavailable", "pid": os.getpid(), "pools": entries}

    def _judge(self, pool: Any) -> dict[str, Any]:
        reason: Optional[str] = None
        stats = pool.stats()
        if stats.closed:
            reason = "closed"
        elif self.ping is not None:
            # Even with the circuit open: it fails at once (PoolUnavailable)
            # while the probe thread retries; with probe_interval=None the
            # checkout is the pool's retry when one is due.
            try:
                with pool.get(timeout=self.timeout) as conn:
                    self.ping(conn)
            except (PoolTimeout, TooManyWaiters):  # all in use, max_waiting callers waiting
                reason = "busy"
            except PoolUnavailable:
                reason = "circuit open"
            except Exception as exc:
                reason = f"ping failed: {type(exc).__name__}"
            stats = pool.stats()
        elif stats.circuit != "closed":
            reason = f"circuit {stats.circuit}"
        return {
            "ok": reason in (None, "busy"),
            "reason": reason,
            "circuit": stats.circuit,
            "size": stats.size,
            "idle": stats.idle,
            "in_use": stats.in_use,
            "waiting": stats.waiting,
        }
