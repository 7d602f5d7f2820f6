"""docs/examples/library.py, the SQLAlchemy ORM example (two models, a
relationship), served with its own config against SQLite and the real PostgreSQL."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cherrypy
import pytest
import webtest

pytest.importorskip("sqlalchemy")

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "library.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("library_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # for SQLAlchemy's string annotations
    spec.loader.exec_module(module)
    return module


def sa_url(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy import URL

    params = conninfo_to_dict(dsn)
    return URL.create(
        "postgresql+psycopg", username=params.get("user"), host=params.get("host"),
        port=int(params.get("port") or 5432), database=params.get("dbname"),
    ).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def library_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'library.db'}"
    else:
        yield sa_url(request.getfixturevalue("database"))


@pytest.fixture
def library(cp_engine: Any, library_url: str) -> Iterator[webtest.TestApp]:
    module = load_example()
    conf = module.config(library_url)
    cherrypy.config.update(conf["global"])
    cherrypy.engine.subscribe("start", module.create_tables, priority=72)
    app = cherrypy.tree.mount(module.Library(), "/", {"/": conf["/"]})
    cherrypy.engine.start()
    try:
        yield webtest.TestApp(app)
    finally:
        cherrypy.engine.unsubscribe("start", module.create_tables)


def test_authors_and_their_books(library: webtest.TestApp) -> None:
    first = library.post("/authors", {"name": "Ursula K. Le Guin"}).json["id"]
    second = library.post("/authors", {"name": "Stanislaw Lem"}).json["id"]
    library.post(f"/authors/{first}/books", {"title": "A Wizard of Earthsea"})
    library.post(f"/authors/{first}/books", {"title": "The Dispossessed"})
    library.post(f"/authors/{second}/books", {"title": "Solaris"})

    assert library.get("/").json == [
        {"id": first, "name": "Ursula K. Le Guin",
         "books": ["A Wizard of Earthsea", "The Dispossessed"]},
        {"id": second, "name": "Stanislaw Lem", "books": ["Solaris"]},
    ]


def test_a_refused_request_writes_nothing(library: webtest.TestApp) -> None:
    library.post("/authors/999/books", {"title": "Nobody's"}, status=404)
    library.post("/authors", {"name": "  "}, status=400)
    library.get("/authors", status=405)
    assert library.get("/").json == []
    from poodle_cherrypy import PoodlePlugin

    stats = PoodlePlugin.for_bus().pools["default"].stats()
    assert (stats.in_use, stats.discarded) == (0, 0)
