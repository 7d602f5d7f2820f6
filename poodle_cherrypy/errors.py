"""The pool's exceptions.

Every pool error derives from :class:`PoolError`, so ``except PoolError`` catches
exhaustion, overload and shutdown alike. None of them derives from ``OSError``:
a pool error raised inside another pool's ``with`` block must not mark that
block's connection as broken.
"""

from __future__ import annotations

__all__ = ["PoolClosed", "PoolError", "PoolTimeout", "PoolUnavailable", "TooManyWaiters"]


class PoolError(Exception):
    """Base class of every error the pool raises itself."""


class PoolTimeout(PoolError):
    """No connection became available within the timeout.

    The message names the pool, its ``max_size``, how many callers were waiting
    and the timeout, which is what one needs to tell a leak from an undersized
    pool.
    """


class PoolClosed(PoolError):
    """The pool is closed: it hands out nothing until it is opened again."""


class TooManyWaiters(PoolError):
    """The queue of waiting callers is full (``max_waiting``): fail at once
    rather than pile up more waiting threads."""


class PoolUnavailable(PoolError):
    """Connecting has failed repeatedly and the pool is failing fast.

    Raised instead of calling the factory while the pool's circuit breaker is
    open (see ``fail_fast_after``); ``__cause__`` is the last factory error.
    """
