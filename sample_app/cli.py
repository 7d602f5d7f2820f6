"""``python -m sample_app``: its options, their environment variables, and the run.

Each value is taken from, in order: the command line, the environment, the
``--config`` file (``server.socket_host``, ``server.socket_port``, and the
pool if it declares ``poodle.default.*``), then the defaults.

The server gets as many threads as the pool has connections (a thread holds
at most one), unless the config file sets ``server.thread_pool``. The
default of 2 is from benchmarks/bench_threads.py: on this project's 2-core
machine a cheroot process with more threads spent more CPU per request on
its threads contending for the GIL (docs/deployment.rst, "Threads per
worker").
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

import cherrypy
from cherrypy.lib import reprconf

from poodle_cherrypy import PoodlePlugin, get_pool

from . import db
from .api import DEFAULT_MAX_BODY
from .app import POOL, SampleApp

__all__ = ["DEFAULTS", "ENVIRONMENT", "Settings", "configure", "main", "parse_args"]

#: The environment variable of each option.
ENVIRONMENT = {
    "host": "SAMPLE_APP_HOST",
    "port": "SAMPLE_APP_PORT",
    "database": "SAMPLE_APP_DATABASE",
    "pool_size": "SAMPLE_APP_POOL_SIZE",
    "max_body": "SAMPLE_APP_MAX_BODY",
    "config": "SAMPLE_APP_CONFIG",
}

DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 8080,
    "database": os.path.join("data", "docs.sqlite3"),
    "pool_size": 2,  # and as many server threads
    "max_body": DEFAULT_MAX_BODY,
    "config": None,
}


@dataclass(frozen=True)
class Settings:
    """The options as given (None: not given, neither on the command line nor
    in the environment)."""

    host: Optional[str]
    port: Optional[int]
    database: Optional[str]
    pool_size: Optional[int]
    max_body: Optional[int]
    config: Optional[str]


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535): {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"not a whole number >= 1: {text!r}")
    return int(text)


def _file(text: str) -> str:
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def _text(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _database(text: str) -> str:
    _text(text)
    scheme = db.url_scheme(text)
    if scheme is not None and not db.is_postgresql_url(text):
        raise argparse.ArgumentTypeError(
            f"unsupported URL scheme {scheme!r}: give a postgresql:// "
            f"(or postgres://) URL, or the path of an SQLite file"
        )
    return text


_TYPES: dict[str, Callable[[str], Any]] = {
    "host": _text,
    "port": _port,
    "database": _database,
    "pool_size": _positive,
    "max_body": _positive,
    "config": _file,
}


def build_parser() -> argparse.ArgumentParser:
    """The command line parser; ``--help`` names each environment variable."""
    parser = argparse.ArgumentParser(
        prog="python -m sample_app",
        description=(
            "A CouchDB-like JSON document store served by CherryPy on a poodle_cherrypy "
            "pool, with a page at / to browse the documents and watch the pool."
        ),
        epilog=(
            "Each option may be set by the environment variable in brackets instead; "
            "the command line wins. Ctrl-C or SIGTERM stops the server cleanly."
        ),
    )
    helps = {
        "host": "address to listen on (default 127.0.0.1)",
        "port": "TCP port to listen on (default 8080)",
        "database": (
            "an SQLite file, created with its folder if need be (default "
            "data/docs.sqlite3), or a postgresql://user:password@host:port/dbname URL "
            "(needs psycopg 3: pip install 'poodle_cherrypy[postgresql]')"
        ),
        "pool_size": (
            "most database connections open at once, and the server's threads "
            "(default 2)"
        ),
        "max_body": f"largest request body in bytes (default {DEFAULT_MAX_BODY})",
        "config": (
            "a CherryPy config file, e.g. sample_app/app.conf; it may declare the pool "
            "(poodle.default.*) instead of --database and --pool-size"
        ),
    }
    metavars = {
        "host": "HOST",
        "port": "PORT",
        "database": "PATH_OR_URL",
        "pool_size": "N",
        "max_body": "BYTES",
        "config": "FILE",
    }
    for name, var in ENVIRONMENT.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=_TYPES[name],
            metavar=metavars[name],
            help=f"{helps[name]} [env {var}]",
        )
    return parser


def parse_args(
    argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None
) -> Settings:
    """The options from ``argv`` then ``environ``; exits with a usage error if one is bad."""
    parser = build_parser()
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, var in ENVIRONMENT.items():
        value = getattr(args, name)
        if value is None and environ.get(var, "") != "":
            try:
                value = _TYPES[name](environ[var])
            except argparse.ArgumentTypeError as exc:
                parser.error(f"{var}: {exc}")
        values[name] = value
    return Settings(**values)


def describe(database: str) -> str:
    """``database`` for a log line: a URL's password is never shown."""
    if not db.is_postgresql_url(database):
        return f"SQLite file {os.path.abspath(database)}"
    parts = urlsplit(database)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"PostgreSQL {parts.username or ''}@{host}{port}{parts.path}"


