"""The documents' SQL: one table, CouchDB-like revisions, race-safe writes.

A document is a JSON object stored under an id, with a revision
``"<n>-<hash>"``: ``n`` counts the writes since the document was created and
``hash`` is a digest of the previous revision and the new content. A write
names the revision it read; the database applies it only if that is still the
current one (``UPDATE ... WHERE id = ? AND rev = ?``), so of concurrent
writers of one revision exactly one wins and the others get
:class:`Conflict`. Creating inserts with ``ON CONFLICT DO NOTHING``, so two
concurrent creators of one id cannot both succeed either, and neither fails
on the primary key.

The functions here run SQL on a connection the caller holds, one that
:mod:`sample_app.db` opened in autocommit mode: a read is a statement of its
own, a write begins a transaction (:attr:`Dialect.begin_write`) and never
commits it. In the app, ``tools.poodle.transaction`` commits it when the
request succeeds and rolls it back otherwise. All values are bound parameters.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from .db import POSTGRESQL, Connection, Dialect, dialect_of

__all__ = [
    "ID_CHARACTERS",
    "MAX_ID_LENGTH",
    "Conflict",
    "Document",
    "NotFound",
    "Page",
    "create",
    "delete",
    "encode",
    "ensure_schema",
    "is_valid_id",
    "is_valid_rev",
    "next_rev",
    "page",
    "read",
    "update",
]

#: The characters an id may use (RFC 3986's unreserved characters): ids need
#: no escaping in a URL path.
ID_CHARACTERS = "A-Z a-z 0-9 . _ ~ -"
#: The longest id, in characters.
MAX_ID_LENGTH = 200

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")
_ID_CHARS = re.compile(r"[A-Za-z0-9._~-]*")
_REV = re.compile(r"([1-9][0-9]{0,17})-[0-9a-f]{32}")

#: Sorts after every character an id may hold ("~" is the last of them), so
#: that ``prefix <= id < prefix + _AFTER_ID_CHARS`` selects the ids starting
#: with ``prefix``, on the primary key's index, in both databases.
_AFTER_ID_CHARS = "\x7f"


class Conflict(Exception):
    """The write names a revision that is not (or no longer) the current one."""


class NotFound(Exception):
    """There is no document with this id."""


@dataclass(frozen=True)
class Document:
    """A stored document."""

    id: str
    rev: str
    body: str
    """The content as stored: a JSON object without ``_id`` and ``_rev``."""

    def as_json(self) -> dict[str, Any]:
        """The document as the API shows it, ``_id`` and ``_rev`` first."""
        content: dict[str, Any] = json.loads(self.body)
        return {"_id": self.id, "_rev": self.rev, **content}


@dataclass(frozen=True)
class Page:
    """One page of the ids in order."""

    rows: list[tuple[str, str]]
    """``(id, rev)`` of each document on the page."""
    next: Optional[str]
    """The ``after`` that fetches the next page, or None on the last one."""


def is_valid_id(doc_id: str, prefix: bool = False) -> bool:
    """Whether ``doc_id`` is 1 to 200 of :data:`ID_CHARACTERS`, starting with a
    letter or digit (with ``prefix``: 0 to 200 of them, starting with anything)."""
    if len(doc_id) > MAX_ID_LENGTH:
        return False
    return (_ID_CHARS if prefix else _ID).fullmatch(doc_id) is not None


def is_valid_rev(rev: str) -> bool:
    """Whether ``rev`` has the form of a revision, ``"<n>-<32 hex digits>"``."""
    return _REV.fullmatch(rev) is not None


def encode(content: dict[str, Any]) -> str:
    """The stored form of a document's content (ASCII JSON, so any text survives)."""
    return json.dumps(content, separators=(",", ":"), allow_nan=False)


def next_rev(rev: Optional[str], body: str) -> str:
    """The revision that follows ``rev`` (None: a new document) for content ``body``."""
    if rev is None:
        number = 1
    else:
        match = _REV.fullmatch(rev)
        if match is None:
            raise ValueError(f"not a revision: {rev!r}")
        number = int(match.group(1)) + 1
    digest = hashlib.sha256(f"{rev or ''}\n{body}".encode("ascii")).hexdigest()
    return f"{number}-{digest[:32]}"


