"""The sample app as a WSGI application: ``sample_app.wsgi:application``.

For process managers that import a WSGI callable (gunicorn, uWSGI)::

    SAMPLE_APP_DATABASE=postgresql://postgres@127.0.0.1/test \\
        gunicorn -c sample_app/gunicorn.conf.py sample_app.wsgi:application

It is configured by the same ``SAMPLE_APP_*`` environment variables as
``python -m sample_app`` (``SAMPLE_APP_HOST`` and ``SAMPLE_APP_PORT`` are
ignored: the process manager binds). Importing it configures CherryPy in the
``embedded`` environment and declares the pool, but opens nothing: each worker
starts the engine, and so opens its own pool, after the fork
(:class:`poodle_cherrypy.wsgi.WorkerApplication`).
"""

from __future__ import annotations

import os

from poodle_cherrypy.wsgi import WorkerApplication

from .cli import configure, parse_args

__all__ = ["application"]


def _application() -> WorkerApplication:
    problem = configure(parse_args([], os.environ), environment="embedded")
    if problem is not None:
        raise RuntimeError(f"sample_app.wsgi: {problem}")
    return WorkerApplication()


application = _application()
"""The WSGI application (``cherrypy.tree``, the engine started in each worker)."""

try:
    from uwsgidecorators import postfork  # importable only inside uWSGI
except ImportError:
    pass
else:
    # Start each worker's engine (and pool) as it is forked, not at its first
    # request; with lazy-apps the first request does it.
    postfork(application.start)
