"""The package's layers: the pool core knows nothing of CherryPy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "poodle_cherrypy"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", ["pool", "errors", "stats", "config"])
def test_core_modules_import_nothing_from_cherrypy(module: str) -> None:
    imports = imported_modules(PACKAGE / f"{module}.py")
    assert not {name for name in imports if name.split(".")[0] in ("cherrypy", "cheroot")}
