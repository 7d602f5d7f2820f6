"""Declaring pools: from a dict in Python, or from CherryPy config keys.

A pool is declared by a *spec*: ``factory`` plus any :class:`~poodle_cherrypy.Pool`
keyword argument (``args``, ``kwargs``, ``min_size``, ``check``...). Wherever a
callable is expected (``factory``, ``check``, ``reset``, ``dispose``,
``broken``) a ``"module:attribute"`` string names one, and so it does for
``kwargs`` (a callable called at each connect, for credentials that rotate),
so that an INI file can declare everything::

    [global]
    poodle.default.factory = "sqlite3:connect"
    poodle.default.args = ("app.db",)
    poodle.default.kwargs = {"check_same_thread": False}
    poodle.default.max_size = 8
    poodle.maintain_interval = 10.0

A pool for SQLAlchemy (the ``[sqlalchemy]`` extra) is declared by
``sqlalchemy_url`` instead of ``factory``: the Engine's dialect opens the
connections (give ``factory`` too and it opens them instead, the URL then
choosing only the dialect), and ``sqlalchemy_options`` is a dict of further
``create_engine`` arguments; see :mod:`poodle_cherrypy.sqlalchemy`::

    poodle.default.sqlalchemy_url = "postgresql+psycopg://app@db/app"
    poodle.default.max_size = 8

Keys with one dot after ``poodle.`` declare a pool option
(``poodle.<name>.<option>``); keys without one set a plugin option
(``maintain_interval``, ``close_timeout``). Every mistake is reported at once,
as a ``ValueError`` or ``TypeError`` whose message starts with the key.

This module knows nothing of the bus or of requests: it turns specs into pools.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .pool import Pool

__all__ = [
    "CALLABLE_OPTIONS",
    "POOL_OPTIONS",
    "SPEC_OPTIONS",
    "SQLALCHEMY_OPTIONS",
    "build",
    "build_pool",
    "parse_namespace",
    "resolve_callable",
]

#: Every option a spec may hold: the factory and Pool's own parameters.
POOL_OPTIONS: frozenset[str] = frozenset(inspect.signature(Pool).parameters)

#: The options that declare a pool for SQLAlchemy (an Engine on it).
SQLALCHEMY_OPTIONS: frozenset[str] = frozenset({"sqlalchemy_url", "sqlalchemy_options"})

#: Every key a spec may hold.
SPEC_OPTIONS: frozenset[str] = POOL_OPTIONS | SQLALCHEMY_OPTIONS

#: The options that take a callable (or a ``"module:attribute"`` string).
CALLABLE_OPTIONS: frozenset[str] = frozenset({"factory", "check", "reset", "dispose", "broken"})


def resolve_callable(value: object, key: str) -> Callable[..., Any]:
    """``value`` itself if callable, else the object a ``"module:attr.attr"`` string names.

    Raises ``ValueError`` (``TypeError`` for a value of the wrong type) whose
    message starts with ``key``.
    """
    if callable(value):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{key}: expected a callable or a 'module:attribute' string, got {value!r}")
    module_name, sep, attr_path = value.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"{key}: {value!r} is not of the form 'module:attribute'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{key}: cannot import module {module_name!r} ({exc})") from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{key}: module {module_name!r} has no {attr_path!r}") from None
    if not callable(target):
        raise TypeError(f"{key}: {value!r} is not callable, it is {target!r}")
    return target  # type: ignore[no-any-return]


def build_pool(name: str, spec: Mapping[str, Any], prefix: str) -> Pool[Any]:
    """A :class:`Pool` named ``name`` (unless the spec names it) from ``spec``.

    ``prefix`` is how the spec's keys are spelled in messages, e.g.
    ``"poodle.default"`` for config keys. Unknown options, a missing or
    unimportable factory and bad values all raise at once, naming the key.
    Constructing the pool never connects.
    """
    options = _pool_options(name, spec, prefix, POOL_OPTIONS)
    if "factory" not in options:
        raise ValueError(f"{prefix}.factory: missing; say what opens a connection")
    try:
        return Pool(**options)
    except (TypeError, ValueError) as exc:
        raise _prefixed(exc, prefix) from None


def build(name: str, spec: Mapping[str, Any], prefix: str) -> tuple[Pool[Any], Any]:
    """The pool ``spec`` declares and, for a ``sqlalchemy_url`` spec, the
    :class:`~poodle_cherrypy.sqlalchemy.RequestBinding` of its Engine (else None).

    Raises as :func:`build_pool` does; a bad URL or engine option raises
    ``ValueError`` naming ``sqlalchemy_url`` or ``sqlalchemy_options``.
    """
    if not isinstance(spec, Mapping) or not SQLALCHEMY_OPTIONS & spec.keys():
        return build_pool(name, spec, prefix), None
    if "sqlalchemy_url" not in spec:
        raise ValueError(f"{prefix}.sqlalchemy_url: missing; sqlalchemy_options needs it")
    url = spec["sqlalchemy_url"]
    engine_options = spec.get("sqlalchemy_options") or {}
    if not isinstance(url, str) or not url:
        raise TypeError(f"{prefix}.sqlalchemy_url: expected a URL string, got {url!r}")
    if not isinstance(engine_options, Mapping):
        raise TypeError(
            f"{prefix}.sqlalchemy_options: expected a dict of create_engine arguments, "
            f"got {engine_options!r}"
        )
    try:
        from sqlalchemy.engine import make_url

        from . import sqlalchemy as bridge
    except ImportError as exc:
        raise ValueError(
            f"{prefix}.sqlalchemy_url: SQLAlchemy is not installed "
            f"(pip install poodle_cherrypy[sqlalchemy]): {exc}"
        ) from None
    try:
        parsed = make_url(url)
        parsed.get_dialect()  # imports the dialect: an unknown driver is the URL's fault
    except Exception as exc:  # ArgumentError, NoSuchModuleError, ImportError
        raise ValueError(f"{prefix}.sqlalchemy_url: {url!r}: {exc}") from None
    options = _pool_options(name, spec, prefix, SPEC_OPTIONS)
    for key in SQLALCHEMY_OPTIONS:
        options.pop(key, None)
    try:
        poodle: Any = Pool(**options) if "factory" in options else options
        engine = bridge.create_engine(parsed, poodle=poodle, **engine_options)
    except (TypeError, ValueError) as exc:
        if str(exc).split(" ", 1)[0] in POOL_OPTIONS:  # Pool's own message
            raise _prefixed(exc, prefix) from None
        # create_engine's TypeError for an argument it does not take.
        raise type(exc)(f"{prefix}.sqlalchemy_options: {exc}") from None
    except Exception as exc:  # SQLAlchemy's ArgumentError: an engine option
        raise ValueError(f"{prefix}.sqlalchemy_options: {exc}") from None
    binding = bridge.RequestBinding(engine)
    return binding.pool, binding


def _pool_options(
    name: str, spec: Mapping[str, Any], prefix: str, allowed: frozenset[str]
) -> dict[str, Any]:
    """``spec`` checked against ``allowed``, its callables resolved, named."""
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"{prefix}: a pool is declared by a Pool or a dict of Pool options, got {spec!r}"
        )
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(
            f"{prefix}.{unknown[0]}: unknown pool option; "
            f"the options are {', '.join(sorted(allowed))}"
        )
    options = dict(spec)
    for option in CALLABLE_OPTIONS & options.keys():
        if option == "factory" or options[option] is not None:
            options[option] = resolve_callable(options[option], f"{prefix}.{option}")
    if isinstance(options.get("kwargs"), str):  # never a mapping: it names a callable
        options["kwargs"] = resolve_callable(options["kwargs"], f"{prefix}.kwargs")
    options.setdefault("name", name)
    return options


def _prefixed(exc: Exception, prefix: str) -> Exception:
    """Pool's message starts with the argument's name: make that the full key."""
    message = str(exc)
    argument = message.split(" ", 1)[0]
    key = f"{prefix}.{argument}" if argument in POOL_OPTIONS else prefix
    return type(exc)(f"{key}: {message}")


def parse_namespace(
    entries: Mapping[str, Any], plugin_options: frozenset[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split ``poodle.*`` config entries (keys without the ``poodle.`` prefix)
    into plugin options and pool specs by pool name.

    ``{"maintain_interval": 5, "db.factory": "sqlite3:connect"}`` gives
    ``({"maintain_interval": 5}, {"db": {"factory": "sqlite3:connect"}})``.
    Unknown plugin or pool options raise ``ValueError`` naming the full key.
    """
    options: dict[str, Any] = {}
    specs: dict[str, dict[str, Any]] = {}
    for key, value in entries.items():
        name, dot, option = key.rpartition(".")
        if not dot:
            if key not in plugin_options:
                raise ValueError(
                    f"poodle.{key}: unknown option; the plugin's options are "
                    f"{', '.join(sorted(plugin_options))}, and pools are declared as "
                    f"poodle.<name>.<option>"
                )
            options[key] = value
            continue
        parent = name.rpartition(".")[2]
        if parent in POOL_OPTIONS:
            raise ValueError(
                f"poodle.{key}: {parent!r} is one value, not a section: write "
                f"poodle.{name} = {{...}} with every item in it"
            )
        if option not in SPEC_OPTIONS:
            raise ValueError(
                f"poodle.{key}: unknown pool option {option!r}; "
                f"the options are {', '.join(sorted(SPEC_OPTIONS))}"
            )
        specs.setdefault(name, {})[option] = value
    return options, specs
