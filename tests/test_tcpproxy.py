"""The test proxy itself, in front of a small echo server: each state does what
the server tests rely on."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from tcpproxy import TCPProxy

Proxy = Callable[[int], TCPProxy]


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A loopback echo server (one thread per connection, all daemons)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            while not stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=echo, args=(conn,), daemon=True)
            threads.append(thread)
            thread.start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    yield listener.getsockname()[1]
    stop.set()
    for thread in [server, *threads]:
        thread.join(5)
        assert not thread.is_alive()
    listener.close()


def roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def ended(sock: socket.socket) -> bool:
    """Whether the peer closed: end of stream, or a reset (unread data was dropped)."""
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def test_forwards_both_ways(tcp_proxy: Proxy, echo_port: int) -> None:
    proxy = tcp_proxy(echo_port)
    assert proxy.port != echo_port
    assert roundtrip(proxy.port) == b"ping"
    assert proxy.accepted == 1


def test_refusing_refuses_and_cuts_links_then_forwards_on_the_same_port(
    tcp_proxy: Proxy, echo_port: int
) -> None:
    proxy = tcp_proxy(echo_port)
    port = proxy.port
    link = socket.create_connection(("127.0.0.1", port), timeout=5)
    link.sendall(b"a")
    assert link.recv(10) == b"a"
    proxy.refuse()
    assert ended(link)  # cut
    link.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    proxy.forward()
    assert proxy.port == port
    assert roundtrip(port) == b"ping"


def test_blackholing_accepts_and_never_answers(tcp_proxy: Proxy, echo_port: int) -> None:
    proxy = tcp_proxy(echo_port)
    proxy.blackhole()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"hello?")
        sock.settimeout(0.3)
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            sock.recv(10)
        assert time.monotonic() - started >= 0.25
        proxy.forward()  # the held connection is dropped, new ones are served
        sock.settimeout(5)
        assert ended(sock)
    assert roundtrip(proxy.port) == b"ping"


def test_close_stops_every_thread(tcp_proxy: Proxy, echo_port: int) -> None:
    proxy = tcp_proxy(echo_port)
    links = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(3)]
    for link in links:
        link.sendall(b"x")
        assert link.recv(1) == b"x"
    assert proxy.threads_alive() == 1 + 2 * len(links)
    proxy.close()
    proxy.close()  # idempotent
    assert proxy.threads_alive() == 0
    for link in links:
        assert ended(link)
        link.close()
