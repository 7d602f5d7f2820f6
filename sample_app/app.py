"""The app assembled: its CherryPy application, its config and its engine plugins.

The pool itself is declared apart, on the engine's
:class:`~poodle_cherrypy.PoodlePlugin` under the name ``"default"`` (by
:mod:`sample_app.cli`, a config file's ``poodle`` namespace, or a test)::

    PoodlePlugin(cherrypy.engine, {"default": db.pool_spec("data/docs.sqlite3", 8)}).subscribe()
    sample = SampleApp(cherrypy.engine)
    sample.mount()
    sample.subscribe()
    cherrypy.engine.start()
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional, Union

import cherrypy
from cherrypy.process.plugins import SimplePlugin

from poodle_cherrypy import PoodleHealth, get_pool

from . import db, store
from .api import (
    DEFAULT_MAX_BODY,
    DocsAPI,
    MetricsAPI,
    StatusAPI,
    json_error_page,
    read_docs_body,
    read_docs_request,
    trim_error_body,
)
from .history import PoolHistory
from .web import STATIC_DIR, Root

__all__ = ["POOL", "SampleApp", "SchemaPlugin", "app_config"]

#: The name of the pool the app uses.
POOL = "default"


class SchemaPlugin(SimplePlugin):  # type: ignore[misc]  # cherrypy is untyped
    """Creates the documents table, if need be: when the engine starts, or, if
    the database cannot be reached then, on the first connection that works.

    A database that is down does not stop the app (the pool's promise): it
    starts, ``/docs`` answers 503 with ``Retry-After`` until the pool can
    connect, and the first ``/docs`` request that gets a connection creates
    the table (:meth:`ensure`) before it does its own work.
    """

    def __init__(self, bus: Any) -> None:
        super().__init__(bus)
        self._lock = threading.Lock()
        self._ready = False

    @property
    def ready(self) -> bool:
        """Whether the table is known to exist."""
        return self._ready

    def start(self) -> None:
        """Try to create the table through the pool; a failure is logged, not raised."""
        try:
            with get_pool(POOL, self.bus).get() as conn:
                self.ensure(conn)
        except Exception as exc:
            self.bus.log(
                f"sample_app: cannot create the schema yet ({exc!r}); "
                f"it will be created on the first connection that works",
                level=logging.WARNING,
            )

    # After PoodlePlugin opens the pools (70), before the HTTP server serves (75).
    start.priority = 72  # type: ignore[attr-defined]

    def ensure(self, conn: db.Connection) -> None:
        """Create the table on ``conn`` unless that was done already (once per process)."""
        if self._ready:
            return
        with self._lock:  # one CREATE TABLE at a time: concurrent ones can clash in PostgreSQL
            if not self._ready:
                store.ensure_schema(conn)
                self._ready = True
                self.bus.log("sample_app: schema ready")


def app_config(max_body: int = DEFAULT_MAX_BODY) -> dict[str, dict[str, Any]]:
    """The application's config: JSON errors everywhere, the pool on ``/docs`` only."""
    if max_body < 1:
        raise ValueError(f"max_body must be >= 1 byte, got {max_body!r}")
    return {
        "/": {
            "error_page.default": json_error_page,
            "hooks.before_finalize": trim_error_body,
            "hooks.after_error_response": trim_error_body,
            "tools.allow.on": True,
            "tools.allow.methods": ["GET", "HEAD"],
        },
        "/docs": {
            "tools.allow.on": False,  # DocsAPI answers 405 itself: Allow differs by resource
            "tools.poodle.on": True,
            "tools.poodle.transaction": True,
            "tools.poodle.pool": POOL,
            "request.body.maxbytes": max_body,
            # Only a PUT has a body to read: any other method gets its 405 (or
            # its answer) without CherryPy reading, or demanding, a body first.
            "request.methods_with_bodies": ("PUT",),
            "hooks.before_request_body": read_docs_request,
            "hooks.before_handler": read_docs_body,
        },
        "/static": {
            "tools.staticdir.on": True,
            "tools.staticdir.dir": str(STATIC_DIR),
        },
    }


class SampleApp:
    """The document store: mount it on the tree, subscribe its plugins to the bus.

    - ``max_body``: the largest request body in bytes (413 beyond).
    - ``history_seconds`` and ``sample_interval``: how much of the pools'
      history ``/status`` keeps, sampled how often.
    """

    def __init__(
        self,
        bus: Any = None,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        history_seconds: float = 300.0,
        sample_interval: float = 1.0,
    ) -> None:
        self.bus = cherrypy.engine if bus is None else bus
        self.config = app_config(max_body)
        self.history = PoolHistory(self.bus, seconds=history_seconds, interval=sample_interval)
        self.schema = SchemaPlugin(self.bus)
        # /health: 503 while the database cannot be reached, for load balancers
        health = PoodleHealth([POOL], ping=db.ping, bus=self.bus)
        self.root = Root(
            DocsAPI(prepare=self.schema.ensure),
            StatusAPI(self.history),
            MetricsAPI(self.bus),
            health,
        )

    def mount(
        self, script_name: str = "", config: Optional[Union[str, dict[str, Any]]] = None
    ) -> Any:
        """Mount the app on ``cherrypy.tree``; ``config`` (a file or dict) is merged
        over the app's own. Returns the ``cherrypy.Application``."""
        app = cherrypy.tree.mount(self.root, script_name, self.config)
        if config is not None:
            app.merge(config)
        return app

    def subscribe(self) -> None:
        """Subscribe the schema creation and the pool sampler to the bus."""
        self.schema.subscribe()
        self.history.subscribe()

    def unsubscribe(self) -> None:
        """Unsubscribe them (a stopped engine's plugins are idle)."""
        self.history.unsubscribe()
        self.schema.unsubscribe()
