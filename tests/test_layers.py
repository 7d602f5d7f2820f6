"""The package's layers: the pool core knows nothing of CherryPy, and the
modules import one another without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "poodle_cherrypy"

#: The pool core and the pieces around it: usable without CherryPy.
CORE = [
    "pool", "records", "connector", "breaker", "housekeeping", "options", "errors", "stats",
    "config", "drivers", "sqlalchemy",
]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def package_imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports when it runs: relative
    imports, at module level or in functions, but not those under ``if
    TYPE_CHECKING:`` (for annotations only)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_nothing_from_cherrypy(module: str) -> None:
    imports = imported_modules(PACKAGE / f"{module}.py")
    assert not {name for name in imports if name.split(".")[0] in ("cherrypy", "cheroot")}


def test_every_module_is_placed_and_the_core_is_listed() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert set(CORE) <= modules


def test_the_import_graph_has_no_cycle() -> None:
    graph = {
        path.stem: package_imports(path) - {path.stem}
        for path in PACKAGE.glob("*.py")
        if path.stem != "__init__"
    }
    # Depth-first search, reporting the first cycle as a path.
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", " -> ".join([*trail, module])
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    # The check above would pass on a package with no imports at all: show
    # that it reads imports, function-level ones included.
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from . import a\n")
    (tmp_path / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n"
    )
    assert package_imports(tmp_path / "a.py") == {"b"}
    assert package_imports(tmp_path / "b.py") == {"a"}
    assert package_imports(tmp_path / "c.py") == set()


def test_no_module_is_over_1100_lines_and_the_pool_class_900() -> None:
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.glob("*.py")
    }
    assert max(sizes.values()) <= 1100, sizes
    source = (PACKAGE / "pool.py").read_text(encoding="utf-8")
    [pool] = [
        node for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef) and node.name == "Pool"
    ]
    assert pool.end_lineno is not None
    assert pool.end_lineno - pool.lineno + 1 <= 900
