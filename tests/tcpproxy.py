"""A loopback TCP proxy that a test puts between a pool and a real server.

It lets a test take "the server" down and bring it back without touching the
real server, which other tests use at the same time::

    proxy = TCPProxy(5432)   # listens on 127.0.0.1:proxy.port, forwards to 5432
    proxy.refuse()           # down: connects are refused, open links are cut
    proxy.blackhole()        # hung: connects are accepted and never answered
    proxy.forward()          # back up
    proxy.close()

Cutting a link closes the proxy's own two sockets: the server sees an ordinary
client disconnect. Threads are daemons, every wait is bounded, and
:meth:`TCPProxy.close` stops them all.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from typing import Optional

__all__ = ["TCPProxy"]

#: How long a thread blocks before it looks at the proxy's state again.
_POLL = 0.05
#: How long to wait for a thread to finish; they finish in a poll or two.
_JOIN = 5.0
#: Where the proxy picks its port: below Linux's ephemeral range (32768-60999),
#: so that while it refuses, no outgoing connection is given its port, and a
#: connect to it can never connect to itself (TCP simultaneous open).
_PORTS = range(20000, 32768)


def _bind_listener(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port; port 0 picks a free one in _PORTS."""
    for attempt in range(100):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same port again after refuse(): its old links may be in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", port or random.choice(_PORTS)))
        except OSError:
            listener.close()
            if port or attempt == 99:
                raise
            continue
        listener.listen(64)
        listener.settimeout(_POLL)
        return listener
    raise AssertionError("unreachable")


class _Link:
    """One client connection forwarded to the server: two sockets, two pumps."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self._lock = threading.Lock()
        self._running = 2
        self.threads = [
            threading.Thread(target=self._pump, args=(client, server), daemon=True),
            threading.Thread(target=self._pump, args=(server, client), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)  # pass the end of stream on
        with self._lock:
            self._running -= 1
            last = not self._running
        if last:  # no thread uses the sockets any more
            self.client.close()
            self.server.close()

    def cut(self) -> None:
        """Drop both connections now; the pumps wake up and end."""
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(_JOIN)

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)


class TCPProxy:
    """A threaded proxy from ``127.0.0.1:port`` (a free port, kept across
    :meth:`refuse` and :meth:`forward`) to ``target_port``.

    States: forwarding (the start), refusing, blackholing. ``accepted``
    counts the connections it accepted, in any state. Blackholing affects new
    connections only; links already forwarded keep working.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self.state = "forwarding"
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._held: list[socket.socket] = []  # accepted while blackholing
        self._listener: Optional[socket.socket] = None
        self._acceptor: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._listen()

    # -- states ---------------------------------------------------------------

    def forward(self) -> None:
        """Forward new connections to the server (again)."""
        self._set_state("forwarding")
        self._drop_held()
        self._listen()

    def refuse(self) -> None:
        """Stop listening, so connects get ECONNREFUSED, and cut every link."""
        self._set_state("refusing")
        self._stop_listening()
        self._drop_held()
        self._cut_links()

    def blackhole(self) -> None:
        """Accept new connections but never answer: a connect hangs until the
        driver's own timeout."""
        self._set_state("blackholing")
        self._listen()

    def close(self) -> None:
        """Stop listening, drop every connection and stop every thread; idempotent."""
        self._set_state("closed")
        self._stop_listening()
        self._drop_held()
        self._cut_links()

    def threads_alive(self) -> int:
        """Threads of this proxy still running (0 after :meth:`close`)."""
        with self._lock:
            links = list(self._links)
            acceptor = self._acceptor
        count = sum(thread.is_alive() for link in links for thread in link.threads)
        return count + (acceptor is not None and acceptor.is_alive())

    # -- internals ----------------------------------------------------------

    def _set_state(self, state: str) -> None:
        with self._lock:
            self.state = state

    def _listen(self) -> None:
        if self._listener is not None:
            return
        listener = _bind_listener(self.port)
        self.port = listener.getsockname()[1]
        self._stop = threading.Event()
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept_loop, args=(listener, self._stop), daemon=True
        )
        self._acceptor.start()

    def _stop_listening(self) -> None:
        listener, acceptor = self._listener, self._acceptor
        if listener is None or acceptor is None:
            return
        self._stop.set()
        acceptor.join(_JOIN)  # the acceptor polls: it sees the flag within _POLL
        listener.close()  # only now: closing a socket another thread uses is unsafe
        self._listener = None

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.accepted += 1
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            state = self.state
            if state == "blackholing":
                self._held.append(client)
                return
        if state != "forwarding":
            client.close()
            return
        try:
            server = socket.create_connection(self.target, timeout=_JOIN)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            if self.state == "forwarding":  # not refused meanwhile
                self._links = [link for link in self._links if link.alive()]
                self._links.append(_Link(client, server))
                return
        client.close()
        server.close()

    def _drop_held(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            sock.close()  # never used by another thread

    def _cut_links(self) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.cut()
