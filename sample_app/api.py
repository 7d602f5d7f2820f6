"""The JSON API: ``/docs``, ``/docs/<id>`` and ``/status``.

========================  =====================================================
request                   answer
========================  =====================================================
``GET /docs/<id>``        200 the document, with ``_id`` and ``_rev``; 404
``PUT /docs/<id>``        201 created (no ``_rev`` in the body), 200 updated
                          (the current ``_rev`` in the body); 409 if the
                          ``_rev`` is missing or stale, 400 if it is not a
                          revision (``null`` included). ``{"id", "rev"}``
``DELETE /docs/<id>``     ``?rev=<current _rev>``: 200 ``{"id", "rev",
                          "deleted"}``; 409 if the rev is missing or stale;
                          404
``GET /docs``             ``?prefix=&limit=&after=``: ``{"rows": [{"id",
                          "rev"}...], "next": <after for the next page>|null}``
``GET /status``           the serving process's ``pid``, every pool's stats and
                          their sampled history
``GET /health``           200, or 503 while the database cannot be reached
                          (:class:`poodle_cherrypy.PoodleHealth`)
``GET /metrics``          the pools' metrics for Prometheus (text exposition);
                          501 when ``prometheus_client`` is not installed
========================  =====================================================

Every error is JSON, ``{"error": "<name>", "reason": "<what to do>"}`` (see
:func:`json_error_page`). A request to ``/docs`` is checked by
:func:`read_docs_request` before CherryPy reads its body, and the body by
:func:`read_docs_body`, both before ``tools.poodle`` checks a connection out:
bad input costs no connection and writes nothing.
"""

from __future__ import annotations

import html
import http
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, TypeVar, cast

import cherrypy

from poodle_cherrypy import PoodlePlugin
from poodle_cherrypy.tool import ServiceUnavailable

from . import db, store
from .history import PoolHistory

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_BODY",
    "MAX_LIMIT",
    "DocsAPI",
    "MetricsAPI",
    "StatusAPI",
    "expose",
    "json_error_page",
    "read_docs_body",
    "read_docs_request",
    "trim_error_body",
]

#: Documents per page of ``GET /docs`` unless ``limit`` says otherwise.
DEFAULT_LIMIT = 100
#: The largest ``limit``.
MAX_LIMIT = 1000
#: The largest request body, in bytes, unless configured (``request.body.maxbytes``).
DEFAULT_MAX_BODY = 1024 * 1024

#: The methods each kind of resource answers (``Allow`` of a 405).
COLLECTION_METHODS = ("GET", "HEAD")
DOCUMENT_METHODS = ("DELETE", "GET", "HEAD", "PUT")

#: The special fields a body may hold; other fields starting with "_" are refused.
SPECIAL_FIELDS = ("_id", "_rev")

F = TypeVar("F", bound=Callable[..., Any])


def expose(func: F) -> F:
    """``cherrypy.expose``, typed."""
    return cast(F, cherrypy.expose(func))


# -- errors ----------------------------------------------------------------------

#: The ``error`` of a JSON error body, by status; others use the status phrase.
ERROR_NAMES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    500: "internal_error",
    503: "unavailable",
}


def json_error_page(status: str, message: str, traceback: str, version: str) -> bytes:
    """CherryPy's ``error_page.default``: every error answered as JSON.

    ``{"error": "conflict", "reason": "..."}``, Content-Type application/json.
    The reason is the message the error was raised with (CherryPy hands it
    over HTML-escaped). The traceback is never sent, whatever
    ``request.show_tracebacks`` says: it is in the error log.
    """
    code = int(status.split(None, 1)[0])
    try:
        name = ERROR_NAMES.get(code) or http.HTTPStatus(code).phrase.lower().replace(" ", "_")
    except ValueError:
        name = "error"
    cherrypy.serving.response.headers["Content-Type"] = "application/json"
    body = {"error": name, "reason": html.unescape(message)}
    return json.dumps(body).encode("ascii")


def trim_error_body() -> None:
    """``before_finalize`` and ``after_error_response`` hook: drop the spaces
    CherryPy pads short error pages with (for old Internet Explorers) from the
    JSON ones."""
    response = cherrypy.serving.response
    if response.headers.get("Content-Type") != "application/json" or response.stream:
        return
    if not str(response.status).startswith(("4", "5")):
        return
    body = response.collapse_body().rstrip(b" ")
    response.body = body
    response.headers["Content-Length"] = str(len(body))