def _declare_pool(settings: Settings) -> Optional[str]:
    """Declare pool "default" unless the config file did; an error message, or None."""
    try:
        get_pool(POOL)
    except LookupError:
        pass
    else:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("database", "pool_size")
            if getattr(settings, name) is not None
        ]
        if given:
            return (
                f"{settings.config} declares pool {POOL!r} (poodle.{POOL}.*): "
                f"set its options there, not with {' and '.join(given)}"
            )
        cherrypy.log(f"sample_app: pool {POOL!r} as declared in {settings.config}")
        return None
    database = settings.database or DEFAULTS["database"]
    spec = db.pool_spec(database, settings.pool_size or DEFAULTS["pool_size"])
    try:
        plugin = PoodlePlugin.for_bus(cherrypy.engine)
    except LookupError:
        PoodlePlugin(cherrypy.engine, {POOL: spec}).subscribe()
    else:
        plugin.add(POOL, spec)  # the config file declared other pools
    cherrypy.log(f"sample_app: pool {POOL!r} on {describe(database)}")
    return None


def _sets_thread_pool(config: Optional[str]) -> bool:
    """Whether the config file ``config`` sets ``server.thread_pool`` itself."""
    if config is None:
        return False
    return "server.thread_pool" in reprconf.Parser().dict_from_file(config).get("global", {})


def configure(settings: Settings, environment: str = "production") -> Optional[str]:
    """Set up CherryPy for ``settings``: config, the pool, the app mounted and its
    plugins subscribed; an error message, or None. ``environment`` is CherryPy's:
    ``"production"`` for the CLI's own server, ``"embedded"`` under a WSGI server."""
    cherrypy.config.update(
        {
            "environment": environment,  # no autoreload, no tracebacks in answers
            "log.screen": True,
            "server.socket_host": DEFAULTS["host"],
            "server.socket_port": DEFAULTS["port"],
            # CherryPy's listen backlog of 5 resets connections in a burst of clients.
            "server.socket_queue_size": 128,
        }
    )
    try:
        if settings.config is not None:
            cherrypy.config.update(settings.config)
        overrides: dict[str, Any] = {}
        if settings.host is not None:
            overrides["server.socket_host"] = settings.host
        if settings.port is not None:
            overrides["server.socket_port"] = settings.port
        cherrypy.config.update(overrides)
        problem = _declare_pool(settings)
        if problem is None and not _sets_thread_pool(settings.config):
            cherrypy.config.update({"server.thread_pool": get_pool(POOL).stats().max_size})
    except (configparser.Error, TypeError, ValueError, SyntaxError) as exc:
        problem = f"{settings.config}: {exc}"
    if problem is not None:
        return problem
    sample = SampleApp(cherrypy.engine, max_body=settings.max_body or DEFAULTS["max_body"])
    sample.mount(config=settings.config)
    sample.subscribe()
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve until Ctrl-C or SIGTERM; the exit status."""
    settings = parse_args(argv)
    problem = configure(settings)
    if problem is not None:
        print(f"python -m sample_app: error: {problem}", file=sys.stderr)
        return 2
    cherrypy.engine.signals.subscribe()  # SIGTERM: exit; SIGHUP, SIGUSR1: CherryPy's usual
    try:
        cherrypy.engine.start()
    except Exception:
        # The engine has logged why; a failing start listener usually makes it
        # end the process itself (status 70) before this.
        return 1
    cherrypy.engine.block()
    return 0
