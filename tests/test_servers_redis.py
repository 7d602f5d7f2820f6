"""Redis with redis-py: what one request leaves on its connection (a SELECTed
database, an unfinished MULTI, WATCHed keys) is not seen by the next user of
that same connection (same CLIENT ID). Each test has a control without
``redis_reset`` that shows the leftover, so the test can tell.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest
from servers import Redis

from poodle_cherrypy import Pool
from poodle_cherrypy.drivers import redis_check, redis_client, redis_reset

with contextlib.suppress(ImportError):  # redis_url skips (or fails) each test, saying why
    import redis

pytestmark = pytest.mark.services

OTHER_DB = 5


@pytest.fixture
def rds(redis_url: str) -> Iterator[Redis]:
    server = Redis(redis_url)
    yield server
    server.close()


@pytest.fixture
def key(rds: Redis) -> Iterator[str]:
    """A key name nobody else uses, deleted (in both databases) at the end."""
    name = f"poodle-test-{uuid.uuid4().hex}"
    yield name
    rds.admin.delete(name)
    other = redis.Redis.from_url(rds.url_for(db=OTHER_DB))
    other.delete(name)
    other.close()


@pytest.mark.parametrize("reset", [redis_reset, None])
def test_next_user_is_back_in_its_database_and_out_of_multi(
    rds: Redis, key: str, reset: Optional[Callable[[Any], None]]
) -> None:
    with Pool(rds.factory(), max_size=1, check=redis_check, reset=reset) as pool:
        with pool.get() as conn:
            first = rds.session_id(conn)
            db = conn.connection.db
            conn.execute_command("SELECT", OTHER_DB)
            conn.execute_command("MULTI")
            conn.execute_command("SET", key, "left behind")  # queued
        with pool.get() as conn:
            if reset is None:  # the control: still in the MULTI, in the other database
                assert conn.execute_command("GET", key, NEVER_DECODE=True) == b"QUEUED"
                conn.execute_command("DISCARD")
                assert conn.client_info()["db"] == OTHER_DB
                return
            assert rds.session_id(conn) == first  # the same connection, reused
            assert conn.client_info()["db"] == db
            assert conn.get(key) is None
        assert pool.stats().discarded == 0
    assert rds.admin.exists(key) == 0  # the queued SET never ran


@pytest.mark.parametrize("reset", [redis_reset, None])
def test_next_user_does_not_inherit_watched_keys(
    rds: Redis, key: str, reset: Optional[Callable[[Any], None]]
) -> None:
    with Pool(rds.factory(), max_size=1, reset=reset) as pool:
        with pool.get() as conn:
            first = rds.session_id(conn)
            conn.execute_command("WATCH", key)
        rds.admin.set(key, "changed by someone else")
        with pool.get() as conn:
            assert rds.session_id(conn) == first
            # A transaction of the next user's own, on keys it never watched:
            # a WATCH left over would abort it (EXEC answers nil).
            conn.execute_command("MULTI")
            conn.execute_command("INCR", key + "-counter")
            result = conn.execute_command("EXEC")
            conn.delete(key + "-counter")
    assert result == (None if reset is None else [1])


def test_redis_reset_refuses_a_client_with_a_connection_pool_of_its_own(redis_url: str) -> None:
    conn = redis.Redis.from_url(redis_url)
    try:
        with pytest.raises(TypeError, match="single_connection_client"):
            redis_reset(conn)
    finally:
        conn.close()


def test_redis_client_owns_one_connection_and_does_not_retry(redis_url: str) -> None:
    conn = redis_client(redis_url, client_name=f"poodle-test-{uuid.uuid4().hex[:12]}")
    try:
        assert conn.connection is not None  # connected by the factory
        assert conn.connection.retry.get_retries() == 0
    finally:
        conn.close()