def _busy() -> ServiceUnavailable:
    """503 with ``Retry-After: 1``: SQLite stayed locked by other writers past
    the busy timeout."""
    return ServiceUnavailable(1, "the database is busy with other writes; retry shortly")


def _bad_request(reason: str) -> cherrypy.HTTPError:
    return cherrypy.HTTPError(400, reason)


def _not_found(reason: str) -> cherrypy.HTTPError:
    # Not cherrypy.NotFound, whose argument is a path: "The path '...' was not found."
    return cherrypy.HTTPError(404, reason)


def _not_allowed(allowed: tuple[str, ...]) -> cherrypy.HTTPError:
    cherrypy.serving.response.headers["Allow"] = ", ".join(allowed)
    method = cherrypy.serving.request.method
    return cherrypy.HTTPError(405, f"{method} is not allowed here; use {', '.join(allowed)}")


def _answer(data: Any, status: int = 200) -> bytes:
    response = cherrypy.serving.response
    response.status = status
    response.headers["Content-Type"] = "application/json"
    return json.dumps(data).encode("ascii")


# -- /docs: reading the request ---------------------------------------------------


@dataclass(frozen=True)
class DocsRequest:
    """A request to ``/docs``, read and checked: what is left needs the database."""

    action: str
    """``"list"``, ``"read"``, ``"write"`` or ``"delete"``."""
    doc_id: str = ""
    rev: Optional[str] = None
    """``_rev`` of the body (write) or ``?rev=`` (delete), if given."""
    body: str = ""
    """The content to store (write), as :func:`store.encode` made it; set by
    :func:`read_docs_body`."""
    prefix: str = ""
    after: str = ""
    limit: int = DEFAULT_LIMIT


def read_docs_request() -> None:
    """``before_request_body`` hook of ``/docs``: check the request line and headers.

    Sets ``cherrypy.request.docs`` to a :class:`DocsRequest` (a write's body
    is left to :func:`read_docs_body`), or raises the 4xx that says what is
    wrong: 404 (a path under ``/docs/<id>/``), 405 with ``Allow``, 400 (an
    id or parameter that is not acceptable), 415 (a PUT whose
    ``Content-Type`` is not ``application/json``, or that has none), 413 (a
    declared ``Content-Length`` over ``request.body.maxbytes``, refused
    before any of the body is read). Runs before CherryPy's body
    processors, which it switches off: a body is only ever read as JSON.
    """
    request = cherrypy.serving.request
    vpath = getattr(request.handler, "args", None)
    if vpath is None:
        return  # no handler: the dispatcher's 404 goes ahead
    params = _single_params(request.params)
    method = "GET" if request.method == "HEAD" else request.method
    if not vpath:
        if method != "GET":
            raise _not_allowed(COLLECTION_METHODS)
        request.docs = _read_list_params(params)
        return
    if len(vpath) > 1:
        raise cherrypy.NotFound()
    if method not in DOCUMENT_METHODS:
        raise _not_allowed(DOCUMENT_METHODS)
    doc_id = vpath[0]
    if len(doc_id) > store.MAX_ID_LENGTH:
        raise _bad_request(f"the id is longer than {store.MAX_ID_LENGTH} characters")
    if not store.is_valid_id(doc_id):
        raise _bad_request(
            f"invalid id {doc_id!r}: use {store.ID_CHARACTERS}, starting with a letter or digit"
        )
    if method == "GET":
        _no_other_params(params, ())
        request.docs = DocsRequest("read", doc_id)
    elif method == "DELETE":
        _no_other_params(params, ("rev",))
        rev = params.get("rev")
        if rev is not None and not store.is_valid_rev(rev):
            raise _bad_request(f"invalid rev {rev!r}: a revision is <n>-<32 hex digits>")
        request.docs = DocsRequest("delete", doc_id, rev=rev)
    else:
        _check_document_headers(request, params)
        request.docs = DocsRequest("write", doc_id)


# Early among the before_request_body hooks; tools.poodle only checks a
# connection out later, at before_handler.
read_docs_request.priority = 40  # type: ignore[attr-defined]


