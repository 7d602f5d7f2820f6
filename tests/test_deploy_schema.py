"""Several workers start at once on a fresh PostgreSQL database: each creates
the schema, and none fails (``CREATE TABLE IF NOT EXISTS`` alone races in
PostgreSQL: two sessions both see no table, and the second one's insert into
the catalog fails with a unique violation)."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import with_search_path

from sample_app import db, store

pytestmark = pytest.mark.services


def test_concurrent_schema_creation_on_postgresql(postgres_dsn: str) -> None:
    import psycopg

    errors: list[BaseException] = []
    for _ in range(5):
        schema = f"poodle_schema_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        try:
            url = with_search_path(postgres_dsn, schema)
            conns = [db.connect_postgresql(url) for _ in range(4)]
            barrier = threading.Barrier(len(conns))

            def create(conn: psycopg.Connection[object], barrier: threading.Barrier) -> None:
                barrier.wait(10)
                try:
                    store.ensure_schema(conn)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=create, args=(c, barrier)) for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            for c in conns:
                c.close()
        finally:
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")
    assert errors == []
