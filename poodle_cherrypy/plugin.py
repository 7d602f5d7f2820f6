"""The CherryPy engine plugin that owns the named pools.

:class:`PoodlePlugin` opens its pools when the engine starts, runs their
maintenance on CherryPy's own :class:`~cherrypy.process.plugins.Monitor`,
recycles their connections on ``graceful`` and drains and closes them when the
engine stops. Pools are declared in Python::

    PoodlePlugin(cherrypy.engine, {"default": {"factory": sqlite3.connect,
                                               "args": ("app.db",)}}).subscribe()

or in CherryPy's global config alone (``import poodle_cherrypy`` registers the
``poodle`` namespace; see :mod:`poodle_cherrypy.config`)::

    [global]
    poodle.default.factory = "sqlite3:connect"
    poodle.default.args = ("app.db",)

A bus has at most one PoodlePlugin; the request tool and :func:`get_pool` find
the pools through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Optional, Union

import cherrypy
from cherrypy.process.plugins import Monitor, SimplePlugin

from . import cplog
from .config import build, parse_namespace
from .options import check_seconds
from .pool import Pool
from .startcheck import tool_config_problems

__all__ = ["PoodlePlugin", "find_plugin", "get_pool"]

#: Plugin options that CherryPy config may set as ``poodle.<option>``.
PLUGIN_OPTIONS = frozenset({"maintain_interval", "close_timeout"})

#: The plugin subscribed to each bus (at most one).
_plugins: dict[Any, PoodlePlugin] = {}

#: ``find_plugin(bus)``: the plugin subscribed to ``bus``, or None. It is
#: :meth:`PoodlePlugin.lookup` without the default bus, a dict's ``get``
#: (no Python frame), for code that runs on every request.
find_plugin: Callable[[Any], Optional[PoodlePlugin]] = _plugins.get


class PoodlePlugin(SimplePlugin):  # type: ignore[misc]  # cherrypy is untyped
    """Owns named pools for the life of a CherryPy engine (a WSPBus).

    ``pools`` maps a name to a :class:`~poodle_cherrypy.Pool`, a SQLAlchemy Engine on
    poodle (see :meth:`add`), or to a dict of
    Pool keyword arguments plus ``factory`` (callables may be given as
    ``"module:attribute"`` strings). ``plugin.pools[name]`` is that Pool from
    then on; constructing a pool never connects.

    - ``start`` (priority 70: after the Daemonizer forks at 65, before the
      HTTP server serves at 75) opens every pool, usable from then on; at
      priority 78, after ``DropPrivileges`` (77), so that no connection is
      opened as root, it fills each pool to ``min_size``. A pool that cannot
      connect is logged with the reason and
      stays open: its requests get 503 until the database is back. Nothing
      raises from ``start`` for want of a database; a ``tools.poodle.*`` key
      in the mounted apps' config that names an unknown pool or option, or
      has a bad value, does raise, which makes CherryPy log it and exit
      (the tree's ``cherrypy.Application`` objects are checked, those behind
      a grafted ``VirtualHost`` included; the check's own failure is logged
      and stops nothing).
      It then logs each pool's ``max_size`` against the threads
      (``server.thread_pool``) of the CherryPy HTTP servers
      (``cherrypy._cpserver.Server`` instances, such as ``cherrypy.server``)
      subscribed to the bus: a WARNING when it is larger (connections that can never all be
      in use: a thread holds one per pool), INFO otherwise (saying how many
      requests may wait when it is smaller). Nothing when no CherryPy server
      serves (under gunicorn or uWSGI, see :mod:`poodle_cherrypy.wsgi`).
    - every ``maintain_interval`` seconds (10.0; 0 turns it off) each pool's
      ``maintain()`` runs on a CherryPy ``Monitor`` thread; an error there is
      logged and the next run goes ahead.
    - ``graceful`` (SIGUSR1) recycles every pool's connections.
    - ``stop`` and ``exit`` (after the HTTP server has stopped serving) close
      the pools, giving connections still in use ``close_timeout`` seconds
      (5.0) in all to come back. ``start`` after ``stop`` reopens them.
    """

    def __init__(
        self,
        bus: Any,
        pools: Optional[Mapping[str, Union[Pool[Any], Mapping[str, Any], Any]]] = None,
        *,
        maintain_interval: float = 10.0,
        close_timeout: float = 5.0,
    ) -> None:
        super().__init__(bus)
        self.pools: dict[str, Pool[Any]] = {}
        """The pools by name."""
        self.bindings: dict[str, Any] = {}
        """The :class:`~poodle_cherrypy.sqlalchemy.RequestBinding` (Engine and
        Session factory) of each pool declared for SQLAlchemy, by pool name."""
        self.maintain_interval = check_seconds("maintain_interval", maintain_interval)
        """Seconds between two maintenance runs (0: none); read at ``start``."""
        self.close_timeout = check_seconds("close_timeout", close_timeout)
        """Seconds ``stop`` waits in all for connections still in use."""
        self._specs: dict[str, dict[str, Any]] = {}  # of the pools declared in config
        self._monitor: Optional[Monitor] = None
        self._running = False
        if pools is not None:
            if not isinstance(pools, Mapping):
                raise TypeError(f"pools must be a mapping of name to Pool or dict, got {pools!r}")
            for name, pool in pools.items():
                self.add(name, pool)

    # -- declaring pools -----------------------------------------------------

    def add(self, name: str, pool: Union[Pool[Any], Mapping[str, Any], Any]) -> Pool[Any]:
        """Add the pool ``name`` and return it.

        ``pool`` is a Pool, a dict of its options (with ``sqlalchemy_url``, a
        pool for SQLAlchemy: see :mod:`poodle_cherrypy.config`), or a SQLAlchemy
        Engine made by :func:`poodle_cherrypy.sqlalchemy.create_engine` (or a
        :class:`~poodle_cherrypy.sqlalchemy.RequestBinding` of one), whose
        poodle pool it adds; the request tool then gives each request a
        Session on the request's connection. Added to a running plugin, the
        pool is opened at once.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a pool's name must be a non-empty str, got {name!r}")
        if name in self.pools:
            raise ValueError(f"pool {name!r} is declared already")
        binding = None
        if not isinstance(pool, Pool):
            if isinstance(pool, Mapping):
                pool, binding = build(name, pool, f"pools[{name!r}]")
            else:
                binding = _binding_of(name, pool)
                pool = binding.pool
        self.pools[name] = pool
        if binding is not None:
            self.bindings[name] = binding
        if self._running:
            self._open(name, pool)
        return pool

    def _declare(self, name: str, spec: Mapping[str, Any]) -> None:
        """Declare (or redeclare) a pool from ``poodle.<name>.*`` config keys."""
        prefix = f"poodle.{name}"
        merged = {**self._specs.get(name, {}), **spec}
        old = self.pools.get(name)
        if old is not None:
            if name not in self._specs:
                raise ValueError(f"{prefix}: pool {name!r} was added in Python already")
            if merged == self._specs[name]:
                return  # the same declaration again (a config file read twice)
            if self._running:
                raise ValueError(
                    f"{prefix}: pool {name!r} is running; stop the engine before redeclaring it"
                )
        pool, binding = build(name, merged, prefix)
        if old is not None:
            old.close(timeout=0)
        self.pools[name] = pool
        if binding is not None:
            self.bindings[name] = binding
        else:
            self.bindings.pop(name, None)
        self._specs[name] = merged
        if self._running:
            self._open(name, pool)

    @classmethod
    def lookup(cls, bus: Any = None) -> Optional[PoodlePlugin]:
        """The plugin subscribed to ``bus`` (default ``cherrypy.engine``), or None."""
        return _plugins.get(cherrypy.engine if bus is None else bus)

    @classmethod
    def for_bus(cls, bus: Any = None) -> PoodlePlugin:
        """The plugin subscribed to ``bus`` (default ``cherrypy.engine``).

        Raises ``LookupError`` when there is none.
        """
        plugin = cls.lookup(bus)
        if plugin is None:
            raise LookupError(
                "no PoodlePlugin is subscribed to this engine: declare a pool in config "
                "(poodle.<name>.factory = 'module:callable') or subscribe a PoodlePlugin"
            )
        return plugin

    # -- bus channels --------------------------------------------------------

    def subscribe(self) -> None:
        """Subscribe to the bus's channels; a bus takes one PoodlePlugin."""
        other = _plugins.get(self.bus)
        if other is not None and other is not self:
            raise ValueError(
                "a PoodlePlugin is subscribed to this bus already: add pools to it "
                "(PoodlePlugin.for_bus(bus).add(name, pool)) instead"
            )
        _plugins[self.bus] = self
        super().subscribe()
        self.bus.subscribe("start", self._prefill, priority=78)  # see _prefill

    def unsubscribe(self) -> None:
        """Unsubscribe from the bus (the pools are left as they are)."""
        super().unsubscribe()
        self.bus.unsubscribe("start", self._prefill)
        if _plugins.get(self.bus) is self:
            del _plugins[self.bus]

    def start(self) -> None:
        """Open every pool (without connecting) and start the maintenance thread."""
        cplog.route(self)
        problems = self._check_tool_config()
        if problems:
            for problem in problems:
                self.bus.log(f"poodle: {problem}", level=logging.ERROR)
            # Raising from a start listener makes CherryPy log it and exit.
            raise ValueError("poodle: bad tool config: " + "; ".join(problems))
        self._running = True
        for pool in list(self.pools.values()):
            pool.open(fill=False)
        for message, level in _sizing(self.pools, self.bus):
            self.bus.log(f"poodle: {message}", level=level)
        if self.maintain_interval and self._monitor is None:
            self._monitor = Monitor(
                self.bus, self.maintain, frequency=self.maintain_interval, name="poodle maintain"
            )
            self._monitor.start()

    # After the Daemonizer's fork (65), so no connection crosses it, and
    # before the HTTP server starts serving (75), so requests find pools open.
    start.priority = 70  # type: ignore[attr-defined]

    def _prefill(self) -> None:
        """Fill every pool to ``min_size`` (a ``start`` listener)."""
        if self._running:
            for name, pool in list(self.pools.items()):
                self._open(name, pool)

    # After DropPrivileges (77): a connection opened before it would
    # authenticate as root (peer auth), the later ones as the dropped user.
    _prefill.priority = 78  # type: ignore[attr-defined]

    def _check_tool_config(self) -> list[str]:
        """The tool config mistakes; log the doubts, and a bug of the check itself."""
        warnings: list[str] = []
        try:
            problems = tool_config_problems(self.pools, warnings)
        except Exception:
            # Only a config mistake may stop the engine, never the check's own bug.
            self.bus.log(
                "poodle: checking the tools config failed; starting without the check",
                level=logging.ERROR, traceback=True,
            )
            return []
        for warning in warnings:
            self.bus.log(f"poodle: {warning}", level=logging.WARNING)
        return problems

    def stop(self) -> None:
        """Stop maintenance, then close every pool (idempotent)."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        if not self._running:
            cplog.unroute(self)
            return
        self._running = False
        deadline = time.monotonic() + self.close_timeout
        for name, pool in list(self.pools.items()):
            pool.close(timeout=max(0.0, deadline - time.monotonic()))
            self.bus.log(f"poodle: closed pool {name!r}")
        cplog.unroute(self)

    # After the HTTP server (25) has stopped serving and its requests ended.
    stop.priority = 50  # type: ignore[attr-defined]

    def exit(self) -> None:
        """Close every pool, as ``stop`` does."""
        self.stop()

    def graceful(self) -> None:
        """Recycle every pool's connections (SIGUSR1): new ones replace them."""
        for name, pool in list(self.pools.items()):
            pool.recycle()
            self.bus.log(f"poodle: recycled pool {name!r}")

    def maintain(self) -> None:
        """Run every pool's ``maintain()``; log errors, never raise them."""
        for name, pool in list(self.pools.items()):
            try:
                pool.maintain()
            except Exception:
                # A Monitor thread dies at the first exception it sees.
                self.bus.log(
                    f"poodle: maintaining pool {name!r} failed", level=logging.ERROR, traceback=True
                )

    def _open(self, name: str, pool: Pool[Any]) -> None:
        try:
            pool.open(wait=True)
        except Exception as exc:
            self.bus.log(
                f"poodle: pool {name!r} is open but could not connect ({exc!r}); its requests "
                f"get 503 until it can",
                level=logging.ERROR,
            )
        else:
            self.bus.log(f"poodle: opened pool {name!r} ({pool.stats().size} connections)")


