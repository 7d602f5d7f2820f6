"""The ``poodle_cherrypy`` logger's records, written to CherryPy's error log.

While a :class:`~poodle_cherrypy.PoodlePlugin` runs, the pool's records
(``logging.getLogger("poodle_cherrypy")``) go to the handlers of
``cherrypy.log.error_log`` (``log.screen``, ``log.error_file``), formatted as
CherryPy's own lines (``[date] POODLE message``), instead of reaching only
Python's last-resort handler. They still propagate as usual, so handlers a
program put on the root logger see each record once.
"""

from __future__ import annotations

import logging
import os
import threading

import cherrypy

__all__ = ["ToCherryPyErrorLog", "route", "unroute"]

logger = logging.getLogger("poodle_cherrypy")


class ToCherryPyErrorLog(logging.Handler):
    """Hands each record to the handlers of CherryPy's error log.

    The handlers are called directly rather than through the
    ``cherrypy.error`` logger, whose records propagate to the root logger: a
    root handler would otherwise see the record twice.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` as CherryPy writes its own, with the same handlers."""
        error_log = cherrypy.log.error_log
        if not error_log.isEnabledFor(record.levelno):
            return
        try:
            message = " ".join((cherrypy.log.time(), "POODLE", record.getMessage()))
            line = error_log.makeRecord(
                error_log.name, record.levelno, record.pathname, record.lineno, message,
                None, record.exc_info, record.funcName, None, record.stack_info,
            )
        except Exception:
            self.handleError(record)
            return
        for handler in error_log.handlers:
            if line.levelno >= handler.level:
                handler.handle(line)


_lock = threading.Lock()
_handler = ToCherryPyErrorLog()
_users: set[int] = set()


def _after_fork_in_child() -> None:
    # A thread of the parent's may have held the lock at the fork: in the
    # child that thread is gone and the lock would stay held for ever.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def route(user: object) -> None:
    """Route the records to CherryPy's error log while ``user`` (a plugin) runs.

    Idempotent: the route is added once, whoever asks for it.
    """
    with _lock:
        _users.add(id(user))
        if _handler not in logger.handlers:
            logger.addHandler(_handler)


def unroute(user: object) -> None:
    """``user`` no longer needs the route; it goes when nobody does."""
    with _lock:
        _users.discard(id(user))
        if not _users:
            logger.removeHandler(_handler)
