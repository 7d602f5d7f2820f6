"""poodle_cherrypy: a thread-safe, context-manager based connection pool and
its CherryPy integration.

The pool core (:class:`Pool`, in :mod:`poodle_cherrypy.pool`) imports nothing
from CherryPy and is useful on its own::

    from poodle_cherrypy import Pool

    pool = Pool(sqlite3.connect, ("app.db",), {"check_same_thread": False})
    with pool.get() as conn:
        conn.execute("select 1")

Importing the package also sets up the CherryPy integration: it registers the
request tool as ``cherrypy.tools.poodle`` and the ``poodle`` namespace of
CherryPy's global config, in which pools are declared
(``poodle.<name>.<option>``) for the engine's :class:`PoodlePlugin`.
"""

from __future__ import annotations

import cherrypy

from .errors import PoolClosed, PoolError, PoolTimeout, PoolUnavailable, TooManyWaiters
from .health import PoodleHealth
from .plugin import ConfigNamespace, PoodlePlugin, get_pool
from .pool import Lease, Pool, is_broken
from .stats import BUCKET_BOUNDS, Histogram, PoolStats
from .tool import PoodleTool

__all__ = [
    "BUCKET_BOUNDS",
    "Histogram",
    "Lease",
    "PoodleHealth",
    "PoodlePlugin",
    "PoodleTool",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolTimeout",
    "PoolUnavailable",
    "TooManyWaiters",
    "get_pool",
    "is_broken",
]

__version__ = "0.1.0"

cherrypy.tools.poodle = PoodleTool()
cherrypy.config.namespaces["poodle"] = ConfigNamespace()
