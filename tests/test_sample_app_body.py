"""Request bodies that are not what their headers say, over a raw socket, to
``python -m sample_app`` in a subprocess (:class:`appserver.Server`).

A body shorter than its ``Content-Length`` (the client closed, or half-closed,
its socket early) must be refused with a 400 and write nothing; a declared
length over ``--max-body`` must get its 413 at once, before any of the body
is read.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from appserver import STARTUP_TIMEOUT, Server
from conftest import wait_until

pytestmark = pytest.mark.slow

MAX_BODY = 1024 * 1024
TIMEOUT = 60.0  # seconds for any answer: generous on a loaded 2-core machine


class Served:
    """The running server: its port and its access log."""

    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.port = port

    def access_log(self) -> str:
        assert self.server.access_log is not None
        return self.server.access_log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def served(tmp_path: Path, free_port: int) -> Iterator[Served]:
    server = Server(
        ["--port", str(free_port), "--max-body", str(MAX_BODY)],
        tmp_path,
        access_log=tmp_path / "access.log",
    )
    try:
        server.wait_for("Bus STARTED")
        yield Served(server, free_port)
        assert server.stop() == 0
    finally:
        server.kill()


def put_head(doc_id: str, length: int) -> bytes:
    return (
        f"PUT /docs/{doc_id} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\n"
        f"Content-Length: {length}\r\n"
        f"\r\n"
    ).encode("ascii")


def read_response(sock: socket.socket) -> tuple[int, Any]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return response.status, json.loads(body)


def get(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=STARTUP_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_body_cut_short_by_a_half_close_is_a_400_and_writes_nothing(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(put_head("short", 20) + b'{"a": 1}')  # 8 of the 20 bytes
        sock.shutdown(socket.SHUT_WR)
        status, body = read_response(sock)
    assert (status, body["error"]) == (400, "bad_request"), body
    assert "20" in body["reason"] and "8" in body["reason"]
    assert get(served.port, "/docs/short")[0] == 404


def test_a_body_cut_short_by_a_close_writes_nothing(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(put_head("closed", 20) + b'{"a": 1}')
    # No one is left to read the answer: the access log says what it was.
    wait_until(lambda: "PUT /docs/closed " in served.access_log(), TIMEOUT,
               "the access log line of the PUT")
    [line] = [line for line in served.access_log().splitlines() if "PUT /docs/closed " in line]
    assert '" 400 ' in line, line
    assert get(served.port, "/docs/closed")[0] == 404


def test_a_declared_length_over_max_body_is_a_413_before_the_body(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(put_head("big", 5_000_000))  # the headers only: no body is coming
        status, body = read_response(sock)
    assert (status, body["error"]) == (413, "too_large"), body
    assert str(MAX_BODY) in body["reason"]
    assert get(served.port, "/docs/big")[0] == 404