def _binding_of(name: str, engine: Any) -> Any:
    """The RequestBinding of ``engine`` (an Engine, or a RequestBinding itself)."""
    try:
        from .sqlalchemy import RequestBinding
    except ImportError:
        raise TypeError(
            f"pools[{name!r}]: a pool is declared by a Pool or a dict of Pool options, "
            f"got {engine!r}"
        ) from None
    if isinstance(engine, RequestBinding):
        return engine
    if not hasattr(engine, "pool") or not hasattr(engine, "connect"):
        raise TypeError(
            f"pools[{name!r}]: a pool is declared by a Pool or a dict of Pool options "
            f"(or a SQLAlchemy Engine on poodle), got {engine!r}"
        )
    try:
        return RequestBinding(engine)
    except TypeError as exc:
        raise TypeError(f"pools[{name!r}]: {exc}") from None


def get_pool(name: str = "default", bus: Any = None) -> Pool[Any]:
    """The pool ``name`` of the PoodlePlugin on ``bus`` (default ``cherrypy.engine``).

    For helper code inside a request: ``with get_pool().get() as conn:`` yields
    the request's own connection (same transaction) when ``tools.poodle``
    checked it out. Raises ``LookupError`` naming the pools there are.
    """
    plugin = PoodlePlugin.for_bus(bus)
    try:
        return plugin.pools[name]
    except KeyError:
        raise LookupError(
            f"no pool named {name!r}; the pools are {sorted(plugin.pools)}"
        ) from None