#: The advisory lock key under which the schema is created (any constant).
_SCHEMA_LOCK = 0x706F6F646C65


def ensure_schema(conn: Connection) -> None:
    """Create the documents table unless it exists, and commit.

    Safe when several processes start at once (gunicorn's workers): on
    PostgreSQL ``CREATE TABLE IF NOT EXISTS`` alone races (both sessions see
    no table, the second fails on the catalog's unique index), so it runs in a
    transaction holding an advisory lock; SQLite's ``BEGIN IMMEDIATE`` already
    lets one writer in at a time.
    """
    dialect = dialect_of(conn)
    _begin_write(conn, dialect)
    if dialect is POSTGRESQL:
        conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS docs ("
        f"id {dialect.id_type} PRIMARY KEY, "
        f"rev TEXT NOT NULL, "
        f"body TEXT NOT NULL)"
    )
    conn.commit()


def read(conn: Connection, doc_id: str) -> Optional[Document]:
    """The document ``doc_id``, or None."""
    dialect = dialect_of(conn)
    row = conn.execute(dialect.sql("SELECT rev, body FROM docs WHERE id = ?"), (doc_id,)).fetchone()
    return None if row is None else Document(doc_id, row[0], row[1])


def create(conn: Connection, doc_id: str, body: str) -> str:
    """Store a new document; its revision. :class:`Conflict` if the id is taken."""
    dialect = dialect_of(conn)
    rev = next_rev(None, body)
    _begin_write(conn, dialect)
    cursor = conn.execute(
        dialect.sql(
            "INSERT INTO docs (id, rev, body) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING"
        ),
        (doc_id, rev, body),
    )
    if cursor.rowcount != 1:
        raise Conflict("the document exists already: give its current _rev to update it")
    return rev


def update(conn: Connection, doc_id: str, rev: str, body: str) -> str:
    """Replace the content of revision ``rev``; the new revision.

    :class:`Conflict` unless ``rev`` is the document's current revision.
    """
    dialect = dialect_of(conn)
    new_rev = next_rev(rev, body)
    _begin_write(conn, dialect)
    cursor = conn.execute(
        dialect.sql("UPDATE docs SET rev = ?, body = ? WHERE id = ? AND rev = ?"),
        (new_rev, body, doc_id, rev),
    )
    if cursor.rowcount != 1:
        raise Conflict(f"{rev} is not the current revision of the document (or it was deleted)")
    return new_rev


def delete(conn: Connection, doc_id: str, rev: Optional[str]) -> None:
    """Delete revision ``rev`` of the document.

    :class:`NotFound` if there is no such document, :class:`Conflict` if
    ``rev`` is None or not its current revision.
    """
    dialect = dialect_of(conn)
    if rev is not None:
        _begin_write(conn, dialect)
        cursor = conn.execute(
            dialect.sql("DELETE FROM docs WHERE id = ? AND rev = ?"), (doc_id, rev)
        )
        if cursor.rowcount == 1:
            return
    current = read(conn, doc_id)
    if current is None:
        raise NotFound("no document has this id")
    if rev is None:
        raise Conflict("give the current revision to delete: ?rev=<_rev>")
    raise Conflict(f"{rev} is not the current revision of the document")


def page(conn: Connection, prefix: str, after: str, limit: int) -> Page:
    """Up to ``limit`` documents in id order: ids starting with ``prefix``
    (empty: all), after the id ``after`` (empty: from the first)."""
    dialect = dialect_of(conn)
    conditions: list[str] = []
    params: list[Any] = []
    if prefix:
        conditions.append("id >= ? AND id < ?")
        params += [prefix, prefix + _AFTER_ID_CHARS]
    if after:
        conditions.append("id > ?")
        params.append(after)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = conn.execute(
        dialect.sql(f"SELECT id, rev FROM docs{where} ORDER BY id LIMIT ?"),
        (*params, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = [(doc_id, rev) for doc_id, rev in rows[:limit]]
    return Page(rows, rows[-1][0] if more else None)


def _begin_write(conn: Connection, dialect: Dialect) -> None:
    conn.execute(dialect.begin_write)
