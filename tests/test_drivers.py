"""poodle_cherrypy.drivers without a server: the drivers stay optional, and each
recipe can be named in a config file as "module:callable"."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

from poodle_cherrypy import drivers


def test_importing_the_recipes_imports_no_driver() -> None:
    code = (
        "import sys, poodle_cherrypy.drivers; "
        "print(sorted({'psycopg', 'pymysql', 'redis'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", drivers.__all__)
def test_each_recipe_is_a_documented_module_level_function(name: str) -> None:
    module, _, attribute = f"poodle_cherrypy.drivers:{name}".partition(":")
    recipe = getattr(importlib.import_module(module), attribute)
    assert inspect.isfunction(recipe) and recipe.__module__ == module
    assert inspect.getdoc(recipe)


def test_the_pgbouncer_factory_refuses_prepared_statements() -> None:
    with pytest.raises(ValueError, match="prepare_threshold=5"):
        drivers.psycopg_pgbouncer_connect("dbname=x", prepare_threshold=5)