def read_docs_body() -> None:
    """``before_handler`` hook of ``/docs``: read and check a write's body.

    Completes the :class:`DocsRequest` of a PUT, or raises: 400 (a body
    shorter than its ``Content-Length``, invalid JSON, a body that is not an
    object, an ``_id`` or ``_rev`` that is not acceptable, ``"_rev": null``
    included), 413 (a body over ``request.body.maxbytes``).
    """
    request = cherrypy.serving.request
    job: Optional[DocsRequest] = getattr(request, "docs", None)
    if job is None or job.action != "write":
        return
    request.docs = _read_document_body(request, job.doc_id)


# Before tools.poodle checks a connection out (95): a request refused here
# holds no connection, not even while its body arrives.
read_docs_body.priority = 40  # type: ignore[attr-defined]


def _single_params(params: dict[str, Any]) -> dict[str, str]:
    for name, value in params.items():
        if not isinstance(value, str):
            raise _bad_request(f"parameter {name!r} is given more than once")
    return params


def _no_other_params(params: dict[str, str], known: tuple[str, ...]) -> None:
    for name in params:
        if name not in known:
            accepted = f"the parameters are {', '.join(known)}" if known else "there are none"
            raise _bad_request(f"unknown parameter {name!r}: {accepted}")


def _read_list_params(params: dict[str, str]) -> DocsRequest:
    _no_other_params(params, ("prefix", "after", "limit"))
    prefix = params.get("prefix", "")
    after = params.get("after", "")
    for name, value in (("prefix", prefix), ("after", after)):
        if not store.is_valid_id(value, prefix=True):
            raise _bad_request(
                f"invalid {name} {value!r}: up to {store.MAX_ID_LENGTH} of {store.ID_CHARACTERS}"
            )
    text = params.get("limit", str(DEFAULT_LIMIT))
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
        raise _bad_request(f"invalid limit {text!r}: a whole number from 1 to {MAX_LIMIT}")
    return DocsRequest("list", prefix=prefix, after=after, limit=int(text))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_document_headers(request: Any, params: dict[str, str]) -> None:
    media_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        given = f"not {media_type}" if media_type else "with a Content-Type header"
        raise cherrypy.HTTPError(415, f"send the document as application/json, {given}")
    _no_other_params(params, ())
    length = request.body.length
    if length is not None and request.body.maxbytes and length > request.body.maxbytes:
        raise _too_large(request)
    # Only raw JSON is read from here on: no form or multipart parsing (whose
    # errors would be 500s), and none of the body goes into request.params.
    request.body.processors.clear()


def _too_large(request: Any) -> cherrypy.HTTPError:
    return cherrypy.HTTPError(413, f"the body is larger than {request.body.maxbytes} bytes")


