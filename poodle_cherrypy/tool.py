"""The request tool: a pooled connection on ``cherrypy.request.conn``.

``import poodle_cherrypy`` registers it as ``cherrypy.tools.poodle``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, ClassVar, Optional, Union

import cherrypy
from cherrypy.lib import file_generator, httputil

from .config import resolve_callable
from .drivers import WRITES_ATTRIBUTE
from .errors import PoolError
from .options import check_seconds
from .plugin import PoodlePlugin, find_plugin, get_pool
from .pool import Lease, Pool

__all__ = ["SAFE_METHODS", "PoodleTool", "ServiceUnavailable"]

#: After trailing_slash (60) redirects and caching (90) answers from its
#: cache, so neither checks a connection out for nothing.
DEFAULT_PRIORITY = 95

#: The methods whose requests read only (RFC 9110's safe methods): with
#: ``tools.poodle.read_pool`` they get that pool's connection.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class ServiceUnavailable(cherrypy.HTTPError):  # type: ignore[misc]  # cherrypy is untyped
    """503 with a ``Retry-After`` header (which ``HTTPError`` itself strips).

    The tool raises it when no connection can be had; a handler may raise it
    too, with its own ``message`` (a database busy with other writes, say).
    """

    def __init__(
        self,
        retry_after: int,
        message: str = "No database connection is available; please retry shortly.",
    ) -> None:
        super().__init__(503, message)
        self.retry_after = retry_after

    def set_response(self) -> None:
        """Set the 503 response, then the Retry-After header."""
        super().set_response()
        cherrypy.serving.response.headers["Retry-After"] = str(self.retry_after)


#: Bodies that are complete when the handler returns them (no code runs later).
_READY_BODIES = frozenset({bytes, str, list, tuple, type(None)})


def _is_lazy(body: object) -> bool:
    """Whether ``body`` is an iterator whose code (a generator's) has yet to run.

    A file, or CherryPy's reader of one, is not: CherryPy sends it in chunks
    and closes it, and the tool must leave it so.
    """
    return (
        type(body) not in _READY_BODIES
        and isinstance(body, Iterator)
        and not hasattr(body, "read")
        and not isinstance(body, file_generator)
    )


class _Checkout(Lease[Any]):
    """One request's checkout: the lease itself, and the page handler wrapped
    to watch it.

    It stands in ``request.handler`` (noting what the handler, or a lazy body
    it returned, raised); the tool's hooks find it in the request's
    ``__dict__``: all the state lives here. Being the lease (not holding
    one) saves an object per request.
    """

    # No __slots__: the state a request may never need (a lazy body, a
    # Session, a deadline) keeps these class defaults, so a checkout sets
    # only its own eight attributes (the per-request cost of the tool).
    error: Optional[BaseException] = None
    lost = False  # the pool judged the connection lost
    body: Optional[Generator[Any, None, None]] = None  # the watched lazy body, if any
    decided = False  # committed or rolled back already
    cut_short = False  # the lazy body was closed before its end (the client left)
    ran = False  # the lazy body has run to its end (or failed)
    # The SQLAlchemy Session on this connection (a pool declared for
    # SQLAlchemy), its Connection and the request attribute it is on.
    session: Any = None
    sa_conn: Any = None
    session_attribute = ""
    # The request's deadline (tools.poodle.deadline): its budget in seconds
    # and when it runs out (time.time()), and the deadline hook's undo,
    # called before the connection goes back.
    deadline: Optional[float] = None
    expires: Optional[float] = None
    undo: Optional[Callable[[], Any]] = None

    conn: Any = None  # once entered
    # A connection that counts the statements that may write (see
    # drivers.psycopg_connect): the count at checkout, else None.
    writes: Optional[int] = None

    def __init__(
        self,
        pool: Pool[Any],
        timeout: Optional[float],
        attribute: str,
        transaction: bool,
        handler: Any,
        retry_after: int,
    ) -> None:
        # Lease's own three slots, set here rather than by a call of its
        # __init__ (a frame per request).
        self._pool = pool
        self._timeout = timeout
        self._state = None
        self.retry_after = retry_after
        self.attribute = attribute
        self.transaction = transaction
        self.handler = handler

    def __call__(self) -> Any:
        # No arguments, as CherryPy's PageHandler takes none (and a call with
        # *args and **kwargs would cost a dict per request).
        try:
            body = self.handler()
        except BaseException as exc:
            self.error = exc
            if isinstance(exc, Exception) and not isinstance(exc, cherrypy.HTTPRedirect):
                self.lost = self._pool.is_broken(self.conn, exc)
                if (
                    self.expires is not None
                    and not isinstance(exc, cherrypy.HTTPError)
                    and time.time() >= self.expires
                ):
                    # Raised once the budget was spent: the deadline hook's
                    # statement timeout (or the driver's own) ended it.
                    cherrypy.log(
                        f"pool {self._pool.name!r}: the request ran past its deadline of "
                        f"{self.deadline:g} s ({exc!r}); answering 504", "POODLE",
                        severity=logging.WARNING,
                    )
                    raise cherrypy.HTTPError(
                        504, f"The database did not answer within the request's deadline "
                        f"({self.deadline:g} s).",
                    ) from None
                if (
                    self.lost
                    and self.writes is not None
                    and getattr(self.conn, WRITES_ATTRIBUTE, None) == self.writes
                    # The connection itself is lost, not only judged so for
                    # the error (the default rule's any OSError, say).
                    and self._pool.is_broken(self.conn, None)
                ):
                    # Nothing this request sent could have changed anything:
                    # retrying is safe, which 503 with Retry-After says.
                    cherrypy.log(
                        f"pool {self._pool.name!r}: the connection was lost before the "
                        f"request wrote anything ({exc!r}); answering 503",
                        "POODLE", severity=logging.WARNING,
                    )
                    raise ServiceUnavailable(self.retry_after) from None
            raise
        if type(body) not in _READY_BODIES and _is_lazy(body):
            # A generator's code runs later (when the body is collapsed or
            # streamed), still on this request's connection.
            body = self.body = self._watched(body)
        return body

    # PageHandler's callable, args and kwargs, for the hooks and tools that
    # inspect request.handler after dispatch. Properties, not __getattr__:
    # a class with __getattr__ makes every attribute read of its instances
    # take the slow path, on each request.
    @property
    def callable(self) -> Any:
        """The page handler's own callable."""
        return self.handler.callable

    @property
    def args(self) -> Any:
        """The page handler's positional arguments."""
        return self.handler.args

    @args.setter
    def args(self, args: Any) -> None:
        self.handler.args = args

    @property
    def kwargs(self) -> Any:
        """The page handler's keyword arguments."""
        return self.handler.kwargs

    @kwargs.setter
    def kwargs(self, kwargs: Any) -> None:
        self.handler.kwargs = kwargs

    def _watched(self, body: Iterator[Any]) -> Generator[Any, None, None]:
        try:
            yield from body  # close() reaches the handler's generator too
            self.ran = True
        except GeneratorExit:
            # Closed part-way: the client went away. Nothing wrong with the
            # connection, but the work is unfinished: no commit.
            self.cut_short = True
            raise
        except BaseException as exc:
            self.ran = True
            self.error = exc
            raise

    def end_transaction_early(self) -> None:
        """before_finalize: commit or roll back before the response is sent."""
        response = cherrypy.serving.response
        if response.stream:
            return  # the body still runs on the connection: decide at the end
        if self.body is not None and not self.ran:
            # A lazy body (a generator the handler returned, perhaps under
            # gzip's) runs now, inside the transaction. Any other body (a
            # file, a list) goes out as CherryPy sends it.
            response.collapse_body()
        self.end_transaction()

    def end_transaction(self) -> None:
        """Commit if the status is below 400, nothing but a redirect was raised and
        the body was not cut short; else roll back."""
        self.decided = True
        if self.lost:
            return  # nothing to commit or roll back: the server ended the transaction
        try:
            code = httputil.valid_status(cherrypy.serving.response.status)[0]
        except ValueError:
            code = 500
        error = self.error
        ok = (
            code < 400
            and not self.cut_short
            and (error is None or isinstance(error, cherrypy.HTTPRedirect))
        )
        try:
            # The Session first: its commit flushes the ORM's pending changes.
            if ok:
                if self.session is not None:
                    self.session.commit()
                self.conn.commit()
            else:
                if self.session is not None:
                    self.session.rollback()
                self.conn.rollback()
        except BaseException as exc:
            self.error = exc  # the pool judges whether the connection survived it
            raise

    def _undo_deadline(self) -> None:
        """Call the deadline hook's undo (the statement timeout set back)."""
        try:
            self.undo()  # type: ignore[misc]  # not None: the caller looked
        except Exception as exc:
            self.error = self.error or exc  # the pool judges the connection by it
            cherrypy.log("undoing the request's deadline failed", "POODLE",
                         severity=logging.ERROR, traceback=True)

    def _close_session(self) -> None:
        """Close the Session (rolling back what was not committed) and its
        Connection, before the connection goes back."""
        try:
            self.session.close()
        except Exception as exc:
            self.error = self.error or exc
            cherrypy.log("closing the SQLAlchemy Session failed", "POODLE",
                         severity=logging.ERROR, traceback=True)
        finally:
            try:
                self.sa_conn.close()  # an invalidated one dooms the lease
            except Exception as exc:
                self.error = self.error or exc
                cherrypy.log("closing the SQLAlchemy Connection failed", "POODLE",
                             severity=logging.ERROR, traceback=True)


class _Hook(functools.partial[Any]):
    """A hook that every request of one tool shares. CherryPy's ``Hook`` is
    the callback, its priority and its keyword arguments, none of them the
    request's: this one is attached with a list append, no Hook made nor
    keywords copied per request, and being a ``functools.partial`` it calls
    ``callback(*args)`` with no Python frame of its own."""

    __slots__ = ("failsafe", "priority")
    failsafe: bool
    priority: float
    kwargs: ClassVar[dict[str, Any]] = {}  # as Hook's, for code that reads them

    def __new__(cls, callback: Callable[..., Any], priority: float, *args: Any,
                failsafe: bool = False) -> _Hook:
        self = super().__new__(cls, callback, *args)
        self.priority = priority
        self.failsafe = failsafe
        return self

    @property
    def callback(self) -> Callable[..., Any]:
        """The function the hook calls (as Hook's ``callback``)."""
        return self.func

    def __lt__(self, other: Any) -> bool:
        return self.priority < other.priority  # type: ignore[no-any-return]  # as Hook sorts

    def __repr__(self) -> str:
        return (f"{__name__}._Hook(callback={self.func!r}, args={self.args!r}, "
                f"failsafe={self.failsafe!r}, priority={self.priority!r})")


def _give_back(key: str) -> None:
    """on_end_request (failsafe, 80), a shared hook: the request's checkout,
    kept in its ``__dict__`` under ``key``, gives its connection back.

    The lazy body ended, the transaction ended, the request's attributes and
    the Session gone, the deadline undone, then the lease exited: here rather
    than in a method of the checkout's (a frame a request).
    """
    attributes = cherrypy.serving.request.__dict__
    checkout: Optional[_Checkout] = attributes.pop(key, None)
    if checkout is None:
        return
    try:
        if checkout.body is not None:
            try:
                checkout.body.close()  # its finally blocks run while we still hold the conn
            except Exception as exc:
                checkout.error = exc
                cherrypy.log("closing the response body failed", "POODLE",
                             severity=logging.ERROR, traceback=True)
        if checkout.transaction and not checkout.decided:
            try:
                checkout.end_transaction()
            except Exception:
                # The response is out already: all that is left is to log it.
                cherrypy.log("ending the transaction failed", "POODLE",
                             severity=logging.ERROR, traceback=True)
    finally:
        attributes.pop(checkout.attribute, None)
        try:
            if checkout.session is not None:
                attributes.pop(checkout.session_attribute, None)
                checkout._close_session()
            if checkout.undo is not None and not checkout.lost:
                checkout._undo_deadline()
        finally:
            error = checkout.error
            if error is None:
                checkout.__exit__(None, None, None)
            else:
                checkout.__exit__(type(error), error, error.__traceback__)


class PoodleTool(cherrypy.Tool):  # type: ignore[misc]  # cherrypy is untyped
    """``tools.poodle``: check a pooled connection out for each request.

    With ``tools.poodle.on = True``, on ``before_handler`` the tool enters
    ``pool.get()`` and sets ``cherrypy.request.conn``; on ``on_end_request``
    (failsafe: it runs whatever else failed) it gives the connection back,
    passing the request's exception, if there was one, to the pool (which
    discards a broken connection). A streamed body keeps the connection until
    it is fully sent or the client goes away; a lazy body (a generator) is
    closed before the connection goes back. A file (``serve_file``, a file the
    handler returns) or a ready body (bytes, a list) is left to CherryPy: it
    goes out in CherryPy's chunks, and a file is closed as CherryPy closes it.

    Config keys:

    - ``tools.poodle.on``: switch it on.
    - ``tools.poodle.pool`` (``"default"``): the name of the pool, declared on
      the engine's :class:`~poodle_cherrypy.PoodlePlugin`.
    - ``tools.poodle.timeout`` (the pool's): how long to wait for a connection.
    - ``tools.poodle.transaction`` (False): for DB-API connections, commit
      when the response status is below 400 and the handler raised nothing
      but a redirect, roll back otherwise. The commit happens before the
      response is sent (so a client that got 2xx can read its own write; a
      generator body runs first, inside the transaction), or after a
      streamed body, which rolls back if the client goes away before
      its end; a failing commit turns the response into a 500.
    - ``tools.poodle.retry_after`` (5): the ``Retry-After`` seconds of the 503
      sent when no connection can be had (pool exhausted, closed, or the
      factory failing), or when the connection is lost before the request
      wrote anything; the cause is logged, never sent.
    - ``tools.poodle.priority`` (95): of the ``before_handler`` hook; the
      default comes after ``trailing_slash`` redirects (60) and cache hits
      (90), which then check nothing out.
    - ``tools.poodle.read_pool`` (None): the name of a pool for the requests
      that only read (GET, HEAD, OPTIONS, TRACE: :data:`SAFE_METHODS`), a
      pool of standby connections, say; other methods get ``pool``'s.
    - ``tools.poodle.read_fallback`` (True): when ``read_pool`` cannot lend
      (its server down, the pool exhausted or closed), the read gets a
      connection of ``pool`` instead; False answers 503 with ``Retry-After``.
    - ``tools.poodle.deadline`` (None): the request's time budget in seconds
      from its start (``cherrypy.response.time``), or True for the
      ``response.timeout`` config key's. The wait for a connection ends with
      the budget (a 503), and a request whose handler raises once it is
      spent answers 504 with a message that says so.
    - ``tools.poodle.deadline_hook`` (None): ``hook(conn, seconds_left)``,
      called on the connection right after checkout to make the database
      end what runs past the deadline; it may return a callable, called
      before the connection goes back, to undo it.
      :func:`~poodle_cherrypy.drivers.psycopg_set_deadline` (PostgreSQL's
      ``statement_timeout``) and
      :func:`~poodle_cherrypy.drivers.pymysql_set_deadline` (MariaDB's
      ``max_statement_time``); a callable or a ``"module:callable"`` string.

    A connection lost during the request (the handler raised an error the
    pool's ``broken`` rule judges fatal, and the rule judges the connection
    lost by itself too, as a ``closed`` one) answers 503 with ``Retry-After``
    when the connection counts its writes (a ``poodle_writes`` attribute, as
    :func:`~poodle_cherrypy.drivers.psycopg_connect` makes) and the count did
    not move since checkout: nothing was changed, a retry is safe. Otherwise
    (a write was sent, the commit failed, or the connection does not count)
    the outcome is unknown and the answer is 500.

    Helper code that calls ``pool.get()`` during the request gets the same
    connection (the pool is reentrant per thread). A second tool,
    ``cherrypy.tools.cache = PoodleTool(attribute="cache")``, puts another
    pool's connection on ``cherrypy.request.cache`` in the same request.

    For a pool declared for SQLAlchemy (``poodle.<name>.sqlalchemy_url``, or
    an Engine of :func:`poodle_cherrypy.sqlalchemy.create_engine` given to
    the plugin), ``cherrypy.request.db`` (``session_attribute``; for another
    ``attribute``, ``<attribute>_db``) is a ``sqlalchemy.orm.Session`` on the
    request's connection: with ``transaction``, committed (flushing the ORM's
    changes) or rolled back with the DB-API connection, by the same rule;
    closed, whatever happened, before the connection goes back.
    All per-request state lives on ``cherrypy.request`` and its hooks.
    """

    #: The config keys it takes (checked against app config at engine start).
    poodle_options = frozenset({
        "on", "pool", "timeout", "transaction", "retry_after", "priority", "read_pool",
        "read_fallback", "deadline", "deadline_hook",
    })

    def __init__(
        self,
        attribute: str = "conn",
        priority: float = DEFAULT_PRIORITY,
        session_attribute: Optional[str] = None,
    ) -> None:
        if not isinstance(attribute, str) or not attribute.isidentifier():
            raise ValueError(f"attribute must be a Python identifier, got {attribute!r}")
        if session_attribute is None:
            session_attribute = "db" if attribute == "conn" else f"{attribute}_db"
        if (
            not isinstance(session_attribute, str)
            or not session_attribute.isidentifier()
            or session_attribute == attribute
        ):
            raise ValueError(
                f"session_attribute must be a Python identifier other than attribute "
                f"{attribute!r}, got {session_attribute!r}"
            )
        self._attribute = attribute
        self._session_attribute = session_attribute
        self._hooks: dict[str, Callable[..., Any]] = {}  # deadline_hook strings resolved
        # Where a request's checkout is kept (in its __dict__) for the hooks:
        # this tool's own, so two tools on one request each give theirs back.
        self._key = f"_poodle_checkout_{id(self)}"
        super().__init__("before_handler", self._checkout, priority=priority)
        self.__doc__ = type(self).__doc__
        # Hooks every request shares (a Hook is the callback, its priority and
        # its keyword arguments, none of them the request's): attaching one is
        # a list append, not a Hook made and its keywords copied per request.
        self._checkout_hook = _Hook(self._checkout, self._priority)
        self._finalize_hook = _Hook(self._end_transaction_early, 95)
        self._end_hook = _Hook(_give_back, 80, self._key, failsafe=True)

    @staticmethod
    def option_problem(option: str, value: object) -> Optional[str]:
        """What is wrong with ``value`` for config key ``tools.<name>.<option>``, or None.

        The plugin asks this of every such key in the mounted apps' config at
        engine start, so that a bad value stops the start instead of failing
        every request.
        """
        if option not in PoodleTool.poodle_options:
            return f"unknown option; the options are {', '.join(sorted(PoodleTool.poodle_options))}"
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if option in ("on", "transaction", "read_fallback") and not isinstance(value, bool):
            return f"must be True or False, got {value!r}"
        if option == "pool" and not isinstance(value, str):
            return f"must be a pool's name, got {value!r}"
        if option == "read_pool" and value is not None and not isinstance(value, str):
            return f"must be a pool's name or None, got {value!r}"
        if option == "deadline" and not (
            value is None or value is True or (number is not None and number > 0)
        ):
            return (
                f"must be a number of seconds > 0, True (response.timeout's) or None, "
                f"got {value!r}"
            )
        if option == "deadline_hook" and value is not None:
            try:
                resolve_callable(value, "deadline_hook")
            except (TypeError, ValueError) as exc:
                return str(exc).removeprefix("deadline_hook: ")
        if option == "timeout" and value is not None and not (number is not None and number >= 0):
            return f"must be a number of seconds >= 0 or None, got {value!r}"
        if option == "retry_after" and not (isinstance(number, int) and number >= 0):
            return f"must be a whole number of seconds >= 0, got {value!r}"
        if option == "priority" and number is None:
            return f"must be a number, got {value!r}"
        return None

    def _setargs(self) -> None:
        # Tool gives itself an attribute per argument of its callable (for
        # help()); "on" is Tool's read-only property, and not an argument to copy.
        for name in self.poodle_options - {"on", "priority"}:
            setattr(self, name, None)

    def _setup(self) -> None:
        # Right after dispatch, before other tools wrap the handler: a 404 or
        # 405 (no handler found) needs no connection.
        request = cherrypy.serving.request
        if isinstance(request.handler, cherrypy.HTTPError):
            return
        # Hook only the checkout; the other hooks are attached by a checkout,
        # so a request that never checked one out has nothing to give back.
        conf = request.toolmaps[self.namespace][self._name]  # "on" is among them
        if len(conf) == 1:
            # Only "on": every option at its default, the shared hook.
            request.hooks[self._point].append(self._checkout_hook)
            return
        if "priority" in conf:
            conf = dict(conf)
            priority = conf.pop("priority")
        else:
            priority = self._priority
        request.hooks.attach(self._point, self._checkout, priority=priority, **conf)

    def _checkout(
        self,
        on: bool = True,
        pool: str = "default",
        timeout: Optional[float] = None,
        transaction: bool = False,
        retry_after: int = 5,
        read_pool: Optional[str] = None,
        read_fallback: bool = True,
        deadline: Union[bool, float, None] = None,
        deadline_hook: Any = None,
    ) -> None:
        request = cherrypy.serving.request
        handler = request.handler
        if handler is None:
            return  # answered already (a cache hit, say): no connection needed
        plugin = find_plugin(cherrypy.engine)
        if deadline is None and read_pool is None:
            # The common case, inlined: one pool, its own timeout.
            target = plugin.pools.get(pool) if plugin is not None else None
            if target is None:
                raise self._no_pool(pool, "pool")
            if timeout is not None:
                timeout = check_seconds("timeout", timeout)
            checkout = _Checkout(
                target, timeout, self._attribute, bool(transaction), handler, retry_after
            )
            try:
                conn = checkout.__enter__()
            except Exception as exc:
                raise self._refused(pool, exc, retry_after) from None
            name = pool
            expires = budget = None
        else:
            expires = budget = None
            if deadline is not None and deadline is not False:
                budget = self._budget(deadline)
                expires = cherrypy.serving.response.time + budget
            name = pool
            if read_pool is not None and request.method in SAFE_METHODS:
                name = read_pool
            fallback = pool if name != pool and read_fallback else None
            name, checkout, conn = self._lend(
                plugin, name, "pool" if name == pool else "read_pool", fallback, timeout,
                expires, budget, retry_after, bool(transaction), handler,
            )
        checkout.conn = conn
        writes = getattr(conn, WRITES_ATTRIBUTE, None)
        if type(writes) is int:
            checkout.writes = writes
        if expires is not None:
            checkout.deadline, checkout.expires = budget, expires
            if deadline_hook is not None:
                self._start_deadline(checkout, deadline_hook)
        binding = plugin.bindings.get(name)  # type: ignore[union-attr]  # found the pool
        if binding is not None:
            try:
                checkout.session, checkout.sa_conn = binding.open()
            except BaseException as exc:
                checkout.__exit__(type(exc), exc, exc.__traceback__)
                cherrypy.log(f"pool {name!r}: starting the SQLAlchemy Session failed", "POODLE",
                             severity=logging.ERROR, traceback=True)
                raise cherrypy.HTTPError(500) from None
            checkout.session_attribute = self._session_attribute
            setattr(request, self._session_attribute, checkout.session)
        attributes = request.__dict__
        attributes[self._attribute] = conn
        attributes[self._key] = checkout
        request.handler = checkout
        hooks = request.hooks
        if transaction:
            # Late (95), after encode and gzip, so the body it collapses is final.
            hooks["before_finalize"].append(self._finalize_hook)
        hooks["on_end_request"].append(self._end_hook)  # failsafe, 80

    def _end_transaction_early(self) -> None:
        """before_finalize: the request's checkout commits or rolls back."""
        checkout: Optional[_Checkout] = cherrypy.serving.request.__dict__.get(self._key)
        if checkout is not None:
            checkout.end_transaction_early()

    def _budget(self, deadline: Union[bool, float]) -> float:
        """The request's budget in seconds: ``deadline``, or ``response.timeout``'s."""
        if deadline is not True:
            return float(deadline)
        seconds = getattr(cherrypy.serving.response, "timeout", None)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            cherrypy.log(
                f"tools.{self._name}.deadline = True takes the response.timeout config "
                f"key's seconds, and it is {seconds!r}; set response.timeout = <seconds>",
                "POODLE", severity=logging.ERROR,
            )
            raise cherrypy.HTTPError(500)
        return float(seconds)

    def _lend(
        self,
        plugin: Optional[PoodlePlugin],
        name: str,
        key: str,
        fallback: Optional[str],
        timeout: Optional[float],
        expires: Optional[float],
        budget: Optional[float],
        retry_after: int,
        transaction: bool,
        handler: Any,
    ) -> tuple[str, _Checkout, Any]:
        """Check a connection out of pool ``name`` (else of ``fallback``): the
        name of the pool that lent it, the checkout entered and the
        connection; else 503 (500 for no such pool)."""
        target = plugin.pools.get(name) if plugin is not None else None
        if target is None:
            raise self._no_pool(name, key)
        wait = timeout
        if expires is not None:
            left = expires - time.time()
            if left <= 0:
                cherrypy.log(
                    f"pool {name!r}: the request's deadline of {budget:g} s passed before "
                    f"it got a connection; answered 503", "POODLE", severity=logging.INFO,
                )
                raise ServiceUnavailable(retry_after)
            # The pool's own timeout (the lease's default) or the one given,
            # whichever ends first.
            wait = min(target._timeout if timeout is None else timeout, left)
        if wait is not None:
            wait = check_seconds("timeout", wait)
        checkout = _Checkout(target, wait, self._attribute, transaction, handler, retry_after)
        try:
            return name, checkout, checkout.__enter__()
        except Exception as exc:
            if fallback is not None:
                cherrypy.log(f"pool {name!r}: {exc!r}; reading from pool {fallback!r} instead",
                             "POODLE", severity=logging.INFO)
                return self._lend(
                    plugin, fallback, "pool", None, timeout, expires, budget, retry_after,
                    transaction, handler,
                )
            raise self._refused(name, exc, retry_after) from None

    def _no_pool(self, name: str, key: str) -> cherrypy.HTTPError:
        """The 500 for ``tools.<name>.<key>`` naming no pool, the reason logged."""
        try:
            get_pool(name)  # raises, saying what there is instead
        except LookupError as exc:
            cherrypy.log(f"tools.{self._name}.{key} = {name!r}: {exc}", "POODLE",
                         severity=logging.ERROR)
        return cherrypy.HTTPError(500)

    @staticmethod
    def _refused(name: str, exc: Exception, retry_after: int) -> ServiceUnavailable:
        """The 503 for pool ``name`` failing to lend (``exc``), the cause logged."""
        if isinstance(exc, PoolError):
            # One line per request; the pool logs the outage itself, once.
            cherrypy.log(f"{exc}; answered 503", "POODLE", severity=logging.INFO)
        else:
            # The pool logged this failure's traceback, once per outage.
            cherrypy.log(
                f"pool {name!r}: opening a connection failed ({exc!r}); answered 503",
                "POODLE", severity=logging.INFO,
            )
        return ServiceUnavailable(retry_after)

    def _start_deadline(self, checkout: _Checkout, deadline_hook: Any) -> None:
        """Call the deadline hook on the checkout's connection with the seconds left."""
        hook = deadline_hook
        left = checkout.expires - time.time()  # type: ignore[operator]  # set
        try:
            if isinstance(hook, str):
                # Inside the try: a bad name in a handler's _cp_config (which
                # the start check cannot see) must still give the lease back.
                resolved = self._hooks.get(hook)
                if resolved is None:
                    resolved = self._hooks[hook] = resolve_callable(
                        hook, f"tools.{self._name}.deadline_hook"
                    )
                hook = resolved
            if left <= 0:
                raise ServiceUnavailable(checkout.retry_after)
            checkout.undo = hook(checkout.conn, left)
        except BaseException as exc:
            checkout.__exit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, cherrypy.HTTPError):
                raise
            if isinstance(exc, Exception) and checkout._pool.is_broken(checkout.conn, exc):
                cherrypy.log(
                    f"pool {checkout._pool.name!r}: the connection failed as the deadline "
                    f"was set ({exc!r}); answered 503", "POODLE", severity=logging.INFO,
                )
                raise ServiceUnavailable(checkout.retry_after) from None
            cherrypy.log(f"tools.{self._name}.deadline_hook {hook!r} failed", "POODLE",
                         severity=logging.ERROR, traceback=True)
            raise cherrypy.HTTPError(500) from None