# -- sizing ----------------------------------------------------------------


def _server_threads(bus: Any) -> Optional[int]:
    """The worker threads of the CherryPy HTTP servers that start with ``bus``, or
    None if none does (under gunicorn or uWSGI, which serve instead)."""
    from cherrypy._cpserver import Server

    servers = {
        id(owner): owner
        for listener in list(bus.listeners.get("start", ()))
        if isinstance(owner := getattr(listener, "__self__", None), Server)
    }
    if not servers:
        return None
    return sum(int(server.thread_pool) for server in servers.values())


def _sizing(pools: Mapping[str, Pool[Any]], bus: Any) -> list[tuple[str, int]]:
    """A log line (and level) per pool: its ``max_size`` against the threads of
    the CherryPy server it serves. A thread holds at most one connection of a
    pool (it is reentrant), so more connections than threads are never all in
    use, and fewer make requests wait."""
    threads = _server_threads(bus)
    if threads is None:
        return []
    lines = []
    for name, pool in list(pools.items()):
        size = pool.stats().max_size
        if size > threads:
            lines.append((
                f"pool {name!r} has max_size {size} for the {threads} threads of the CherryPy "
                f"server: a thread holds at most one connection of a pool, so "
                f"{size - threads} of them can never be in use (lower max_size to {threads})",
                logging.WARNING,
            ))
        elif size < threads:
            lines.append((
                f"pool {name!r} has max_size {size} for the {threads} threads of the CherryPy "
                f"server: up to {threads - size} requests may wait for a connection",
                logging.INFO,
            ))
        else:
            lines.append((
                f"pool {name!r} has max_size {size}, one connection per thread of the "
                f"CherryPy server",
                logging.INFO,
            ))
    return lines


# -- CherryPy config ---------------------------------------------------------


class ConfigNamespace:
    """The ``poodle`` namespace of CherryPy's global config.

    ``cherrypy.config.update({"poodle.default.factory": "sqlite3:connect"})``
    declares pool ``default`` on ``cherrypy.engine``'s PoodlePlugin, making
    and subscribing one if there is none. Each update's keys are checked
    together when it ends, so a mistake raises from ``cherrypy.config.update``
    naming the key. ``import poodle_cherrypy`` registers it.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}

    def __enter__(self) -> Callable[[str, Any], None]:
        self._entries = {}
        return self._entries.__setitem__

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        entries, self._entries = self._entries, {}
        if exc_type is not None or not entries:
            return
        options, specs = parse_namespace(entries, PLUGIN_OPTIONS)
        try:
            plugin = PoodlePlugin.for_bus(cherrypy.engine)
        except LookupError:
            plugin = PoodlePlugin(cherrypy.engine)
            plugin.subscribe()
        for option, value in options.items():
            setattr(plugin, option, check_seconds(f"poodle.{option}", value))
        for name, spec in specs.items():
            plugin._declare(name, spec)
