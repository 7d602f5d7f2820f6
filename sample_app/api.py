"""The JSON API: ``/docs``, ``/docs/<id>`` and ``/status``.

========================  =====================================================
request                   answer
========================  =====================================================
``GET /docs/<id>``        200 the document, with ``_id`` and ``_rev``; 404
``PUT /docs/<id>``        201 created (no ``_rev`` in the body), 200 updated
                          (the current ``_rev`` in the body); 409 if the
                          ``_rev`` is missing or stale. ``{"id", "rev"}``
``DELETE /docs/<id>``     ``?rev=<current _rev>``: 200 ``{"id", "rev",
                          "deleted"}``; 409 if the rev is missing or stale;
                          404
``GET /docs``             ``?prefix=&limit=&after=``: ``{"rows": [{"id",
                          "rev"}...], "next": <after for the next page>|null}``
``GET /status``           the serving process's ``pid``, every pool's stats and
                          their sampled history
``GET /health``           200, or 503 while the database cannot be reached
                          (:class:`poodle_cherrypy.PoodleHealth`)
========================  =====================================================

Every error is JSON, ``{"error": "<name>", "reason": "<what to do>"}`` (see
:func:`json_error_page`). A request to ``/docs`` is read and checked in full by
:func:`read_docs_request` before ``tools.poodle`` checks a connection out, so
bad input costs no connection and writes nothing.
"""

from __future__ import annotations

import html
import http
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, cast

import cherrypy

from poodle_cherrypy import PoodlePlugin

from . import db, store
from .history import PoolHistory

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_BODY",
    "MAX_LIMIT",
    "DocsAPI",
    "StatusAPI",
    "expose",
    "json_error_page",
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


class Busy(cherrypy.HTTPError):  # type: ignore[misc]  # cherrypy is untyped
    """503 with ``Retry-After``: SQLite stayed locked by other writers past the
    busy timeout."""

    def __init__(self) -> None:
        super().__init__(503, "the database is busy with other writes; retry shortly")

    def set_response(self) -> None:
        """The 503 response, then its Retry-After (which HTTPError strips)."""
        super().set_response()
        cherrypy.serving.response.headers["Retry-After"] = "1"


def _bad_request(reason: str) -> cherrypy.HTTPError:
    return cherrypy.HTTPError(400, reason)


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
    """The content to store (write), as :func:`store.encode` made it."""
    prefix: str = ""
    after: str = ""
    limit: int = DEFAULT_LIMIT


def read_docs_request() -> None:
    """``before_handler`` hook of ``/docs``: read and check the whole request.

    Sets ``cherrypy.request.docs`` to a :class:`DocsRequest`, or raises the
    4xx that says what is wrong: 404 (a path under ``/docs/<id>/``), 405 with
    ``Allow``, 400 (an id, parameter, ``_id`` or ``_rev`` that is not
    acceptable, invalid JSON, a body that is not an object), 415 (a body
    that is not JSON), 413 (a body over ``request.body.maxbytes``).
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
        request.docs = _read_document_body(request, doc_id, params)


# Before tools.poodle checks a connection out (95): a request refused here
# holds no connection, not even while its body arrives.
read_docs_request.priority = 40  # type: ignore[attr-defined]


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


def _read_document_body(request: Any, doc_id: str, params: dict[str, str]) -> DocsRequest:
    media_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media_type not in ("", "application/json"):
        raise cherrypy.HTTPError(415, f"send the document as application/json, not {media_type}")
    _no_other_params(params, ())
    try:
        raw = request.body.read()
    except cherrypy.HTTPError as exc:
        if exc.code != 413:
            raise
        raise cherrypy.HTTPError(
            413, f"the body is larger than {request.body.maxbytes} bytes"
        ) from None
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
    if rev is not None and not (isinstance(rev, str) and store.is_valid_rev(rev)):
        raise _bad_request(f"invalid _rev {rev!r}: a revision is <n>-<32 hex digits>")
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
    for one of its methods). :func:`read_docs_request` has checked the
    request; here it meets the database, on ``cherrypy.request.conn``, in the
    transaction ``tools.poodle.transaction`` commits when the answer is below
    400 and rolls back otherwise.
    """

    exposed = True

    def __call__(self, *vpath: str, **params: Any) -> bytes:
        request = cherrypy.serving.request
        job: DocsRequest = request.docs
        conn: db.Connection = request.conn
        try:
            if job.action == "list":
                page = store.page(conn, job.prefix, job.after, job.limit)
                rows = [{"id": doc_id, "rev": rev} for doc_id, rev in page.rows]
                return _answer({"rows": rows, "next": page.next})
            if job.action == "read":
                doc = store.read(conn, job.doc_id)
                if doc is None:
                    raise cherrypy.NotFound("no document has this id")
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
            raise cherrypy.NotFound(str(exc)) from None
        except Exception as exc:
            if db.is_busy(exc):
                raise Busy() from exc
            raise


# -- /status -------------------------------------------------------------------


class StatusAPI:
    """``/status``: the serving process's ``pid`` (one worker's, under gunicorn
    or uWSGI), every pool's :meth:`~poodle_cherrypy.Pool.stats` and the
    sampled history. Pool stats hold counts and names only: no DSN, no password."""

    exposed = True

    def __init__(self, history: PoolHistory) -> None:
        self._history = history

    def __call__(self, **params: Any) -> bytes:
        _no_other_params(_single_params(params), ())
        try:
            pools = PoodlePlugin.for_bus(self._history.bus).pools
        except LookupError:
            pools = {}
        stats = {name: pool.stats().as_dict() for name, pool in list(pools.items())}
        return _answer(
            {"pid": os.getpid(), "pools": stats, "history": self._history.as_dict()}
        )
