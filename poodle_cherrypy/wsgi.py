"""Serving a CherryPy app from a pre-forking WSGI server: gunicorn, uWSGI, mod_wsgi.

Under such a server CherryPy does not run the process: the server imports the
WSGI module (in a master, with gunicorn's ``--preload`` or uWSGI without
``--lazy-apps``), forks workers and serves HTTP itself. The CherryPy engine
must still start, since the :class:`~poodle_cherrypy.PoodlePlugin` opens the
pools in its ``start``, but in each worker, after the fork, and without the
parts of CherryPy that the server replaces. The WSGI module wraps the app in
:class:`WorkerApplication`::

    # myapp/wsgi.py
    import cherrypy
    from poodle_cherrypy.wsgi import WorkerApplication

    cherrypy.config.update({"environment": "embedded"})  # first: the rest may override it
    cherrypy.config.update({"poodle.default.factory": "myapp.db:connect"})
    cherrypy.tree.mount(Root(), "", app_config)
    application = WorkerApplication()

The engine starts in a worker at its first request, or earlier from a hook
(gunicorn's ``post_worker_init``, uWSGI's ``@postfork``) calling
:func:`start_engine_in_worker`, and stops when the worker exits (an
``atexit`` handler, or the hook ``worker_exit`` calling
:func:`stop_engine_in_worker`). Importing the module in a master opens
nothing.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, Optional

import cherrypy
from cherrypy.process.wspbus import states

__all__ = ["WorkerApplication", "start_engine_in_worker", "stop_engine_in_worker"]

#: The process that started each engine (by ``id``), as this process last saw it.
_started: dict[int, int] = {}
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # A thread of the parent may have held the lock at the fork; the child
    # inherits it held, by a thread that does not exist there.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def start_engine_in_worker(engine: Any = None) -> bool:
    """Start ``engine`` (default ``cherrypy.engine``) in this process, once.

    Returns True if it started it now, False if it was started already (by
    this function or by the caller, in this process). Before starting it:

    - unsubscribes ``cherrypy.server``, CherryPy's own HTTP server (the WSGI
      server serves), so nothing binds a port and the pools' sizing check at
      start knows no CherryPy threads will use them;
    - unsubscribes the autoreloader, which would re-exec the worker behind the
      process manager's back;
    - subscribes no signal handler: the process manager owns SIGTERM, SIGHUP
      and SIGUSR1 (never call ``engine.signals.subscribe()`` in a worker).

    Then it starts the engine and registers an ``atexit`` handler that stops it
    (closing the pools) when the worker's interpreter exits. Thread-safe. If a
    start listener fails, CherryPy logs why and ends the process (status 70),
    as it does for any engine; the process manager then starts another worker.

    Raises ``RuntimeError`` if the engine was started by this function in a
    parent process before the fork: its threads are gone and its pools
    would be the parent's. Start it in the workers only (a master imports the
    WSGI module, nothing more).
    """
    if engine is None:
        engine = cherrypy.engine
    pid = os.getpid()
    with _lock:
        started_in = _started.get(id(engine))
        if started_in == pid and engine.state in (states.STARTING, states.STARTED):
            return False
        if started_in is not None and started_in != pid and engine.state == states.STARTED:
            raise RuntimeError(
                f"the CherryPy engine was started in process {started_in} before this "
                f"process ({pid}) was forked from it: start it in the workers only"
            )
        if started_in is None and engine.state == states.STARTED:
            return False  # the caller started it itself
        if engine is cherrypy.engine:
            cherrypy.server.unsubscribe()
        autoreload = getattr(engine, "autoreload", None)
        if autoreload is not None:
            autoreload.unsubscribe()
        _started[id(engine)] = pid
        engine.start()
        # After start, which registers the bus's own atexit check (a warning
        # that the bus is still running): handlers run last registered first.
        atexit.register(_stop_at_exit, engine, pid)
    return True


def stop_engine_in_worker(engine: Any = None) -> bool:
    """Stop ``engine`` (default ``cherrypy.engine``) if this process started it.

    For a worker-exit hook (gunicorn's ``worker_exit``): the engine's ``exit``
    closes the pools, waiting for connections in use (``poodle.close_timeout``).
    Returns True if it stopped it now; idempotent, and a no-op in a process
    that did not start the engine (a master).
    """
    if engine is None:
        engine = cherrypy.engine
    with _lock:
        if _started.get(id(engine)) != os.getpid():
            return False
        del _started[id(engine)]
        if engine.state in (states.STOPPED, states.EXITING):
            return False
        engine.exit()
    return True


def _stop_at_exit(engine: Any, pid: int) -> None:
    if os.getpid() == pid:  # an atexit handler inherited by a child is not its own
        stop_engine_in_worker(engine)


StartResponse = Callable[..., Any]


class WorkerApplication:
    """A WSGI application that starts the CherryPy engine in the process serving it.

    ``app`` is the WSGI application to serve (default ``cherrypy.tree``, every
    mounted app); ``engine`` defaults to ``cherrypy.engine``. Each call checks
    that the engine was started in the current process (a pid comparison) and
    calls :func:`start_engine_in_worker` first if not, so a worker forked
    after the WSGI module was imported starts its own engine and opens its own
    pools, whether or not a post-fork hook started it already.
    """

    def __init__(self, app: Any = None, engine: Any = None) -> None:
        self.app = cherrypy.tree if app is None else app
        """The WSGI application served."""
        self.engine = cherrypy.engine if engine is None else engine
        """The engine started in each worker."""
        self._pid: Optional[int] = None  # the process in which the engine is known started

    def start(self) -> bool:
        """Start the engine in this process now (for a post-fork hook); see
        :func:`start_engine_in_worker`."""
        started = start_engine_in_worker(self.engine)
        self._pid = os.getpid()
        return started

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self._pid != os.getpid():
            self.start()
        result: Iterable[bytes] = self.app(environ, start_response)
        return result

    def __repr__(self) -> str:
        here = self._pid == os.getpid()
        return f"<WorkerApplication {self.app!r} engine {'started' if here else 'not started'}>"
