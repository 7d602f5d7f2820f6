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
    "build_pool",
    "parse_namespace",
    "resolve_callable",
]

#: Every option a spec may hold: the factory and Pool's own parameters.
POOL_OPTIONS: frozenset[str] = frozenset(inspect.signature(Pool).parameters)

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
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"{prefix}: a pool is declared by a Pool or a dict of Pool options, got {spec!r}"
        )
    unknown = sorted(set(spec) - POOL_OPTIONS)
    if unknown:
        raise ValueError(
            f"{prefix}.{unknown[0]}: unknown pool option; "
            f"the options are {', '.join(sorted(POOL_OPTIONS))}"
        )
    if "factory" not in spec:
        raise ValueError(f"{prefix}.factory: missing; say what opens a connection")
    options = dict(spec)
    for option in CALLABLE_OPTIONS & options.keys():
        if option == "factory" or options[option] is not None:
            options[option] = resolve_callable(options[option], f"{prefix}.{option}")
    if isinstance(options.get("kwargs"), str):  # never a mapping: it names a callable
        options["kwargs"] = resolve_callable(options["kwargs"], f"{prefix}.kwargs")
    options.setdefault("name", name)
    try:
        return Pool(**options)
    except (TypeError, ValueError) as exc:
        # Pool's messages start with the argument's name: make that the full key.
        message = str(exc)
        argument = message.split(" ", 1)[0]
        key = f"{prefix}.{argument}" if argument in POOL_OPTIONS else prefix
        raise type(exc)(f"{key}: {message}") from None


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
        if option not in POOL_OPTIONS:
            raise ValueError(
                f"poodle.{key}: unknown pool option {option!r}; "
                f"the options are {', '.join(sorted(POOL_OPTIONS))}"
            )
        specs.setdefault(name, {})[option] = value
    return options, specs
