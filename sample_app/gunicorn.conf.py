# gunicorn's config for the sample app (a Python file gunicorn executes):
#
#     SAMPLE_APP_DATABASE=postgresql://postgres@127.0.0.1:5432/test \
#         gunicorn -c sample_app/gunicorn.conf.py sample_app.wsgi:application
#
# Command-line options override the values here (-b, -w, --threads, --preload).
import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# One process serves on one core (the GIL): one worker per core.
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# gthread: each worker serves `threads` requests at once; a thread holds at
# most one connection per pool, so the pool's max_size (SAMPLE_APP_POOL_SIZE)
# should equal `threads`: more is never used, fewer makes requests wait.
# 2 threads: in the sweep of docs/deployment.rst ("Threads per worker") 4 and 8
# threads cost one worker up to 1.6x the CPU per request of 1 or 2 (threads
# contending for one GIL), with no better p99; 2 rather than 1 so that one
# slow request does not hold up the worker's other clients.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
# A worker that stops answering its heartbeat for this long is killed and
# replaced; a graceful stop (SIGTERM, HUP's old workers) waits this long for
# requests in flight, and the engine's exit then closes the pool.
timeout = 30
graceful_timeout = 30
accesslog = None
errorlog = "-"


def post_worker_init(worker: Any) -> None:
    """After the worker imported the app (a fork of the master's copy with
    --preload): start the CherryPy engine, which opens this worker's pool."""
    from sample_app.wsgi import application

    application.start()


def worker_exit(server: Any, worker: Any) -> None:
    """The worker is exiting (graceful stop, reload, max_requests): stop the
    engine, closing the pool's connections, before the process ends."""
    from poodle_cherrypy.wsgi import stop_engine_in_worker

    stop_engine_in_worker()
