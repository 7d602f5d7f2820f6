"""poodle_cherrypy: a thread-safe, context-manager based connection pool and
its CherryPy integration.

The pool core (:class:`Pool`) imports nothing from CherryPy::

    from poodle_cherrypy import Pool

    pool = Pool(sqlite3.connect, ("app.db",), {"check_same_thread": False})
    with pool.get() as conn:
        conn.execute("select 1")
"""

from __future__ import annotations

from .errors import PoolClosed, PoolError, PoolTimeout, PoolUnavailable, TooManyWaiters
from .pool import Lease, Pool, is_broken
from .stats import PoolStats

__all__ = [
    "Lease",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolTimeout",
    "PoolUnavailable",
    "TooManyWaiters",
    "is_broken",
]

__version__ = "0.1.0"
