"""The sample app for ``cherryd``, CherryPy's daemon: ``cherryd -i sample_app.daemon``.

Importing this module sets the app up as ``python -m sample_app`` would
(the pool from the ``SAMPLE_APP_*`` environment variables, the app mounted,
its plugins subscribed), and leaves the rest to ``cherryd``, which then reads
its ``-c`` config files (``server.*``, ``log.*``), daemonizes with ``-d``
(CherryPy's Daemonizer, which forks before the pool opens: see
:class:`poodle_cherrypy.PoodlePlugin`), writes the ``-p`` PID file, handles
the signals (SIGTERM: exit; SIGUSR1: graceful, which recycles the pool's
connections; SIGHUP: restart in place when detached) and starts the engine::

    SAMPLE_APP_DATABASE=postgresql://postgres@127.0.0.1:5432/test \\
        cherryd -d -p /run/sample_app.pid -c deploy/cherryd.conf -i sample_app.daemon
"""

from __future__ import annotations

import os

from .cli import configure, parse_args

__all__: list[str] = []

_problem = configure(parse_args([], os.environ))
if _problem is not None:
    raise RuntimeError(f"sample_app.daemon: {_problem}")
