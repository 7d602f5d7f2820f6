"""Fork safety (issue 2, point j): a child process drops the parent's
connections without closing them, and opens its own.

The connections are real sockets (``socket.socketpair``); closing one sends a
goodbye message, as a database driver's ``close()`` does, so the parent sees
it if the child ever closed a connection it inherited.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import pytest

from poodle_cherrypy import Pool

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


class SockConn:
    """One end of a socket pair; the test keeps the other end (``peer``)."""

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()
        self.pid = os.getpid()
        self.closed = False

    def ping(self) -> bytes:
        self.sock.sendall(b"ping")
        return self.peer.recv(16)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.sendall(b"BYE")  # what a driver sends on close
            self.sock.shutdown(socket.SHUT_RDWR)  # affects every process sharing it
            self.sock.close()


def nothing_received(conn: SockConn) -> bool:
    conn.peer.setblocking(False)
    try:
        conn.peer.recv(16)  # a goodbye, or b"" after a shutdown
    except BlockingIOError:
        return True
    finally:
        conn.peer.setblocking(True)
    return False


def child_checks(pool: Pool[SockConn], idle: SockConn, lease: Any, held: SockConn) -> None:
    """Run in the child: every assertion here decides its exit code."""
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use, stats.created) == (0, 0, 0, 0), stats
    # The parent's lease ends in the child too (the code after fork runs on):
    # the inherited connection must be neither returned nor closed.
    lease.__exit__(ConnectionResetError, ConnectionResetError("x"), None)
    assert not held.closed and not idle.closed
    with pool.get(timeout=5) as conn:
        assert conn is not idle and conn is not held
        assert conn.pid == os.getpid()
        assert conn.ping() == b"ping"
        with pool.get(timeout=5) as nested:
            assert nested is conn
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.created) == (1, 1, 1), stats
    pool.close(timeout=5)
    assert conn.closed
    assert not held.closed and not idle.closed


def test_child_drops_inherited_connections_without_closing_them() -> None:
    pool: Pool[SockConn] = Pool(SockConn, max_size=3)
    lease = pool.get()
    held = lease.__enter__()
    opened: list[SockConn] = []

    def open_another() -> None:
        with pool.get() as conn:
            opened.append(conn)

    thread = threading.Thread(target=open_another)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    (idle,) = opened
    assert idle is not held and pool.stats().idle == 1
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            child_checks(pool, idle, lease, held)
            code = 0
        except BaseException:
            os.write(write_fd, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0, report
    # Nothing the child did reached the parent's connections...
    assert nothing_received(idle) and nothing_received(held)
    # ...which still work, in the parent's pool.
    assert held.ping() == b"ping"
    lease.__exit__(None, None, None)
    with pool.get() as conn:
        assert conn is held  # LIFO: the one just returned
        assert conn.ping() == b"ping"
    assert idle.ping() == b"ping"
    stats = pool.stats()
    assert (stats.size, stats.idle, stats.in_use, stats.created) == (2, 2, 0, 2)
    pool.close()
    assert idle.closed and held.closed


def test_fork_while_other_threads_use_the_pool() -> None:
    """Forking mid-checkout never hands the child a half-made pool state."""
    pool: Pool[SockConn] = Pool(SockConn, max_size=2)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            with pool.get(timeout=10):
                pass

    workers = [threading.Thread(target=churn, daemon=True) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(5):
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    stats = pool.stats()
                    assert (stats.size, stats.in_use, stats.waiting) == (0, 0, 0)
                    with pool.get(timeout=5) as conn:
                        assert conn.pid == os.getpid()
                    code = 0
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    pytest.fail("the child hung")
                time.sleep(0.01)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    assert not any(w.is_alive() for w in workers)
    stats = pool.stats()
    assert stats.in_use == 0 and stats.size == stats.idle <= 2
    pool.close()
