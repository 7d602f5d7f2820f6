"""Checking the request tool's config when the engine starts.

:class:`~poodle_cherrypy.PoodlePlugin` calls :func:`tool_config_problems`
at ``start``: a ``tools.<poodle tool>.*`` key in the mounted apps' config
that names an unknown pool or option, or has a bad value, stops the start
(CherryPy logs it and exits) instead of failing every request. The apps are
found as CherryPy keeps them (``cherrypy.tree.apps``, a ``VirtualHost``'s
hosts) and each key is resolved as a request sees it
(``Application.find_config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import cherrypy
from cherrypy._cpwsgi import VirtualHost

from .pool import Pool

__all__ = ["tool_config_problems"]


def _applications(entries: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The ``cherrypy.Application`` objects of the tree, with where each is.

    ``tree.graft`` puts any WSGI callable in the tree: only Applications have
    config, and a ``VirtualHost`` is looked into for those it dispatches to.
    """
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(where: str, entry: Any) -> None:
        if id(entry) in seen:
            return
        seen.add(id(entry))
        if isinstance(entry, cherrypy.Application):
            found.append((where, entry))
        elif isinstance(entry, VirtualHost):
            visit(f"{where} (default host)", entry.default)
            for domain, app in dict(entry.domains).items():
                visit(f"{where} (host {domain!r})", app)

    for script_name, entry in entries.items():
        visit(script_name or "/", entry)
    return found


def _poodle_tools() -> dict[str, Any]:
    return {
        name: tool
        for name, tool in vars(cherrypy.tools).items()
        if callable(getattr(tool, "option_problem", None))
    }


def tool_config_problems(
    pools: Mapping[str, Pool[Any]], warnings: Optional[list[str]] = None
) -> list[str]:
    """What is wrong with the ``tools.<poodle tool>.*`` keys of the mounted apps.

    Checks the global config and the config of every ``cherrypy.Application``
    in the tree (those behind a ``VirtualHost`` included; other grafted WSGI
    callables have none). A key is resolved along a section's path as a
    request sees it: ``Application.find_config``, then the global config.

    Returns the config mistakes (a bad value, an unknown option or pool). A
    tool switched on where no config names a pool, while pool ``default`` is
    not declared, is appended to ``warnings`` instead: a controller's
    ``_cp_config``, which only a request's dispatch sees, may name one.
    """
    tools = _poodle_tools()
    if not tools:
        return []
    problems: list[str] = []
    apps = _applications(cherrypy.tree.apps)
    # (where, section, config) of every section that can hold tool keys.
    sections: list[tuple[str, Mapping[str, Any]]] = [("global", cherrypy.config)]
    for where, app in apps:
        for section, conf in app.config.items():
            if isinstance(conf, Mapping) and section.startswith("/"):
                sections.append((f"{where} [{section}]", conf))
    for where, conf in sections:
        for key, value in conf.items():
            namespace, _, rest = key.partition(".")
            tool_name, _, option = rest.partition(".")
            if namespace != "tools" or tool_name not in tools:
                continue
            problem = tools[tool_name].option_problem(option, value)
            if problem is not None:
                problems.append(f"{where} {key}: {problem}")
            elif option in ("pool", "read_pool") and value is not None and value not in pools:
                problems.append(
                    f"{where} {key} = {value!r}: no such pool; the pools are {sorted(pools)}"
                )
    if warnings is None or "default" in pools:
        return problems
    for tool_name in tools:
        on_key, pool_key = f"tools.{tool_name}.on", f"tools.{tool_name}.pool"
        for where, app in apps:
            for section in sorted({"/", *(s for s in app.config if s.startswith("/"))}):
                # Looked at where it is switched on: in the section, or globally.
                if on_key in app.config.get(section, {}):
                    at = f"{where} [{section}]"
                elif section == "/" and on_key in cherrypy.config:
                    at = "global"
                else:
                    continue
                on = app.find_config(section, on_key, cherrypy.config.get(on_key, False))
                pool = app.find_config(section, pool_key, cherrypy.config.get(pool_key))
                warning = (
                    f"{at} {on_key}: uses pool 'default', which is not declared; the pools "
                    f"are {sorted(pools)} (set {pool_key}), unless a controller's "
                    f"_cp_config names one"
                )
                if on is True and pool is None and warning not in warnings:
                    warnings.append(warning)
    return problems
