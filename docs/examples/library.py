"""library.py: a small SQLAlchemy ORM application on poodle: authors and their books.

Run it: ``DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/test python library.py``
(without ``DATABASE_URL``, SQLite: ``library.db`` in the working directory). Then::

    curl -d name=Le+Guin localhost:8080/authors          # {"id": 1}
    curl -d title=Earthsea localhost:8080/authors/1/books
    curl localhost:8080/                                  # the authors and their books
"""

from __future__ import annotations

import os
from typing import Any

import cherrypy
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

import poodle_cherrypy  # registers tools.poodle and the poodle config namespace


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    books: Mapped[list[Book]] = relationship(back_populates="author", order_by="Book.id")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


@cherrypy.popargs("author_id")
class Authors:
    """``POST /authors`` adds one; ``POST /authors/<id>/books`` adds a book of theirs."""

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["POST"])
    @cherrypy.tools.json_out()
    def index(self, name: str = "", author_id: str | None = None) -> dict[str, Any]:
        if author_id is not None or not name.strip():
            raise cherrypy.HTTPError(400, "POST /authors with a name")
        author = Author(name=name.strip())
        cherrypy.request.db.add(author)
        cherrypy.request.db.flush()  # the id, now; the commit comes with the 200
        return {"id": author.id}

    @cherrypy.expose
    @cherrypy.tools.allow(methods=["POST"])
    @cherrypy.tools.json_out()
    def books(self, author_id: str, title: str = "") -> dict[str, Any]:
        db = cherrypy.request.db
        author = db.get(Author, int(author_id)) if author_id.isdigit() else None
        if author is None:
            raise cherrypy.NotFound()  # a 404: anything this request wrote is rolled back
        book = Book(title=title.strip() or "Untitled")
        author.books.append(book)
        db.flush()
        return {"id": book.id}


class Library:
    authors = Authors()

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def index(self) -> list[dict[str, Any]]:
        query = select(Author).options(selectinload(Author.books)).order_by(Author.id)
        return [
            {"id": a.id, "name": a.name, "books": [b.title for b in a.books]}
            for a in cherrypy.request.db.scalars(query)
        ]


def config(url: str) -> dict[str, dict[str, Any]]:
    """The app's config: the pool, declared for SQLAlchemy, and the tool on."""
    pool: dict[str, Any] = {
        "poodle.default.sqlalchemy_url": url,
        "poodle.default.max_size": 8,
        "poodle.default.timeout": 5.0,
    }
    if url.startswith("sqlite"):
        # Connections move between CherryPy's threads (one thread at a time).
        pool["poodle.default.sqlalchemy_options"] = {
            "connect_args": {"check_same_thread": False}
        }
    return {
        "global": pool,
        "/": {
            "tools.poodle.on": True,
            "tools.poodle.transaction": True,
            # POST /authors is Authors.index: served, not redirected to /authors/.
            "tools.trailing_slash.on": False,
        },
    }


def create_tables() -> None:
    """Create the tables on the pool's Engine (at engine start)."""
    engine = poodle_cherrypy.PoodlePlugin.for_bus().bindings["default"].engine
    Base.metadata.create_all(engine)


if __name__ == "__main__":
    conf = config(os.environ.get("DATABASE_URL", "sqlite:///library.db"))
    cherrypy.config.update(conf["global"])
    # After the pools open (priority 70), before the HTTP server listens (75).
    cherrypy.engine.subscribe("start", create_tables, priority=72)
    cherrypy.quickstart(Library(), "/", {"/": conf["/"]})