def _read_document_body(request: Any, doc_id: str) -> DocsRequest:
    try:
        raw = request.body.read()
    except cherrypy.HTTPError as exc:
        if exc.code != 413:
            raise
        raise _too_large(request) from None
    length = request.body.length
    if length is not None and len(raw) < length:
        # The client closed (or half-closed) its socket early: what came is
        # not the document that was sent, however well formed.
        raise _bad_request(
            f"the body ended after {len(raw)} of the {length} bytes of its Content-Length"
        )
    try:
        content = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise _bad_request("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN
        raise _bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(content, dict):
        raise _bad_request(f"the body must be a JSON object, not {type(content).__name__}")
    if "_id" in content and content["_id"] != doc_id:
        raise _bad_request(f"_id {content['_id']!r} is not the id in the URL, {doc_id!r}")
    rev = content.get("_rev")
    if "_rev" in content and not (isinstance(rev, str) and store.is_valid_rev(rev)):
        # null included: as in CouchDB, a _rev that is given must be a revision.
        raise _bad_request(
            f"invalid _rev {json.dumps(rev)}: a revision is <n>-<32 hex digits>; "
            f"leave _rev out to create a document"
        )
    for field in content:
        if field.startswith("_") and field not in SPECIAL_FIELDS:
            raise _bad_request(
                f"unknown special field {field!r}: fields starting with _ are "
                f"{', '.join(SPECIAL_FIELDS)}"
            )
    for field in SPECIAL_FIELDS:
        content.pop(field, None)
    return DocsRequest("write", doc_id, rev=rev, body=store.encode(content))


# -- /docs: answering ------------------------------------------------------------------


class DocsAPI:
    """``/docs`` and ``/docs/<id>``: CouchDB-like documents.

    An exposed callable, so that any id reaches it (an id can never be taken
    for one of its methods). :func:`read_docs_request` and
    :func:`read_docs_body` have checked the request; here it meets the
    database, on ``cherrypy.request.conn``, in the transaction
    ``tools.poodle.transaction`` commits when the answer is below 400 and
    rolls back otherwise.

    ``prepare`` is called with each request's connection before its work
    (the app's creates the table if that could not be done at start).
    """

    exposed = True

    def __init__(self, prepare: Optional[Callable[[db.Connection], None]] = None) -> None:
        self._prepare = prepare

    def __call__(self, *vpath: str, **params: Any) -> bytes:
        request = cherrypy.serving.request
        job: DocsRequest = request.docs
        conn: db.Connection = request.conn
        try:
            if self._prepare is not None:
                self._prepare(conn)
            if job.action == "list":
                page = store.page(conn, job.prefix, job.after, job.limit)
                rows = [{"id": doc_id, "rev": rev} for doc_id, rev in page.rows]
                return _answer({"rows": rows, "next": page.next})
            if job.action == "read":
                doc = store.read(conn, job.doc_id)
                if doc is None:
                    raise _not_found("no document has this id")
                return _answer(doc.as_json())
            if job.action == "delete":
                store.delete(conn, job.doc_id, job.rev)
                return _answer({"id": job.doc_id, "rev": job.rev, "deleted": True})
            if job.rev is None:
                rev = store.create(conn, job.doc_id, job.body)
                return _answer({"id": job.doc_id, "rev": rev}, 201)
            rev = store.update(conn, job.doc_id, job.rev, job.body)
            return _answer({"id": job.doc_id, "rev": rev})
        except store.Conflict as exc:
            raise cherrypy.HTTPError(409, str(exc)) from None
        except store.NotFound as exc:
            raise _not_found(str(exc)) from None
        except Exception as exc:
            if db.is_busy(exc):
                raise _busy() from exc
            raise


# -- /status -------------------------------------------------------------------


class StatusAPI:
    """``/status``: the serving process's ``pid`` (one worker's, under gunicorn
    or uWSGI), every pool's :meth:`~poodle_cherrypy.Pool.stats` and the
    sampled history. Pool stats hold counts and names only: no DSN, no password.

    Each pool's stats add ``"wait_time_p99"``: the 99th percentile of the
    waits for a connection in the latest sampling interval, in seconds, or
    null when there was no checkout then (see :class:`PoolHistory`)."""

    exposed = True

    def __init__(self, history: PoolHistory) -> None:
        self._history = history

    def __call__(self, **params: Any) -> bytes:
        _no_other_params(_single_params(params), ())
        try:
            pools = PoodlePlugin.for_bus(self._history.bus).pools
        except LookupError:
            pools = {}
        stats = {
            name: {**pool.stats().as_dict(), "wait_time_p99": self._history.wait_time_p99(name)}
            for name, pool in list(pools.items())
        }
        return _answer(
            {"pid": os.getpid(), "pools": stats, "history": self._history.as_dict()}
        )


# -- /metrics ------------------------------------------------------------------


class MetricsAPI:
    """``/metrics``: every pool of the bus's PoodlePlugin for Prometheus, through
    :class:`poodle_cherrypy.prometheus.PoolCollector`, each sample labelled
    with this process's ``pid`` (several worker processes serving the app are
    scraped apart). Answers 501 when ``prometheus_client`` is not installed:
    ``pip install 'poodle_cherrypy[prometheus]'``."""

    exposed = True

    def __init__(self, bus: Any) -> None:
        self.bus = bus

    def __call__(self, **params: Any) -> bytes:
        _no_other_params(_single_params(params), ())
        try:
            from prometheus_client import CollectorRegistry

            from poodle_cherrypy.prometheus import MetricsPage, PoolCollector
        except ImportError:
            raise cherrypy.HTTPError(
                501,
                "/metrics needs prometheus_client: pip install 'poodle_cherrypy[prometheus]'",
            ) from None
        try:
            plugin: Any = PoodlePlugin.for_bus(self.bus)
        except LookupError:
            plugin = ()
        # A registry per scrape: the pools are the plugin's at this moment.
        registry = CollectorRegistry()
        registry.register(PoolCollector(plugin, labels={"pid": str(os.getpid())}))
        return MetricsPage(registry)()
