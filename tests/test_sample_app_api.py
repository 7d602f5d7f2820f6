"""sample_app's JSON API through WebTest, on SQLite and on PostgreSQL.

Every test runs on both backends (the ``sample_database`` fixture); bad input
is shown to write nothing, and to cost no connection either.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cherrypy
import pytest
import webtest
from conftest import with_search_path

from poodle_cherrypy import PoodlePlugin, get_pool
from sample_app import SampleApp, db, store
from sample_app.api import MAX_LIMIT

REV = "1-0123456789abcdef0123456789abcdef"  # well formed, never current


def serve(engine: Any, spec: dict[str, Any], config: Any = None, **options: Any) -> Any:
    """The sample app on pool "default" (``spec``), engine started; a WebTest app."""
    PoodlePlugin(engine, {"default": spec}).subscribe()
    sample = SampleApp(engine, **options)
    app = sample.mount(config=config)
    sample.subscribe()
    engine.start()
    test_app = webtest.TestApp(app)
    test_app.sample = sample
    return test_app


@pytest.fixture
def app(cp_engine: Any, sample_database: str) -> Iterator[Any]:
    test_app = serve(cp_engine, db.pool_spec(sample_database, 4))
    yield test_app
    cp_engine.stop()
    test_app.sample.unsubscribe()


def put(app: Any, doc_id: str, body: Any, status: Any = None) -> Any:
    return app.put(
        f"/docs/{doc_id}",
        json.dumps(body),
        content_type="application/json",
        status=status,
        expect_errors=status is not None,
    )


def assert_error(res: Any, status: int, error: str) -> dict[str, Any]:
    assert res.status_int == status, res.text
    assert res.content_type == "application/json"
    assert res.body == res.body.strip()  # no padding
    body: dict[str, Any] = json.loads(res.text)
    assert set(body) == {"error", "reason"}
    assert body["error"] == error
    assert body["reason"]
    return body


def snapshot(app: Any) -> Any:
    """Everything the store holds, read through the API."""
    rows = app.get("/docs?limit=1000").json["rows"]
    return rows, [app.get(f"/docs/{row['id']}").json for row in rows]


# -- the happy paths -------------------------------------------------------------


def test_create_read_update_delete(app: Any) -> None:
    res = put(app, "note-1", {"title": "hello", "tags": ["a", "b"]}, status=201)
    assert res.content_type == "application/json"
    created = res.json
    assert created["id"] == "note-1"
    assert created["rev"].startswith("1-") and store.is_valid_rev(created["rev"])

    doc = app.get("/docs/note-1").json
    assert doc == {"_id": "note-1", "_rev": created["rev"], "title": "hello", "tags": ["a", "b"]}

    res = put(app, "note-1", {**doc, "title": "hello again"}, status=200)
    updated = res.json
    assert updated["id"] == "note-1" and updated["rev"].startswith("2-")
    doc = app.get("/docs/note-1").json
    assert doc == {"_id": "note-1", "_rev": updated["rev"], "title": "hello again",
                   "tags": ["a", "b"]}

    res = app.delete(f"/docs/note-1?rev={updated['rev']}", status=200)
    assert res.json == {"id": "note-1", "rev": updated["rev"], "deleted": True}
    missing = assert_error(app.get("/docs/note-1", status=404), 404, "not_found")
    assert missing["reason"] == "no document has this id"
    assert_error(app.delete(f"/docs/note-1?rev={updated['rev']}", status=404), 404, "not_found")
    # Deleted means gone: the id can be created again, from revision 1.
    assert put(app, "note-1", {}, status=201).json["rev"].startswith("1-")
    assert get_pool().stats().in_use == 0


def test_revisions_count_writes_and_depend_on_content(app: Any) -> None:
    rev_a = put(app, "a", {"x": 1}, status=201).json["rev"]
    rev_b = put(app, "b", {"x": 2}, status=201).json["rev"]
    assert rev_a.split("-")[0] == rev_b.split("-")[0] == "1"
    assert rev_a != rev_b
    rev = rev_a
    for n in range(2, 6):
        rev = put(app, "a", {"_rev": rev, "x": n}, status=200).json["rev"]
        assert rev.startswith(f"{n}-")
    assert app.get("/docs/a").json == {"_id": "a", "_rev": rev, "x": 5}


def test_a_body_may_repeat_its_id(app: Any) -> None:
    put(app, "same", {"_id": "same", "v": 1}, status=201)
    assert app.get("/docs/same").json["v"] == 1


def test_any_json_text_survives(app: Any) -> None:
    content = {"text": "caf\u00e9 \u2603 \U0001f600 \"quoted\" \\ \u0000 <b>&amp;</b>",
               "nested": {"list": [1, 2.5, None, True, {"deep": []}]}, "": "empty key"}
    put(app, "text", content, status=201)
    doc = app.get("/docs/text").json
    assert {k: v for k, v in doc.items() if not k.startswith("_")} == content


def test_head_answers_like_get_without_a_body(app: Any) -> None:
    put(app, "h", {"v": 1}, status=201)
    res = app.head("/docs/h", status=200)
    assert res.body == b""
    assert res.content_type == "application/json"
    app.head("/docs", status=200)
    app.head("/docs/absent", status=404)


# -- conflicts -------------------------------------------------------------------------


def test_a_missing_or_stale_rev_is_a_conflict_and_writes_nothing(app: Any) -> None:
    rev1 = put(app, "doc", {"v": 1}, status=201).json["rev"]
    rev2 = put(app, "doc", {"_rev": rev1, "v": 2}, status=200).json["rev"]
    before = snapshot(app)

    # No _rev: creating an id that exists.
    assert_error(put(app, "doc", {"v": "no rev"}, status=409), 409, "conflict")
    # A stale _rev, and one that was never current.
    assert_error(put(app, "doc", {"_rev": rev1, "v": "stale"}, status=409), 409, "conflict")
    assert_error(put(app, "doc", {"_rev": REV, "v": "made up"}, status=409), 409, "conflict")
    # A _rev for a document that does not exist.
    assert_error(put(app, "nothing", {"_rev": rev2, "v": 0}, status=409), 409, "conflict")
    # Deleting with a stale rev, or with none.
    assert_error(app.delete(f"/docs/doc?rev={rev1}", status=409), 409, "conflict")
    assert_error(app.delete("/docs/doc", status=409), 409, "conflict")

    assert snapshot(app) == before
    assert app.get("/docs/doc").json["_rev"] == rev2
    stats = get_pool().stats()
    assert stats.in_use == 0 and stats.discarded == 0


# -- listing -------------------------------------------------------------------


def test_listing_pages_through_ids_in_byte_order(app: Any) -> None:
    ids = ["b", "a-1", "a.2", "a_3", "a~4", "A5", "a0", "Z", "9", "a", "ab", "b1"]
    revs = {doc_id: put(app, doc_id, {"id": doc_id}, status=201).json["rev"] for doc_id in ids}

    seen: list[dict[str, str]] = []
    after = None
    for _ in range(len(ids) + 1):  # bounded: a page holds at least one row
        url = "/docs?limit=5" + (f"&after={after}" if after else "")
        page = app.get(url).json
        assert len(page["rows"]) <= 5
        seen += page["rows"]
        after = page["next"]
        if after is None:
            break
        assert after == page["rows"][-1]["id"]
    assert after is None
    assert [row["id"] for row in seen] == sorted(ids)  # byte order on both backends
    assert all(row["rev"] == revs[row["id"]] for row in seen)

    assert app.get("/docs").json == {"rows": seen, "next": None}
    prefixed = app.get("/docs?prefix=a").json
    assert [row["id"] for row in prefixed["rows"]] == sorted(i for i in ids if i.startswith("a"))
    assert prefixed["next"] is None
    page = app.get("/docs?prefix=a&limit=2&after=a-1").json
    assert [row["id"] for row in page["rows"]] == ["a.2", "a0"]
    assert page["next"] == "a0"
    assert app.get("/docs?prefix=nothing").json == {"rows": [], "next": None}
    assert app.get(f"/docs?limit={MAX_LIMIT}&after=b1").json == {"rows": [], "next": None}


def test_an_empty_store_lists_nothing(app: Any) -> None:
    assert app.get("/docs").json == {"rows": [], "next": None}
    assert app.get("/docs/").json == {"rows": [], "next": None}


# -- bad input ----------------------------------------------------------------------

BIG = 1024 * 1024  # the default body limit


def _body(text: str, content_type: str = "application/json") -> dict[str, Any]:
    return {"body": text.encode("utf-8"), "content_type": content_type}


BAD_REQUESTS = [
    # (id, method, path, request options, status, error)
    ("invalid-json", "PUT", "/docs/seed", _body('{"a": '), 400, "bad_request"),
    ("not-utf8", "PUT", "/docs/seed", {"body": b'{"a": "\xff"}',
                                       "content_type": "application/json"}, 400, "bad_request"),
    ("empty-body", "PUT", "/docs/seed", _body(""), 400, "bad_request"),
    ("array", "PUT", "/docs/new", _body("[1, 2]"), 400, "bad_request"),
    ("string", "PUT", "/docs/new", _body('"text"'), 400, "bad_request"),
    ("null", "PUT", "/docs/new", _body("null"), 400, "bad_request"),
    ("nan", "PUT", "/docs/new", _body('{"a": NaN}'), 400, "bad_request"),
    ("too-deep", "PUT", "/docs/new", _body("[" * 100_000 + "]" * 100_000), 400, "bad_request"),
    ("id-mismatch", "PUT", "/docs/new", _body('{"_id": "other"}'), 400, "bad_request"),
    ("unknown-special", "PUT", "/docs/new", _body('{"_attachments": {}}'), 400, "bad_request"),
    ("rev-not-a-string", "PUT", "/docs/seed", _body('{"_rev": 1}'), 400, "bad_request"),
    ("rev-malformed", "PUT", "/docs/seed", _body('{"_rev": "1-xyz"}'), 400, "bad_request"),
    ("id-too-long", "PUT", "/docs/" + "a" * 201, _body("{}"), 400, "bad_request"),
    ("id-space", "PUT", "/docs/a%20b", _body("{}"), 400, "bad_request"),
    ("id-non-ascii", "PUT", "/docs/caf%C3%A9", _body("{}"), 400, "bad_request"),
    ("id-punctuation", "PUT", "/docs/a!b", _body("{}"), 400, "bad_request"),
    ("id-leading-dot", "PUT", "/docs/.hidden", _body("{}"), 400, "bad_request"),
    ("get-bad-id", "GET", "/docs/a%2Cb", {}, 400, "bad_request"),
    ("put-param", "PUT", "/docs/new?batch=ok", _body("{}"), 400, "bad_request"),
    ("too-large", "PUT", "/docs/new",
     _body('{"a": "' + "x" * BIG + '"}'), 413, "too_large"),
    ("form", "PUT", "/docs/new", _body("a=1", "application/x-www-form-urlencoded"),
     415, "unsupported_media_type"),
    ("text", "PUT", "/docs/new", _body("{}", "text/plain"), 415, "unsupported_media_type"),
    # Refused before CherryPy's multipart processor, which would raise a 500
    # on the missing boundary.
    ("multipart-no-boundary", "PUT", "/docs/new", _body("{}", "multipart/form-data"),
     415, "unsupported_media_type"),
    ("multipart-mixed", "PUT", "/docs/new", _body("{}", "multipart/mixed"),
     415, "unsupported_media_type"),
    ("multipart-with-boundary", "PUT", "/docs/new",
     _body("--b\r\n\r\n{}\r\n--b--\r\n", "multipart/form-data; boundary=b"),
     415, "unsupported_media_type"),
    ("no-content-type", "PUT", "/docs/new", {"body": b"{}"}, 415, "unsupported_media_type"),
    # "_rev": null is not "no _rev": like CouchDB, a _rev that is not a revision is refused.
    ("rev-null", "PUT", "/docs/new", _body('{"_rev": null}'), 400, "bad_request"),
    ("rev-null-existing", "PUT", "/docs/seed", _body('{"_rev": null, "v": 2}'),
     400, "bad_request"),
    ("delete-bad-rev", "DELETE", "/docs/seed?rev=nonsense", {}, 400, "bad_request"),
    ("limit-zero", "GET", "/docs?limit=0", {}, 400, "bad_request"),
    ("limit-over", "GET", f"/docs?limit={MAX_LIMIT + 1}", {}, 400, "bad_request"),
    ("limit-text", "GET", "/docs?limit=ten", {}, 400, "bad_request"),
    ("limit-negative", "GET", "/docs?limit=-1", {}, 400, "bad_request"),
    ("limit-twice", "GET", "/docs?limit=1&limit=2", {}, 400, "bad_request"),
    ("prefix-bad", "GET", "/docs?prefix=a%20b", {}, 400, "bad_request"),
    ("after-bad", "GET", "/docs?after=%2F", {}, 400, "bad_request"),
    ("list-unknown-param", "GET", "/docs?include_docs=true", {}, 400, "bad_request"),
    ("get-param", "GET", "/docs/seed?rev=1", {}, 400, "bad_request"),
    ("status-param", "GET", "/status?verbose=1", {}, 400, "bad_request"),
    ("below-a-document", "GET", "/docs/seed/attachment", {}, 404, "not_found"),
    ("no-such-page", "GET", "/nothing/here", {}, 404, "not_found"),
]


@pytest.mark.parametrize(
    ("method", "path", "options", "status", "error"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_gets_a_json_4xx_and_writes_nothing(
    app: Any, method: str, path: str, options: dict[str, Any], status: int, error: str
) -> None:
    put(app, "seed", {"v": 1}, status=201)
    before = snapshot(app)
    checkouts = get_pool().stats().checkouts

    res = app.request(path, method=method, expect_errors=True, **options)

    assert_error(res, status, error)
    if "content_type" not in options and "body" in options:
        assert "CONTENT_TYPE" not in res.request.environ  # sent with no Content-Type at all
    # Refused before tools.poodle checked a connection out.
    assert get_pool().stats().checkouts == checkouts
    assert snapshot(app) == before


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/docs/seed", "DELETE, GET, HEAD, PUT"),
        ("PATCH", "/docs/seed", "DELETE, GET, HEAD, PUT"),
        ("OPTIONS", "/docs/seed", "DELETE, GET, HEAD, PUT"),
        ("PUT", "/docs", "GET, HEAD"),
        ("POST", "/docs", "GET, HEAD"),
        ("DELETE", "/docs", "GET, HEAD"),
        ("POST", "/status", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
    ],
)
def test_a_wrong_method_gets_405_with_allow(app: Any, method: str, path: str, allow: str) -> None:
    put(app, "seed", {"v": 1}, status=201)
    before = snapshot(app)
    checkouts = get_pool().stats().checkouts

    res = app.request(path, method=method, body=b"{}", content_type="application/json",
                      expect_errors=True)

    assert_error(res, 405, "method_not_allowed")
    assert res.headers["Allow"] == allow
    assert get_pool().stats().checkouts == checkouts
    assert snapshot(app) == before


def test_the_body_limit_is_configurable(cp_engine: Any, tmp_path: Path) -> None:
    app = serve(cp_engine, db.pool_spec(str(tmp_path / "docs.sqlite3"), 2), max_body=64)
    try:
        put(app, "small", {"v": "x" * 40}, status=201)
        res = put(app, "large", {"v": "x" * 64}, status=413)
        assert "64 bytes" in assert_error(res, 413, "too_large")["reason"]
        assert_error(app.get("/docs/large", status=404), 404, "not_found")
    finally:
        cp_engine.stop()
        app.sample.unsubscribe()


def _committed_rows(database: str) -> list[tuple[str, str]]:
    """What a connection of its own sees: committed rows only."""
    if db.is_postgresql_url(database):
        import psycopg

        with psycopg.connect(database) as conn:
            return [tuple(row) for row in conn.execute("SELECT id, rev FROM docs ORDER BY id")]
    with sqlite3.connect(database) as conn:
        return list(conn.execute("SELECT id, rev FROM docs ORDER BY id"))


def test_writes_are_committed_and_refused_writes_are_not(app: Any, sample_database: str) -> None:
    rev = put(app, "a", {"v": 1}, status=201).json["rev"]
    assert _committed_rows(sample_database) == [("a", rev)]
    rev = put(app, "a", {"_rev": rev, "v": 2}, status=200).json["rev"]
    put(app, "a", {"_rev": REV, "v": 3}, status=409)
    put(app, "b", {"v": 1}, status=201)
    put(app, "b", {"v": 2}, status=409)
    assert _committed_rows(sample_database)[0] == ("a", rev)
    app.delete(f"/docs/a?rev={rev}", status=200)
    assert [doc_id for doc_id, _ in _committed_rows(sample_database)] == ["b"]
    stats = get_pool().stats()
    assert (stats.in_use, stats.discarded) == (0, 0)


# -- failures --------------------------------------------------------------------------


def _drop_table(database: str) -> None:
    if db.is_postgresql_url(database):
        import psycopg

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("DROP TABLE docs")
    else:
        with sqlite3.connect(database) as conn:
            conn.execute("DROP TABLE docs")


def test_a_server_error_is_json_with_no_traceback(app: Any, sample_database: str) -> None:
    put(app, "seed", {"v": 1}, status=201)
    _drop_table(sample_database)  # every query now fails in the database

    for res in (app.get("/docs/seed", expect_errors=True),
                put(app, "seed", {"v": 2}, status=500)):
        body = assert_error(res, 500, "internal_error")
        assert "Traceback" not in res.text and "docs" not in body["reason"]
    # An SQL error says nothing about the connection: the pool keeps it.
    stats = get_pool().stats()
    assert (stats.in_use, stats.discarded) == (0, 0)


def test_sqlite_busy_is_a_503_with_retry_after_and_the_connection_is_kept(
    cp_engine: Any, tmp_path: Path
) -> None:
    path = str(tmp_path / "docs.sqlite3")
    spec = {**db.pool_spec(path, 2), "kwargs": {"busy_timeout": 0.05}}
    app = serve(cp_engine, spec)
    try:
        rev = put(app, "doc", {"v": 1}, status=201).json["rev"]
        writer = db.connect_sqlite(path)
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            res = put(app, "doc", {"_rev": rev, "v": 2}, status=503)
            assert_error(res, 503, "unavailable")
            assert res.headers["Retry-After"] == "1"
            assert app.get("/docs/doc").json["v"] == 1  # WAL: reads go on
        finally:
            writer.rollback()
            writer.close()
        put(app, "doc", {"_rev": rev, "v": 2}, status=200)
        stats = get_pool().stats()
        assert (stats.in_use, stats.discarded, stats.created) == (0, 0, 1)
    finally:
        cp_engine.stop()
        app.sample.unsubscribe()


def test_no_connection_is_a_json_503(cp_engine: Any, tmp_path: Path) -> None:
    spec = {**db.pool_spec(str(tmp_path / "docs.sqlite3"), 1), "timeout": 0.0}
    app = serve(cp_engine, spec)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with get_pool().get():  # the only connection, held by another thread
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        res = app.get("/docs/any", status=503)
        release.set()
        holder.join(60)
        assert_error(res, 503, "unavailable")
        assert res.headers["Retry-After"]
        assert app.get("/docs", status=200).json == {"rows": [], "next": None}
    finally:
        release.set()
        holder.join(60)
        cp_engine.stop()
        app.sample.unsubscribe()


# -- /status and the page -------------------------------------------------------------


def test_status_shows_every_pool_and_the_history(app: Any) -> None:
    put(app, "doc", {"v": 1}, status=201)
    app.sample.history.sample()

    res = app.get("/status")
    assert res.content_type == "application/json"
    status = res.json
    assert set(status["pools"]) == {"default"}
    pool = status["pools"]["default"]
    p99 = pool.pop("wait_time_p99")
    assert pool == get_pool().stats().as_dict()
    assert (pool["in_use"], pool["max_size"], pool["checkouts"]) == (0, 4, 2)
    history = status["history"]
    assert (history["interval"], history["seconds"]) == (1.0, 300.0)
    series = history["pools"]["default"]
    assert set(series) == {"t", "in_use", "idle", "waiting", "size", "max_size", "wait_time_p99"}
    # The two checkouts (the schema, the PUT) were in the last interval, or
    # an earlier one: a p99 of seconds, or None.
    assert p99 == series["wait_time_p99"][-1]
    assert all(v is None or 0 <= v <= 60 for v in series["wait_time_p99"])
    assert len({len(column) for column in series.values()}) == 1
    assert series["t"] == sorted(series["t"]) and len(series["t"]) >= 2  # at start, and now
    assert (series["in_use"][-1], series["idle"][-1], series["max_size"][-1]) == (0, 1, 4)


def test_status_wait_p99_covers_the_last_interval(app: Any) -> None:
    app.sample.history.sample()  # the checkouts so far are behind this sample
    put(app, "doc", {"v": 1}, status=201)
    app.sample.history.sample()
    first = app.get("/status").json["pools"]["default"]["wait_time_p99"]
    assert isinstance(first, float) and 0 <= first < 60
    app.sample.history.sample()  # no checkout since the last sample
    assert app.get("/status").json["pools"]["default"]["wait_time_p99"] is None


def test_metrics_for_prometheus(app: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    put(app, "doc", {"v": 1}, status=201)
    res = app.get("/metrics", status=200)
    assert res.content_type == "text/plain"
    got = {
        (s.name, s.labels.get("state")): (s.labels, s.value)
        for f in text_string_to_metric_families(res.text)
        for s in f.samples
    }
    labels, value = got[("db_client_connection_wait_time_seconds_count", None)]
    assert labels == {"pool_name": "default", "pid": str(os.getpid())}
    assert value == get_pool().stats().checkouts
    assert got[("db_client_connection_max", None)][1] == 4
    assert got[("db_client_connection_count", "used")][1] == 0


def test_metrics_without_prometheus_client_is_a_clear_501(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    error = assert_error(app.get("/metrics", status=501), 501, "not_implemented")
    assert "pip install 'poodle_cherrypy[prometheus]'" in error["reason"]


@pytest.mark.services
def test_status_never_shows_the_database_url_or_its_password(
    cp_engine: Any, postgres_dsn: str, postgres_schema: str
) -> None:
    secret = "s3cret-Pa55word"
    user, at, host = postgres_dsn.partition("://")[2].partition("@")
    assert at and ":" not in user, "the test DSN must carry no password of its own"
    url = with_search_path(f"postgresql://{user}:{secret}@{host}", postgres_schema)
    app = serve(cp_engine, db.pool_spec(url, 2))
    try:
        put(app, "doc", {"v": 1}, status=201)  # the pool has connected
        app.sample.history.sample()
        text = app.get("/status").text
        assert json.loads(text)["pools"]["default"]["created"] == 1
        for leak in (secret, url, postgres_schema, host):
            assert leak not in text
    finally:
        cp_engine.stop()
        app.sample.unsubscribe()


def test_the_page_and_its_files_are_served(app: Any) -> None:
    page = app.get("/")
    assert page.content_type == "text/html"
    assert 'id="pool-chart"' in page.text and "static/app.js" in page.text
    assert app.get("/static/app.js").content_type in ("application/javascript",
                                                      "text/javascript")
    assert app.get("/static/style.css").content_type == "text/css"
    assert_error(app.get("/static/nothing.js", status=404), 404, "not_found")


# -- the example config file -----------------------------------------------------------

APP_CONF = Path(__file__).resolve().parent.parent / "sample_app" / "app.conf"


def test_app_conf_declares_the_pool(
    cp_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cherrypy.config.update(str(APP_CONF))

    pool = get_pool("default")
    assert pool.stats().max_size == 8
    assert cherrypy.config["server.socket_port"] == 8080

    sample = SampleApp(cp_engine)
    app = webtest.TestApp(sample.mount(config=str(APP_CONF)))
    sample.subscribe()
    cp_engine.start()
    try:
        rev = put(app, "from-conf", {"v": 1}, status=201).json["rev"]
        assert app.get("/docs/from-conf").json == {"_id": "from-conf", "_rev": rev, "v": 1}
    finally:
        cp_engine.stop()
        sample.unsubscribe()
    assert (tmp_path / "data" / "docs.sqlite3").is_file()
    with sqlite3.connect(tmp_path / "data" / "docs.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
